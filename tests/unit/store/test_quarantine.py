"""The quarantine: refused objects kept whole, beside a note, within a total size."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcmrecvd.store import quarantine, storage

SHM = Path("/dev/shm")
NODE = "node-1.example"


def temp_file(spool: Path, data: bytes) -> storage.TempFile:
    temp = storage.TempFile(storage.Spool(spool, NODE))
    temp.write(data)
    return temp


def kept(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    if not SHM.is_dir() or os.stat(SHM).st_dev == os.stat(tempfile.gettempdir()).st_dev:
        pytest.skip("no tmpfs at /dev/shm on another file system than the temp directory")
    with tempfile.TemporaryDirectory(dir=SHM) as name:
        yield Path(name)


def test_an_object_is_kept_whole_with_its_note(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    temp = temp_file(spool, b"DICM" * 100)
    q = quarantine.Quarantine(tmp_path / "q", 1024**2, NODE)
    path = q.keep(temp, "REASON=truncated\n")
    assert path is not None and path.parent == tmp_path / "q"
    assert path.read_bytes() == b"DICM" * 100
    assert path.with_suffix(".txt").read_text() == "REASON=truncated\n"
    temp.discard()
    assert list(spool.iterdir()) == []  # the temporary name is gone, the object kept
    assert path.exists()


def test_a_copy_across_file_systems(tmp_path: Path, shm_dir: Path) -> None:
    spool = tmp_path / "spool"
    temp = temp_file(spool, b"x" * 10000)
    path = quarantine.Quarantine(shm_dir / "q", 1024**2, NODE).keep(temp, "n\n")
    assert path is not None and path.read_bytes() == b"x" * 10000
    assert [p.name for p in (shm_dir / "q").iterdir() if p.name.startswith(".partial")] == []
    temp.discard()
    assert list(spool.iterdir()) == []


def test_the_oldest_go_first_to_stay_within_the_size(tmp_path: Path) -> None:
    q = quarantine.Quarantine(tmp_path / "q", 2500, NODE)
    paths = [q.keep(temp_file(tmp_path / "s", bytes([n]) * 1000), "n\n") for n in range(5)]
    assert all(p is not None for p in paths)
    names = kept(tmp_path / "q")
    # Two pairs of 1002 bytes fit in 2500: the last two objects and their notes.
    assert names == sorted(
        name for p in paths[3:] if p is not None for name in (p.name, p.with_suffix(".txt").name)
    )
    total = sum((tmp_path / "q" / name).stat().st_size for name in names)
    assert total <= 2500


def test_an_object_larger_than_the_whole_quarantine_is_not_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    q = quarantine.Quarantine(tmp_path / "q", 100, NODE)
    earlier = q.keep(temp_file(tmp_path / "s", b"a" * 50), "n\n")
    with caplog.at_level(logging.WARNING, "dcmrecv"):
        assert q.keep(temp_file(tmp_path / "s", b"b" * 200), "n\n") is None
    assert "exceed quarantine-size 100" in caplog.text
    assert earlier is not None and earlier.exists()  # nothing evicted for it


def test_an_unusable_directory_keeps_nothing_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "q").write_text("a file where the directory should be")
    temp = temp_file(tmp_path / "s", b"data")
    with caplog.at_level(logging.WARNING, "dcmrecv"):
        assert quarantine.Quarantine(tmp_path / "q", 1000, NODE).keep(temp, "n\n") is None
    assert "refused object not quarantined" in caplog.text
    temp.discard()
    assert list((tmp_path / "s").iterdir()) == []


def test_a_copy_left_by_a_dead_process_of_this_node_is_removed(tmp_path: Path) -> None:
    directory = tmp_path / "q"
    directory.mkdir()
    ours = ".partial-20260101T000000.000000Z-00000000@node-1.example.dcm"
    old = ".partial-20260101T000000.000000Z-00000001.dcm"  # before node names
    # Another node's copy may be in progress, its lock unseen from here.
    theirs = ".partial-20260101T000000.000000Z-00000002@node-1.example.b.dcm"
    for name in (ours, old, theirs):
        (directory / name).write_bytes(b"half")
    quarantine.Quarantine(directory, 1000, NODE).keep(temp_file(tmp_path / "s", b"data"), "n\n")
    assert [p.name for p in directory.iterdir() if p.name.startswith(".partial")] == [theirs]


def test_a_kept_object_is_named_for_its_node(tmp_path: Path) -> None:
    path = quarantine.Quarantine(tmp_path / "q", 1000, NODE).keep(
        temp_file(tmp_path / "s", b"data"), "n\n"
    )
    assert path is not None and path.name.endswith(f"@{NODE}.dcm")
    assert quarantine.written_by(path.name, NODE)
    assert not quarantine.written_by(path.name, "node-1")
    assert path.with_suffix(".txt").read_text() == "n\n"
