"""The probe's own DICOM requestor: its PDUs, and a real exchange with pynetdicom."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE

from bench.loadbench import corpus, ulclient
from bench.loadbench.ports import free_port


def test_p_data_fragments_fit_the_peers_max_pdu() -> None:
    data = bytes(range(256)) * 10  # 2560 bytes
    pdus = ulclient.p_data(5, data, command=False, max_pdu=1000)
    fragments, offset = [], 0
    while offset < len(pdus):
        pdu_type, length = struct.unpack_from(">BxI", pdus, offset)
        assert pdu_type == 0x04
        assert length <= 1000
        item_length, context, header = struct.unpack_from(">IBB", pdus, offset + 6)
        assert context == 5
        fragments.append((header, pdus[offset + 12 : offset + 6 + 4 + item_length]))
        offset += 6 + length
    assert [header for header, _ in fragments] == [0x00, 0x00, 0x02]
    assert b"".join(fragment for _, fragment in fragments) == data
    command = ulclient.p_data(1, b"cmd!", command=True, max_pdu=0)
    assert command[11] == 0x03  # the message control header: command, last fragment
    assert command[12:] == b"cmd!"


def test_a_command_set_reads_back() -> None:
    command = ulclient.c_store_rq(7, "1.2.3", "1.2.3.4.5")
    fields = ulclient.parse_command(command)
    assert struct.unpack("<I", fields[0x0000])[0] == len(command) - 12
    assert fields[0x0002] == b"1.2.3\0"
    assert struct.unpack("<H", fields[0x0100])[0] == ulclient.C_STORE_RQ
    assert struct.unpack("<H", fields[0x0110])[0] == 7
    assert fields[0x1000] == b"1.2.3.4.5\0"
    assert sorted(fields) == [0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000]


def test_the_dataset_of_a_part10_file(tmp_path: Path) -> None:
    manifest = corpus.write(tmp_path, "small", 1, seed=1)
    path = tmp_path / manifest.entries[0].file
    dataset = ulclient.dataset_of_part10(path)
    assert path.read_bytes().endswith(dataset)
    assert dataset[:4] == b"\x08\x00\x05\x00"  # (0008,0005) Specific Character Set
    (tmp_path / "raw").write_bytes(dataset)
    with pytest.raises(ValueError, match="not a Part-10 file"):
        ulclient.dataset_of_part10(tmp_path / "raw")


@pytest.fixture
def scp() -> Iterator[tuple[int, list[bytes]]]:
    """pynetdicom storing nothing, keeping the raw datasets it is sent."""
    received: list[bytes] = []

    def on_store(event: evt.Event) -> int:
        request = event.request
        assert isinstance(request, C_STORE)
        assert request.DataSet is not None
        received.append(request.DataSet.getvalue())
        return 0x0000

    ae = AE(ae_title="SCP")
    ae.require_called_aet = True
    ae.add_supported_context(corpus.SECONDARY_CAPTURE, ulclient.EXPLICIT_VR_LE)
    ae.add_supported_context(ulclient.VERIFICATION)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert server is not None
    yield port, received
    server.shutdown()


def test_store_and_echo_against_pynetdicom(tmp_path: Path, scp: tuple[int, list[bytes]]) -> None:
    port, received = scp
    manifest = corpus.write(tmp_path, "small", 3, seed=1)
    images = [e for e in manifest.entries if e.sop_class_uid == corpus.SECONDARY_CAPTURE]
    syntaxes = [corpus.SECONDARY_CAPTURE, corpus.BASIC_TEXT_SR, ulclient.VERIFICATION]
    with ulclient.Association(port, syntaxes, called="SCP", max_pdu=16384) as association:
        # pynetdicom accepts only what it was given: no context for the SR.
        assert set(association.context_of) == {corpus.SECONDARY_CAPTURE, ulclient.VERIFICATION}
        assert association.echo() == 0
        for entry in images:
            dataset = ulclient.dataset_of_part10(tmp_path / entry.file)
            status, sent, answered = association.store(
                entry.sop_class_uid, entry.sop_instance_uid, dataset
            )
            assert status == 0
            assert sent <= answered
        with pytest.raises(ulclient.AssociationError, match="no accepted presentation context"):
            association.store(corpus.BASIC_TEXT_SR, "1.2.3", b"")
    assert received == [ulclient.dataset_of_part10(tmp_path / e.file) for e in images]
    assert len(received) == 2


def test_echo_is_false_when_nothing_listens() -> None:
    assert not ulclient.echo(free_port(), timeout=2)


def test_a_refused_association_raises(scp: tuple[int, list[bytes]]) -> None:
    port, _ = scp
    with pytest.raises(ulclient.AssociationError, match="refused"):
        ulclient.Association(port, [ulclient.VERIFICATION], called="ELSEWHERE")
