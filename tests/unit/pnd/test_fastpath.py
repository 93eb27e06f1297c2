"""The C-STORE fast path: which commands it takes, what it answers, what it refuses.

Its command reader is held to pynetdicom's encoder; on the wire, a plain C-STORE is
served by FastStoreDIMSE._finish (counted), a command it does not take goes
pynetdicom's way and is still served, and a dataset interrupted by a command or by
another context aborts the association and leaves nothing behind.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from dcmrecvd.pnd import fastpath
from dcmrecvd.receiver import Receiver
from dcmrecvd.store import objectstore
from tests.support import asconfigs, rawpdu
from tests.support.asconfigs import VERIFY_CT_CFG
from tests.support.net import free_port
from tests.support.peers import our_receiver
from tests.support.streaming_peer import final_files, settings, temp_files, wait_until

CT = rawpdu.CT


def pynetdicoms(**values: Any) -> bytes:
    """The command set pynetdicom encodes for a C-STORE-RQ primitive with `values`."""
    primitive = C_STORE()
    primitive.MessageID = values.get("message_id", 7)
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = values.get("instance", "1.2.3.4")
    primitive.Priority = values.get("priority", 2)
    primitive.DataSet = BytesIO(b"\x08\x00")  # a dataset follows
    if "originator" in values:
        primitive.MoveOriginatorApplicationEntityTitle = values["originator"]
        primitive.MoveOriginatorMessageID = 3
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


def test_reads_what_pynetdicom_writes() -> None:
    assert fastpath.decode_store_request(pynetdicoms()) == fastpath.StoreRequest(7, CT, "1.2.3.4")
    odd = fastpath.decode_store_request(pynetdicoms(instance="1.2.3", message_id=65535))
    assert odd == fastpath.StoreRequest(65535, CT, "1.2.3")  # a NUL-padded UID
    moved = fastpath.decode_store_request(pynetdicoms(originator="MOVER"))
    assert moved == fastpath.StoreRequest(7, CT, "1.2.3.4")


def element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0, tag, len(value)) + value


def plain(**replace: bytes | None) -> bytes:
    """A C-STORE-RQ command set, elements replaced (or left out when None)."""
    values = {
        0x0002: CT.encode() + b"\0",
        0x0100: b"\x01\x00",
        0x0110: b"\x01\x00",
        0x0700: b"\x00\x00",
        0x0800: b"\x00\x00",
        0x1000: b"1.2.3.4",
    }
    for key, value in replace.items():
        values[int(key[1:], 16)] = value  # type: ignore[assignment]
    return b"".join(element(tag, value) for tag, value in values.items() if value is not None)


def test_plain_is_a_store_request() -> None:
    assert fastpath.decode_store_request(plain()) == fastpath.StoreRequest(1, CT, "1.2.3.4")


@pytest.mark.parametrize(
    "command",
    [
        plain(e0100=b"\x30\x00"),  # C-ECHO-RQ
        plain(e0800=b"\x01\x01"),  # no dataset
        plain(e0700=b"\x03\x00"),  # no such priority
        plain(e1000=b"1.02.3"),  # a leading zero
        plain(e1000=b"1.2.3 "),  # blank-padded
        plain(e1000=b""),
        plain(e1000=None),
        plain(e0110=None),
        plain(e0002=b"1.2\\3"),
        plain(e1000=b"1." + b"2" * 70),  # over 64 characters
        plain(e0110=b"\x01"),  # a US of one byte
        plain(e1030=b"                "),  # an all-blank Move Originator AE title
        plain(e1030=b"A\\B"),
        plain(e0900=b"\x00\x00"),  # an element a request does not have
        element(0x1000, b"1.2.3.4") + plain(e1000=None),  # out of order
        plain()[:-3],  # cut short
        struct.pack("<HHL", 8, 0x16, 2) + b"12" + plain(),  # not group 0000
    ],
)
def test_leaves_other_commands_to_pynetdicom(command: bytes) -> None:
    assert fastpath.decode_store_request(command) is None


@pytest.fixture
def served(tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A receiver on a free port; yields the SOP instance UIDs the fast path served."""
    finished: list[str] = []
    real = fastpath.FastStoreDIMSE._finish

    def counting(self: fastpath.FastStoreDIMSE) -> None:
        assert self._request is not None
        finished.append(self._request.sop_instance_uid)
        real(self)

    monkeypatch.setattr(fastpath.FastStoreDIMSE, "_finish", counting)
    port = free_port()
    with our_receiver(
        asconfigs.load(tmp_path, VERIFY_CT_CFG), port, settings(port, out)
    ) as receiver:
        finished.insert(0, str(port))
        yield finished
        wait_until(lambda: not receiver.ae.active_associations, what="associations ended")


