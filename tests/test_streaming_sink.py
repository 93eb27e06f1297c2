"""The dataset sink: a bounded prefix in memory, then everything straight to the temp file."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian

from dcmrecvd import filemeta, header, incoming, storage, streaming
from dcmrecvd.freespace import Reserve
from tests import dicomgen
from tests.streaming_peer import dataset, encoded

CHUNK = 16 * 1024


def sink(out: Path, *, bit_preserving: bool = False) -> incoming.IncomingObject:
    command = streaming.StoreCommand(
        dicomgen.CT, "1.2.3.4.100", 1, ExplicitVRLittleEndian, "SENDER", 1
    )
    return incoming.IncomingObject(
        command,
        bit_preserving=bit_preserving,
        spool=storage.spool_directory(str(out)),
        reserve=Reserve(),
        space_directory=str(out),
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
