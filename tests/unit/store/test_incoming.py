"""The dataset sink: a bounded prefix in memory, then everything straight to the temp file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from dcmrecvd.sink import StoreCommand
from dcmrecvd.store import filemeta, header, incoming, storage
from dcmrecvd.store.freespace import Reserve
from tests.support import dicomgen
from tests.support.streaming_peer import dataset, encoded

CHUNK = 16 * 1024


def sink(
    out: Path,
    *,
    bit_preserving: bool = False,
    check_sop_uids: bool = False,
    keep_refused: bool = False,
    instance: str = "1.2.3.4.100",
) -> incoming.IncomingObject:
    command = StoreCommand(dicomgen.CT, instance, 1, ExplicitVRLittleEndian, "SENDER", 1)
    return incoming.IncomingObject(
        command,
        bit_preserving=bit_preserving,
        spool=storage.Spool(storage.spool_directory(str(out)), "node"),
        reserve=Reserve(),
        space_directory=str(out),
        check_sop_uids=check_sop_uids,
        keep_refused=keep_refused,
    )


def feed(target: incoming.IncomingObject, data: bytes) -> None:
    for start in range(0, len(data), CHUNK):
        target.write(memoryview(data)[start : start + CHUNK])


def test_normal_mode_holds_only_the_prefix_then_streams(tmp_path: Path) -> None:
    data = encoded(dataset("1.2.3.4.100", pixel_bytes=1024 * 1024))
    target = sink(tmp_path)
    feed(target, data[: header.PREFIX_BYTES - CHUNK])
    assert target.temp is None  # still reading the header, nothing on disk yet
    feed(target, data[header.PREFIX_BYTES - CHUNK :])
    target.finish()
    assert target.failure is None
    assert target.temp is not None
    meta = filemeta.encode(dicomgen.CT, "1.2.3.4.100", ExplicitVRLittleEndian)
    assert target.temp.path.read_bytes() == meta + data
    assert target.header.series_date == "20240115"
    target.discard()
    assert list(storage.spool_directory(str(tmp_path)).iterdir()) == []


def test_bit_preserving_writes_from_the_first_fragment(tmp_path: Path) -> None:
    data = encoded(dataset("1.2.3.4.100", pixel_bytes=1024 * 1024))
    target = sink(tmp_path, bit_preserving=True)
    target.write(memoryview(data)[:CHUNK])
    assert target.temp is not None
    meta = filemeta.encode(dicomgen.CT, "1.2.3.4.100", ExplicitVRLittleEndian, "SENDER")
    assert target.temp.path.read_bytes() == meta + data[:CHUNK]
    assert target.header == header.Header()  # +B reads nothing of the dataset
    target.discard()


def test_a_small_dataset_is_written_at_the_end(tmp_path: Path) -> None:
    data = encoded(dataset("1.2.3.4.100"))
    target = sink(tmp_path)
    target.write(memoryview(data))
    assert target.temp is None
    target.finish()
    assert target.temp is not None
    assert target.temp.path.read_bytes().endswith(data)
    target.discard()


def test_discard_while_receiving_removes_the_temp_file(tmp_path: Path) -> None:
    data = encoded(dataset("1.2.3.4.100", pixel_bytes=1024 * 1024))
    target = sink(tmp_path)
    feed(target, data[: len(data) // 2])
    assert target.temp is not None
    path = target.temp.path
    target.discard()
    assert not path.exists()
    feed(target, data[len(data) // 2 :])  # the rest is dropped, not written
    target.finish()
    assert not path.exists()
    assert target.temp is None
    assert list(storage.spool_directory(str(tmp_path)).iterdir()) == []


def spooled(out: Path) -> list[Path]:
    return list(storage.spool_directory(str(out)).glob("*"))


@pytest.mark.parametrize("bit_preserving", [False, True])
@pytest.mark.parametrize("pixel_bytes", [16, 1024 * 1024])
def test_a_truncated_dataset_is_refused_and_dropped(
    tmp_path: Path, bit_preserving: bool, pixel_bytes: int
) -> None:
    data = encoded(dataset("1.2.3.4.100", pixel_bytes=pixel_bytes))
    target = sink(tmp_path, bit_preserving=bit_preserving)
    feed(target, data[:-2])
    target.finish()
    assert target.failure is not None
    assert target.failure.kind is incoming.FailureKind.MALFORMED
    assert "7FE0,0010" in target.failure.comment and len(target.failure.comment) <= 64
    assert target.temp is None
    assert spooled(tmp_path) == []


def test_a_broken_structure_is_refused_at_once(tmp_path: Path) -> None:
    data = bytearray(encoded(dataset("1.2.3.4.100", pixel_bytes=1024 * 1024)))
    data[4:6] = b"\x00\x00"  # the first element's VR: no VR at all
    target = sink(tmp_path)
    feed(target, bytes(data[:CHUNK]))
    assert target.failure is not None  # known before the rest arrives
    assert target.failure.kind is incoming.FailureKind.MALFORMED
    feed(target, bytes(data[CHUNK:]))
    target.finish()
    assert target.temp is None and spooled(tmp_path) == []


def test_a_refused_dataset_is_written_whole_for_the_quarantine(tmp_path: Path) -> None:
    data = encoded(dataset("1.2.3.4.100", pixel_bytes=1024 * 1024))[:-2]
    target = sink(tmp_path, keep_refused=True)
    feed(target, data)
    target.finish()
    assert target.failure is not None
    assert target.failure.kind is incoming.FailureKind.MALFORMED
    assert target.temp is not None
    assert target.temp.path.read_bytes().endswith(data)
    target.discard()
    assert spooled(tmp_path) == []


@pytest.mark.parametrize("bit_preserving", [False, True])
@pytest.mark.parametrize(
    ("instance", "kind"),
    [
        ("1.2.3.4.100", None),
        ("1.2.3.4.101", incoming.FailureKind.SOP_UIDS_DIFFER),
    ],
)
def test_the_sop_uid_check(
    tmp_path: Path, bit_preserving: bool, instance: str, kind: incoming.FailureKind | None
) -> None:
    data = encoded(dataset("1.2.3.4.100", pixel_bytes=1024 * 1024))
    target = sink(tmp_path, bit_preserving=bit_preserving, check_sop_uids=True, instance=instance)
    feed(target, data)
    target.finish()
    assert (target.failure.kind if target.failure else None) is kind
    target.discard()


def test_without_the_check_differing_uids_are_stored(tmp_path: Path) -> None:
    target = sink(tmp_path, instance="1.2.3.4.101")
    feed(target, encoded(dataset("1.2.3.4.100")))
    target.finish()
    assert target.failure is None
    target.discard()


COMMAND = StoreCommand(dicomgen.CT, "1.2.3.4", 1, ExplicitVRLittleEndian, "SENDER", 1)


@pytest.mark.parametrize(
    ("found", "kind", "comment"),
    [
        (header.Header(dicomgen.CT, "1.2.3.4"), None, ""),
        (header.Header(dicomgen.CT, ""), incoming.FailureKind.NO_SOP_UIDS, "no SOP Instance UID"),
        (header.Header("", "1.2.3.4"), incoming.FailureKind.NO_SOP_UIDS, "no SOP Class UID"),
        (
            header.Header(dicomgen.CT, "1.2.3.5"),
            incoming.FailureKind.SOP_UIDS_DIFFER,
            "SOP Instance UID differs",
        ),
        (
            header.Header("1.2.840.10008.5.1.4.1.1.4", "1.2.3.4"),
            incoming.FailureKind.SOP_UIDS_DIFFER,
            "SOP Class UID differs",
        ),
    ],
)
def test_sop_uid_failure(
    found: header.Header, kind: incoming.FailureKind | None, comment: str
) -> None:
    failure = incoming.sop_uid_failure(COMMAND, found)
    assert (failure.kind if failure else None) is kind
    if failure is not None:
        assert comment in failure.comment and len(failure.comment) <= 64


def test_sop_uid_failure_ignores_the_padding_of_the_request() -> None:
    padded = StoreCommand(dicomgen.CT, "1.2.3.4\0", 1, ExplicitVRLittleEndian, "A", 1)
    assert incoming.sop_uid_failure(padded, header.Header(dicomgen.CT, "1.2.3.4")) is None