def test_a_plain_store_takes_the_fast_path_and_an_unusual_one_does_not(
    served: list[str], out: Path
) -> None:
    port = int(served.pop(0))
    peer = rawpdu.Peer(port)
    assert peer.associate()
    assert peer.store(1, "1.2.3.4", rawpdu.explicit_dataset("1.2.3.4")) == objectstore.SUCCESS
    assert served == ["1.2.3.4"]
    # A blank-padded UID goes pynetdicom's way, and is stored all the same.
    assert peer.store(1, b"1.2.3.5 ", rawpdu.explicit_dataset("1.2.3.5")) == objectstore.SUCCESS
    assert served == ["1.2.3.4"]
    assert sorted(final_files(out)) == ["CT.1.2.3.4", "CT.1.2.3.5"]
    peer.send(rawpdu.release_rq())
    assert peer.read_pdu() is not None
    peer.close()


@pytest.mark.parametrize("intruder", ["command", "context"])
def test_an_interrupted_dataset_aborts_and_leaves_nothing(
    served: list[str], out: Path, intruder: str
) -> None:
    port = int(served.pop(0))
    peer = rawpdu.Peer(port)
    rq = rawpdu.associate_rq(((1, CT, (rawpdu.EXPLICIT,)), (3, CT, (rawpdu.EXPLICIT,))))
    assert peer.associate(rq)
    command = rawpdu.command_set(rawpdu.C_STORE_RQ, sop_instance="1.2.3.6")
    dataset = rawpdu.explicit_dataset("1.2.3.6", b"\x05" * 4000)
    first = rawpdu.pdv(1, 0, dataset[:2000])
    second = (
        rawpdu.pdv(1, rawpdu.COMMAND | rawpdu.LAST, command)
        if intruder == "command"
        else rawpdu.pdv(3, rawpdu.LAST, dataset[2000:])
    )
    peer.send(rawpdu.p_data(rawpdu.pdv(1, rawpdu.COMMAND | rawpdu.LAST, command), first))
    peer.send(rawpdu.p_data(second))
    answer = peer.read_pdu()
    assert answer is not None and answer[0] == rawpdu.ABORT
    assert peer.closed_by_peer(10)
    wait_until(lambda: not temp_files(out), what="temporary file removed")
    assert final_files(out) == []


def test_a_failing_store_answers_a_processing_failure_and_leaves_nothing(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(self: Receiver, request: object, sink: object) -> int:
        raise RuntimeError("the handler fails")

    monkeypatch.setattr(Receiver, "_serve_store", failing)
    port = free_port()
    with our_receiver(asconfigs.load(tmp_path, VERIFY_CT_CFG), port, settings(port, out)):
        peer = rawpdu.Peer(port)
        assert peer.associate()
        assert peer.store(1, "1.2.3.7", rawpdu.explicit_dataset("1.2.3.7")) == 0xC211
        assert temp_files(out) == []
        assert final_files(out) == []
        peer.close()


def test_a_peer_with_a_tiny_maximum_pdu_gets_its_response_in_fragments(
    served: list[str], out: Path
) -> None:
    port = int(served.pop(0))
    peer = rawpdu.Peer(port)
    assert peer.associate(rawpdu.associate_rq(max_pdu=64))  # less than one C-STORE-RSP
    command = rawpdu.command_set(rawpdu.C_STORE_RQ, sop_instance="1.2.3.8")
    peer.send(rawpdu.p_data(rawpdu.pdv(1, rawpdu.COMMAND | rawpdu.LAST, command)))
    peer.send(rawpdu.p_data(rawpdu.pdv(1, rawpdu.LAST, rawpdu.explicit_dataset("1.2.3.8"))))
    fragments = b""
    while True:
        pdu = peer.read_pdu(timeout=10.0)
        assert pdu is not None and pdu[0] == rawpdu.P_DATA_TF
        assert len(pdu[1]) <= 64
        item = pdu[1]
        fragments += item[6:]
        if item[5] & rawpdu.LAST:
            break
    assert served == ["1.2.3.8"]
    status_at = fragments.index(b"\x00\x00\x00\x09\x02\x00\x00\x00")  # (0000,0900), 2 bytes
    assert fragments[status_at + 8 : status_at + 10] == b"\x00\x00"  # Success
    assert final_files(out) == ["CT.1.2.3.8"]
    peer.close()
