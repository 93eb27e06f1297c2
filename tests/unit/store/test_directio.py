"""Large objects through storage.TempFile: the O_DIRECT tail and its fallbacks."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from dcmrecvd.store import directio, storage

PIECE = 131060  # the dataset bytes of one full P-DATA-TF at max PDU 131072


def content(size: int) -> bytes:
    """Bytes whose every 4 KiB block differs, so a misplaced block shows."""
    return b"".join(i.to_bytes(4, "big") * 1024 for i in range(size // 4096 + 1))[:size]


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """O_DIRECT from 96 KiB on in 64 KiB buffers: many buffers in a few hundred KiB."""
    monkeypatch.setattr(storage, "DIRECT_FROM", 96 * 1024)
    monkeypatch.setattr(directio, "CHUNK", 64 * 1024)


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    probe = tmp_path / "probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
    except OSError:
        pytest.skip(f"the file system of {tmp_path} refuses O_DIRECT")
    finally:
        os.close(fd)
        probe.unlink()
    return storage.spool_directory(str(tmp_path))


Write = tuple[bool, int, int]  # O_DIRECT set, offset, length


def spy_pwrite(
    monkeypatch: pytest.MonkeyPatch, fail: Callable[[Write], OSError | None] = lambda _: None
) -> list[Write]:
    writes: list[Write] = []
    real = os.pwrite

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        call = (bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT), offset, len(data))
        writes.append(call)
        error = fail(call)
        if error is not None:
            raise error
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    return writes


def store(spool: Path, data: bytes, final: Path, piece: int = PIECE) -> None:
    temp = storage.TempFile(storage.Spool(spool, "node"))
    for start in range(0, len(data), piece):
        temp.write(memoryview(data)[start : start + piece])
    temp.commit(final, replace=True)


def direct_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("dcmrecvd-direct")]


# The switch is made at an unaligned size (100_000, after the 2nd piece); then the
# sizes end: on a buffer's end (no tail), a buffer and one block on, mid-block.
@pytest.mark.parametrize("size", [98304 + 3 * 65536, 98304 + 65536 + 4096, 500_001, 1_048_576])
@pytest.mark.usefixtures("small_steps")
def test_a_large_object_is_written_directly_and_reads_back_whole(
    spool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    writes = spy_pwrite(monkeypatch)
    data = content(size)
    store(spool, data, tmp_path / "BIG", piece=50_000)
    assert (tmp_path / "BIG").read_bytes() == data
    direct = [(offset, length) for is_direct, offset, length in writes if is_direct]
    assert direct, "no write went out with O_DIRECT"
    assert all(o % directio.ALIGN == 0 and n % directio.ALIGN == 0 for o, n in direct)
    # Every byte from the switch on was written once, in order, and nothing before it.
    switch = (100_000 // directio.ALIGN) * directio.ALIGN  # the 2nd piece crossed 96 KiB
    offsets = [offset for _, offset, _ in writes]
    assert offsets == sorted(offsets)
    assert writes[0][1] == switch
    assert sum(n for _, _, n in writes) == size - switch
    assert direct_threads() == []
    assert os.listdir(spool) == []


def test_a_small_object_writes_nothing_directly(
    spool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = spy_pwrite(monkeypatch)
    data = content(storage.DIRECT_FROM - 1)
    store(spool, data, tmp_path / "CT.1")
    assert writes == []
    assert (tmp_path / "CT.1").read_bytes() == data


def test_twenty_mib_in_the_real_buffers(
    spool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = spy_pwrite(monkeypatch)
    data = content(20 * 1024 * 1024 + 4321)
    store(spool, data, tmp_path / "BIG")
    assert (tmp_path / "BIG").read_bytes() == data
    switch = writes[0][1]
    assert storage.DIRECT_FROM - directio.ALIGN < switch <= storage.DIRECT_FROM + PIECE
    full = [w for w in writes if w[0] and w[2] == directio.CHUNK]
    assert len(full) == (len(data) - switch) // directio.CHUNK
    assert sum(n for _, _, n in writes) == len(data) - switch


@pytest.mark.usefixtures("small_steps")
def test_a_write_error_in_the_writer_thread_fails_the_object_and_leaves_nothing(
    spool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(call: Write) -> OSError | None:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if call[1] > 200_000 else None

    spy_pwrite(monkeypatch, full_disk)
    temp = storage.TempFile(storage.Spool(spool, "node"))
    with pytest.raises(OSError) as raised:
        for _ in range(12):
            temp.write(content(50_000))
        temp.commit(tmp_path / "BIG", replace=True)
    assert raised.value.errno == errno.ENOSPC
    temp.discard()
    assert not (tmp_path / "BIG").exists()
    assert os.listdir(spool) == []
    assert direct_threads() == []


@pytest.mark.usefixtures("small_steps")
def test_a_device_wanting_larger_blocks_goes_on_through_the_page_cache(
    spool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def strict(call: Write) -> OSError | None:
        return OSError(errno.EINVAL, os.strerror(errno.EINVAL)) if call[0] else None

    writes = spy_pwrite(monkeypatch, strict)
    data = content(700_000)
    store(spool, data, tmp_path / "BIG", piece=50_000)
    assert (tmp_path / "BIG").read_bytes() == data
    assert writes[0][0] is True  # tried once
    assert [w[0] for w in writes[1:]] == [False] * (len(writes) - 1)


@pytest.mark.usefixtures("small_steps")
def test_a_file_system_refusing_o_direct_gets_the_page_cache_and_writeback(
    spool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fcntl = fcntl.fcntl

    def refusing(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", refusing)
    monkeypatch.setattr(storage, "WRITEBACK_BYTES", 100_000)
    writeback: list[int] = []

    def start_writeback(fd: int, offset: int, length: int) -> None:
        writeback.append(offset)

    monkeypatch.setattr(storage, "start_writeback", start_writeback)
    writes = spy_pwrite(monkeypatch)
    data = content(300_000)
    store(spool, data, tmp_path / "BIG", piece=50_000)
    assert (tmp_path / "BIG").read_bytes() == data
    assert writes == []
    assert writeback == [0, 100_000, 200_000]
    assert direct_threads() == []


def test_the_writer_needs_an_aligned_start(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        with pytest.raises(ValueError, match="multiple of 4096"):
            directio.DirectWriter(fd, 100, b"")
    finally:
        os.close(fd)
