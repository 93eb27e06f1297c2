"""Durable writes, the File Meta encoder and the header reader."""

from __future__ import annotations

import errno
import fcntl
import io
import logging
import os
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dcmrecvd.store import filemeta, header, storage
from tests.support import dicomgen
from tests.support.fsyncs import record_directory_fsyncs

NODE = "node-1.example"


def spool_in(output: Path, node: str = NODE) -> storage.Spool:
    return storage.Spool(storage.spool_directory(str(output)), node)


def leftovers(spool: storage.Spool) -> list[str]:
    return sorted(
        p.name for p in spool.directory.iterdir() if p.name.startswith(storage.TEMP_PREFIX)
    )


def test_temp_file_is_hidden_in_the_spool_and_commits_all_bytes(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    temp = storage.TempFile(spool)
    assert temp.path.parent == tmp_path / ".dcmrecvd-spool"
    assert temp.path.name.startswith(".") and temp.path.name.endswith(storage.TEMP_SUFFIX)
    temp.write(b"abc")
    temp.write(memoryview(b"def"))
    assert temp.size == 6
    temp.commit(tmp_path / "CT.1", replace=True)
    assert (tmp_path / "CT.1").read_bytes() == b"abcdef"
    assert leftovers(spool) == []


def test_commit_replaces_only_when_asked(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    target = tmp_path / "CT.1"
    target.write_bytes(b"old")
    first = storage.TempFile(spool)
    first.write(b"second")
    with pytest.raises(storage.NameTaken):
        first.commit(target, replace=False)
    assert target.read_bytes() == b"old"
    first.discard()
    assert leftovers(spool) == []
    second = storage.TempFile(spool)
    second.write(b"new")
    second.commit(target, replace=True)
    assert target.read_bytes() == b"new"


def test_failed_commit_leaves_the_temp_for_discard(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    target = tmp_path / "is-a-directory"
    (target / "inside").mkdir(parents=True)
    temp = storage.TempFile(spool)
    temp.write(b"data")
    with pytest.raises(IsADirectoryError):
        temp.commit(target, replace=True)
    temp.discard()
    temp.discard()  # idempotent
    assert target.is_dir()
    assert leftovers(spool) == []


def record_io(monkeypatch: pytest.MonkeyPatch, output: Path) -> list[tuple[str, int, int]]:
    """Record start_writeback calls as (offset, length) and fsyncs, in order.

    Objects stay in the page cache, as on a file system refusing O_DIRECT (the
    direct path is tests/unit/store/test_directio.py's). The spool of `output` is made first, so
    that only the objects' own fsyncs are recorded.
    """
    storage.make_directory(storage.spool_directory(str(output)))
    monkeypatch.setattr(storage, "DIRECT_FROM", 2**62)
    calls: list[tuple[str, int, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append(("fsync", 0, 0))
        real_fsync(fd)

    def start_writeback(fd: int, offset: int, length: int) -> None:
        calls.append(("writeback", offset, length))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(storage, "start_writeback", start_writeback)
    return calls


def test_a_large_object_starts_writeback_of_each_new_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_io(monkeypatch, tmp_path)
    step = storage.WRITEBACK_BYTES
    chunk = b"x" * (step * 3 // 8)  # the 3rd write crosses the first step
    temp = storage.TempFile(spool_in(tmp_path))
    for _ in range(7):
        temp.write(chunk)
    temp.commit(tmp_path / "BIG", replace=True)
    first = 3 * len(chunk)
    assert calls == [
        ("writeback", 0, first),
        ("writeback", first, 3 * len(chunk)),
        ("fsync", 0, 0),  # the file: durability still rests on it
        ("fsync", 0, 0),  # the directory
    ]
    assert (tmp_path / "BIG").stat().st_size == 7 * len(chunk)


def test_a_small_object_makes_no_writeback_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_io(monkeypatch, tmp_path)
    temp = storage.TempFile(spool_in(tmp_path))
    temp.write(b"x" * (storage.WRITEBACK_BYTES - 2))
    temp.write(b"x")
    temp.commit(tmp_path / "CT.1", replace=True)
    assert calls == [("fsync", 0, 0), ("fsync", 0, 0)]


def test_a_failing_writeback_is_dropped_for_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_io(monkeypatch, tmp_path)

    def refuse(fd: int, offset: int, length: int) -> None:
        calls.append(("writeback", offset, length))
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    monkeypatch.setattr(storage, "start_writeback", refuse)
    step = storage.WRITEBACK_BYTES
    temp = storage.TempFile(spool_in(tmp_path))
    for _ in range(3):
        temp.write(b"y" * step)
    temp.commit(tmp_path / "BIG", replace=True)
    assert calls == [("writeback", 0, step), ("fsync", 0, 0), ("fsync", 0, 0)]
    assert (tmp_path / "BIG").read_bytes() == b"y" * (3 * step)
    # The next file tries again.
    other = storage.TempFile(spool_in(tmp_path))
    other.write(b"z" * step)
    other.discard()
    assert calls[-1] == ("writeback", 0, step)


def test_start_writeback_calls_the_kernel_and_reports_its_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"d" * 65536)
    fd = os.open(path, os.O_WRONLY)
    try:
        storage.start_writeback(fd, 0, 65536)
        with pytest.raises(OSError) as err:
            storage.start_writeback(fd, -1, 65536)
        assert err.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    read, write = os.pipe()
    try:
        with pytest.raises(OSError) as err:
            storage.start_writeback(write, 0, 1)
        assert err.value.errno == errno.ESPIPE
    finally:
        os.close(read)
        os.close(write)
    monkeypatch.setattr(storage, "_SYNC_FILE_RANGE", None)
    with pytest.raises(OSError) as err:
        storage.start_writeback(0, 0, 1)
    assert err.value.errno == errno.ENOSYS


TOKEN = "0123456789abcdef"


def test_a_temp_file_is_named_for_its_node_and_process(tmp_path: Path) -> None:
    temp = storage.TempFile(spool_in(tmp_path))
    prefix = f"{storage.TEMP_PREFIX}{NODE}.{os.getpid()}."
    assert temp.path.name.startswith(prefix), temp.path.name
    assert storage.temp_node(temp.path.name) == NODE
    other = storage.TempFile(spool_in(tmp_path))
    assert other.path != temp.path
    temp.discard()
    other.discard()


@pytest.mark.parametrize("replace", [True, False])
def test_a_committed_object_carries_its_nodes_name(tmp_path: Path, replace: bool) -> None:
    temp = storage.TempFile(spool_in(tmp_path))
    temp.write(b"data")
    temp.commit(tmp_path / "CT.1", replace=replace)
    assert os.getxattr(tmp_path / "CT.1", storage.NODE_ATTRIBUTE) == NODE.encode()
    assert storage.stored_by(str(tmp_path / "CT.1")) == NODE


def test_an_unmarked_or_missing_file_is_stored_by_no_node(tmp_path: Path) -> None:
    (tmp_path / "by-hand.dcm").write_bytes(b"data")
    assert storage.stored_by(str(tmp_path / "by-hand.dcm")) is None
    assert storage.stored_by(str(tmp_path / "missing.dcm")) is None


def without_user_attributes(
    monkeypatch: pytest.MonkeyPatch, error: int
) -> list[tuple[int, str, bytes]]:
    """Make setxattr fail with `error`, as on a file system without user extended
    attributes (NFSv3, tmpfs before Linux 6.6); the calls it got."""
    calls: list[tuple[int, str, bytes]] = []

    def refused(fd: int, attribute: str, value: bytes) -> None:
        calls.append((fd, attribute, value))
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "setxattr", refused)
    monkeypatch.setattr(storage, "_unmarkable", set())
    return calls


@pytest.mark.parametrize(
    "error",
    # No user xattrs on the file system (NFSv3, tmpfs before Linux 6.6); a file whose
    # owner may not write it (a umask of 0277); anything else.
    [errno.EOPNOTSUPP, errno.EACCES, errno.EIO],
)
def test_objects_that_cannot_be_marked_are_stored_unmarked_and_it_warns_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: int,
) -> None:
    calls = without_user_attributes(monkeypatch, error)
    spool = spool_in(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dcmrecv"):
        for n in range(3):
            temp = storage.TempFile(spool)
            temp.write(b"data")
            temp.commit(tmp_path / f"CT.{n}", replace=False)
    assert [(tmp_path / f"CT.{n}").read_bytes() for n in range(3)] == [b"data"] * 3
    assert all(storage.stored_by(str(tmp_path / f"CT.{n}")) is None for n in range(3))
    assert leftovers(spool) == []
    assert len(calls) == 1
    [warning] = caplog.messages
    assert f"cannot mark objects in {tmp_path} with their node ({os.strerror(error)})" in warning


@pytest.mark.parametrize(
    ("name", "node"),
    [
        (storage.temp_name("a", 12, TOKEN), "a"),
        # Dots in the node name: the pid and the token are the last fields.
        (storage.temp_name("a.3.b", 12, TOKEN), "a.3.b"),
        (storage.temp_name("a-b_c", 4194304, TOKEN), "a-b_c"),
        # Written by a version without node names.
        (f".dcmrecvd-{TOKEN}.tmp", ""),
        (f".dcmrecvd-a.x.{TOKEN}.tmp", None),  # no pid
        (f".dcmrecvd-.12.{TOKEN}.tmp", None),  # no node
        (".dcmrecvd-a.12.0123.tmp", None),  # short token
        (f".dcmrecvd-a.12.{TOKEN}.tmp.x", None),
        ("not-ours", None),
        (".dcmrecvd-spool", None),
    ],
)
def test_the_node_is_read_back_from_a_temp_name(name: str, node: str | None) -> None:
    assert storage.temp_node(name) == node


def test_a_sweep_may_take_only_its_own_nodes_and_old_temp_files() -> None:
    assert storage.sweepable(storage.temp_name("a", 1, TOKEN), "a")
    assert storage.sweepable(f".dcmrecvd-{TOKEN}.tmp", "a")
    assert not storage.sweepable(storage.temp_name("b", 1, TOKEN), "a")
    # A name that only starts like ours is another node's.
    assert not storage.sweepable(storage.temp_name("a.b", 1, TOKEN), "a")
    assert not storage.sweepable(storage.temp_name("a", 1, TOKEN), "a.b")
    assert not storage.sweepable("not-ours", "a")


def test_sweep_removes_only_this_nodes_files_no_live_writer_holds(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    live = storage.TempFile(spool)
    # Files of killed receivers: nobody holds their locks any more.
    dead = spool.directory / storage.temp_name(NODE, 99999, TOKEN)
    old = spool.directory / f"{storage.TEMP_PREFIX}{TOKEN}{storage.TEMP_SUFFIX}"
    # Another node's: unlocked as seen from here, as over NFS without lock service.
    theirs = spool.directory / storage.temp_name("node-2", 99999, TOKEN)
    for path in (dead, old, theirs):
        path.write_bytes(b"partial")
    (spool.directory / "not-ours").write_bytes(b"")
    assert sorted(storage.sweep(spool)) == sorted([dead, old])
    assert sorted(p.name for p in spool.directory.iterdir()) == sorted(
        [live.path.name, theirs.name, "not-ours"]
    )
    assert storage.sweep(spool_in(tmp_path, "node-2")) == [theirs]
    live.discard()
    assert storage.sweep(spool_in(tmp_path / "missing")) == []


def test_a_link_that_answers_eexist_for_our_own_link_is_a_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NFS: a retransmitted LINK, whose first transmission made the link, says EEXIST."""
    real_link = os.link

    def retransmitted_link(source: Path, target: Path) -> None:
        real_link(source, target)
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))

    monkeypatch.setattr(os, "link", retransmitted_link)
    temp = storage.TempFile(spool_in(tmp_path))
    temp.write(b"ours")
    temp.commit(tmp_path / "CT.1", replace=False)
    assert (tmp_path / "CT.1").read_bytes() == b"ours"
    assert leftovers(spool_in(tmp_path)) == []
    # Someone else's file under the name is still a name taken.
    other = storage.TempFile(spool_in(tmp_path))
    other.write(b"second")
    with pytest.raises(storage.NameTaken):
        other.commit(tmp_path / "CT.1", replace=False)
    other.discard()
    assert (tmp_path / "CT.1").read_bytes() == b"ours"


def test_a_rename_that_answers_enoent_after_renaming_is_a_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NFS: a retransmitted RENAME, whose first transmission renamed, finds no source."""
    real_replace = os.replace
    (tmp_path / "CT.1").write_bytes(b"old")

    def retransmitted_replace(source: Path, target: Path) -> None:
        real_replace(source, target)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(source))

    monkeypatch.setattr(os, "replace", retransmitted_replace)
    temp = storage.TempFile(spool_in(tmp_path))
    temp.write(b"new")
    temp.commit(tmp_path / "CT.1", replace=True)
    assert (tmp_path / "CT.1").read_bytes() == b"new"
    # A source that is really gone is still an error.
    gone = storage.TempFile(spool_in(tmp_path))
    gone.path.unlink()
    with pytest.raises(FileNotFoundError):
        gone.commit(tmp_path / "CT.2", replace=True)
    gone.discard()
    assert not (tmp_path / "CT.2").exists()


def test_ensure_directory_reports_like_dcmtk(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(b"")
    with pytest.raises(storage.StorageError) as err:
        storage.ensure_directory(tmp_path / "data" / "2024")
    assert str(err.value) == (
        f"cannot create directory for received object: {tmp_path}/data/2024: "
        "Cannot create directory: Not a directory"
    )
    storage.ensure_directory(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()


def test_file_meta_reads_back(tmp_path: Path) -> None:
    raw = filemeta.encode("1.2.3", "4.5.67", ExplicitVRLittleEndian, "SENDER")
    assert raw[:132] == b"\x00" * 128 + b"DICM"
    meta = dcmread(io.BytesIO(raw), force=True).file_meta
    assert meta.MediaStorageSOPClassUID == "1.2.3"
    assert meta.MediaStorageSOPInstanceUID == "4.5.67"
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.ImplementationClassUID == filemeta.IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == filemeta.IMPLEMENTATION_VERSION_NAME
    assert meta.SourceApplicationEntityTitle == "SENDER"
    assert meta.FileMetaInformationGroupLength == len(raw) - 132 - 12
    without_ae = dcmread(
        io.BytesIO(filemeta.encode("1.2", "3.4", ExplicitVRLittleEndian)), force=True
    )
    assert "SourceApplicationEntityTitle" not in without_ae.file_meta


def test_file_meta_keeps_hostile_uids_and_refuses_oversized_ones() -> None:
    meta = dcmread(
        io.BytesIO(filemeta.encode("1.2", "../../x", ExplicitVRLittleEndian)), force=True
    )
    assert meta.file_meta.MediaStorageSOPInstanceUID == "../../x"
    with pytest.raises(ValueError, match="too long"):
        filemeta.encode("1.2", "1" * 70000, ExplicitVRLittleEndian)


def encoded(spec: dicomgen.Spec, syntax: str) -> bytes:
    ds = dicomgen.dataset(spec)
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = syntax == ImplicitVRLittleEndian
    buffer.is_little_endian = syntax != ExplicitVRBigEndian
    write_dataset(buffer, ds)
    data = buffer.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = deflater.compress(data) + deflater.flush()
    return data


@pytest.mark.parametrize(
    "syntax",
    [
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    ],
)
def test_header_elements_in_every_uncompressed_syntax(syntax: str) -> None:
    spec = dicomgen.Spec(dicomgen.CT, "1.2.3.4.100", series_date="20240115 ")
    found = header.read(encoded(spec, syntax), syntax)
    assert found == header.Header(dicomgen.CT, "1.2.3.4.100", "20240115", "DA")


def test_header_keeps_the_encoded_vr_and_absence() -> None:
    lo = dicomgen.Spec(dicomgen.SC, "1.2.3", series_date="20240115", series_date_vr="LO")
    assert (
        header.read(encoded(lo, ExplicitVRLittleEndian), ExplicitVRLittleEndian).series_date_vr
        == "LO"
    )
    none = dicomgen.Spec(dicomgen.MR, "1.2.4", series_date=None)
    found = header.read(encoded(none, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    assert (found.series_date, found.series_date_vr) == ("", "")


def test_header_refuses_an_unknown_transfer_syntax() -> None:
    with pytest.raises(header.HeaderError):
        header.read(b"\x08\x00\x16\x00", "1.2.3.4.999.2")


def test_discard_after_commit_leaves_the_final_file(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    temp = storage.TempFile(spool)
    temp.write(b"object")
    temp.commit(tmp_path / "CT.1", replace=False)
    # Another writer's temp file under the same name would be safe too: discard is a no-op.
    temp.path.write_bytes(b"someone else's")
    temp.discard()
    assert (tmp_path / "CT.1").read_bytes() == b"object"
    assert temp.path.read_bytes() == b"someone else's"


def test_ensure_directory_fsyncs_each_new_level_into_its_parent_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = record_directory_fsyncs(monkeypatch)
    storage.ensure_directory(tmp_path / "data" / "2024" / "01")
    assert synced[:3] == [tmp_path / "data" / "2024", tmp_path / "data", tmp_path]
    # Then up the levels that existed, to the root of the file system, unless done before.
    assert all(tmp_path.is_relative_to(above) for above in synced[3:])
    synced.clear()
    storage.ensure_directory(tmp_path / "data" / "2024" / "01")
    storage.ensure_directory(tmp_path / "data" / "2024" / "02")
    storage.ensure_directory(tmp_path / "data" / "2024" / "02")
    assert synced == [tmp_path / "data" / "2024"]


def test_ensure_directory_fsyncs_a_directory_made_by_someone_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.ensure_directory(tmp_path)
    synced = record_directory_fsyncs(monkeypatch)
    # Another worker's mkdir (our mkdir would fail with EEXIST): its parent may not be
    # fsynced yet.
    (tmp_path / "theirs").mkdir()
    storage.ensure_directory(tmp_path / "theirs")
    assert synced == [tmp_path]


def test_ensure_directory_fsyncs_a_directory_made_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.ensure_directory(tmp_path / "out")
    synced = record_directory_fsyncs(monkeypatch)
    (tmp_path / "out").rmdir()
    storage.ensure_directory(tmp_path / "out")  # even if the inode number is reused
    assert synced == [tmp_path]


def test_the_spool_is_made_durable_with_the_output_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.ensure_directory(tmp_path)
    synced = record_directory_fsyncs(monkeypatch)
    spool = spool_in(tmp_path / "out")
    storage.TempFile(spool).discard()
    assert synced == [tmp_path / "out", tmp_path]
    storage.TempFile(spool).discard()
    assert synced == [tmp_path / "out", tmp_path]


@pytest.mark.parametrize("sweep_holds_the_lock", [False, True])
def test_a_sweep_between_create_and_lock_does_not_take_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sweep_holds_the_lock: bool
) -> None:
    """Another process's sweep may find a new temporary file before its creator locks it."""
    spool = storage.Spool(tmp_path / "spool", NODE)
    spool.directory.mkdir()
    real_flock = fcntl.flock
    interleaved: list[int] = []

    def flock_after_a_sweep(fd: int, operation: int) -> None:
        if interleaved:
            real_flock(fd, operation)
            return
        interleaved.append(fd)
        if sweep_holds_the_lock:
            sweeper = os.open(spool.directory / os.listdir(spool.directory)[0], os.O_RDONLY)
            real_flock(sweeper, fcntl.LOCK_EX)
            try:
                real_flock(fd, operation)  # raises: the sweep holds the lock
            finally:
                os.close(sweeper)
                assert storage.sweep(spool) != []
        assert storage.sweep(spool) != []  # it removes the file nobody has locked yet
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_sweep)
    temp = storage.TempFile(spool)
    temp.write(b"data")
    assert interleaved, "the sweep did not run between the open and the lock"
    temp.commit(tmp_path / "final", replace=False)
    assert (tmp_path / "final").read_bytes() == b"data"
    assert os.listdir(spool.directory) == []
