"""Objects that arrive whole but are refused: a status, one log line, the association goes on.

A malformed dataset gets 0xC000; with check_sop_uids (dcmrecvd's default), a dataset
whose SOP Class/Instance UID differ from the request's gets 0xA900 and one without them
0xC000, as storescp answers. Nothing of a refused object is left under a final name or
in the spool; with a quarantine directory its bytes are kept there, beside a note.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dcmrecvd.profiles import Profile
from dcmrecvd.settings import StorageMode
from tests.support import rawpdu
from tests.support.peers import our_receiver
from tests.support.streaming_peer import final_files, settings, temp_files

GOOD = "1.2.3.777.1"


def stores(port: int, requests: list[tuple[str, bytes]]) -> list[tuple[int | None, str]]:
    """C-STORE each (command instance UID, dataset) on one association: status, comment."""
    peer = rawpdu.Peer(port, timeout=10)
    answers = []
    try:
        assert peer.associate()
        for instance, dataset in requests:
            command = rawpdu.command_set(rawpdu.C_STORE_RQ, sop_instance=instance)
            pdus = [rawpdu.p_data(rawpdu.pdv(1, rawpdu.COMMAND | rawpdu.LAST, command))]
            peer.send(b"".join(pdus + rawpdu.dataset_pdus(1, dataset)))
            answer = peer.read_pdu(timeout=10)
            answers.append((rawpdu.response_status(answer), comment(answer)))
        peer.send(rawpdu.release_rq())
        assert peer.read_pdu() is not None
    finally:
        peer.close()
    return answers


def comment(answer: tuple[int, bytes] | None) -> str:
    """The Error Comment (0000,0902) of a response PDU, empty if none."""
    if answer is None:
        return ""
    tag = b"\x00\x00\x02\x09"
    body = answer[1]
    if tag not in body:
        return ""
    at = body.index(tag)
    size = int.from_bytes(body[at + 4 : at + 8], "little")
    return body[at + 8 : at + 8 + size].decode("ascii").rstrip("\0 ")


def without_instance_uid() -> bytes:
    full = rawpdu.explicit_dataset("1.2.3.1")
    # Drop the (0008,0018) element: 8 bytes of header and the 8-byte value "1.2.3.1\0".
    start = full.index(b"\x08\x00\x18\x00")
    return full[:start] + full[start + 16 :]


@pytest.mark.parametrize("mode", [StorageMode.NORMAL, StorageMode.BIT_PRESERVING])
def test_the_sop_uid_check(profile: Profile, out: Path, port: int, mode: StorageMode) -> None:
    checked = settings(port, out, check_sop_uids=True, storage=mode)
    with our_receiver(profile, port, checked):
        answers = stores(
            port,
            [
                ("1.2.3.1", rawpdu.explicit_dataset("1.2.3.2")),
                ("1.2.3.1", without_instance_uid()),
                (GOOD, rawpdu.explicit_dataset(GOOD)),
            ],
        )
    assert answers == [
        (0xA900, "dataset SOP Instance UID differs from the request's"),
        (0xC000, "dataset has no SOP Instance UID"),
        (0x0000, ""),
    ]
    assert final_files(out) == [f"CT.{GOOD}"]
    assert temp_files(out) == []


def test_without_the_check_the_command_names_the_file_as_in_dcmrecv(
    profile: Profile, out: Path, port: int
) -> None:
    with our_receiver(profile, port, settings(port, out)):
        answers = stores(port, [("1.2.3.1", rawpdu.explicit_dataset("1.2.3.2"))])
    assert answers == [(0x0000, "")]
    assert final_files(out) == ["CT.1.2.3.1"]


def test_a_malformed_object_is_logged_once_with_its_fields(
    profile: Profile, out: Path, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    cut = rawpdu.explicit_dataset("1.2.3.1", b"\x01" * 64)[:-2]
    with caplog.at_level(logging.INFO, "dcmrecv"), our_receiver(profile, port, settings(port, out)):
        answers = stores(port, [("1.2.3.1", cut), (GOOD, rawpdu.explicit_dataset(GOOD))])
    assert [status for status, _ in answers] == [0xC000, 0x0000]
    assert "(7FE0,0010)" in answers[0][1]
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusals) == 1
    record = refusals[0]
    assert record.getMessage().startswith("cannot store received object: malformed dataset at ")
    assert record.__dict__["SOP_INSTANCE_UID"] == "1.2.3.1"
    assert record.__dict__["REFUSED"] == "MALFORMED"
    assert final_files(out) == [f"CT.{GOOD}"]


@pytest.mark.parametrize("mode", [StorageMode.NORMAL, StorageMode.BIT_PRESERVING])
def test_the_quarantine_keeps_a_refused_object(
    profile: Profile, tmp_path: Path, out: Path, port: int, mode: StorageMode
) -> None:
    quarantine = tmp_path / "refused"
    cut = rawpdu.explicit_dataset("1.2.3.1", b"\x01" * 64)[:-2]
    kept = settings(port, out, storage=mode, quarantine_dir=str(quarantine))
    with our_receiver(profile, port, kept):
        answers = stores(port, [("1.2.3.1", cut), (GOOD, rawpdu.explicit_dataset(GOOD))])
    assert [status for status, _ in answers] == [0xC000, 0x0000]
    objects = sorted(quarantine.glob("*.dcm"))
    assert len(objects) == 1
    assert objects[0].read_bytes().endswith(cut)
    assert objects[0].read_bytes()[128:132] == b"DICM"
    note = objects[0].with_suffix(".txt").read_text()
    assert "REASON=malformed dataset at offset 0x" in note
    assert "SOP_INSTANCE_UID=1.2.3.1\n" in note
    assert "REFUSED=MALFORMED\n" in note
    assert final_files(out) == [f"CT.{GOOD}"]
    assert temp_files(out) == []
