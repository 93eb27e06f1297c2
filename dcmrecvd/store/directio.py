"""The rest of a large object written with O_DIRECT, from two aligned buffers.

Through the page cache, the thread receiving an association copies every byte twice
in the kernel (socket to user, user to page cache) and starts the write-back that
the final fsync waits for; for a 1 GiB object that thread, not the disk, was the
limit. Here it only copies each received fragment into a page-aligned buffer: when
the buffer is full a writer thread writes it to the file with O_DIRECT (the device
reads it straight from the buffer) while the receiving thread fills the other.
The final fsync still makes the object durable (O_DIRECT flushes neither the
device's cache nor the file's metadata).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress

# Offsets and lengths of O_DIRECT writes are multiples of this; 4096 satisfies disks
# with 512-byte and with 4 KiB sectors. Where a device wants more, its first write
# fails with EINVAL and the object goes on through the page cache.
ALIGN = 4096
CHUNK = 2 * 1024 * 1024  # each of the two buffers


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        offset += written
        data = data[written:]


class DirectWriter:
    """Appends to `fd` from `offset` on; `head` is what the file holds from there.

    The file must be open for reading and writing. Errors of the writer thread are
    raised by the next add() or by finish().
    """

    def __init__(self, fd: int, offset: int, head: bytes) -> None:
        if offset % ALIGN:
            raise ValueError(f"offset {offset} is not a multiple of {ALIGN}")
        self._fd = fd
        self._offset = offset  # where the buffer being filled goes in the file
        # Anonymous maps are page-aligned; each view keeps its map alive.
        self._views = (memoryview(mmap.mmap(-1, CHUNK)), memoryview(mmap.mmap(-1, CHUNK)))
        self._flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, self._flags | os.O_DIRECT)  # EINVAL where refused
        self._direct = True
        self._current = 0
        self._filled = 0
        self._pending: Future[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dcmrecvd-direct")
        self.add(memoryview(head))

    @classmethod
    def start(cls, fd: int, size: int) -> DirectWriter | None:
        """Take over a file of `size` bytes written so far; None where O_DIRECT is refused."""
        aligned = size - size % ALIGN
        try:
            head = os.pread(fd, size - aligned, aligned)
            return cls(fd, aligned, head)
        except OSError:
            return None

    def add(self, data: memoryview) -> None:
        while data:
            count = min(len(data), CHUNK - self._filled)
            self._views[self._current][self._filled : self._filled + count] = data[:count]
            self._filled += count
            data = data[count:]
            if self._filled == CHUNK:
                self._submit(CHUNK)

    def finish(self) -> None:
        """Write what the buffers still hold; the file is then as if written plainly."""
        filled = self._filled
        aligned = filled - filled % ALIGN
        tail = bytes(self._views[self._current][aligned:filled])
        if aligned:
            self._submit(aligned)
        self._wait()
        self._plain()
        _write_all(self._fd, memoryview(tail), self._offset)  # not a multiple of ALIGN

    def close(self) -> None:
        """Wait for the writer thread; never raises.

        The buffers go with the last reference to them (an error's traceback may
        still hold one, so they are not closed here).
        """
        with suppress(Exception):  # already raised by add() or finish(), or moot
            self._wait()
        self._thread.shutdown(wait=True)

    def _submit(self, length: int) -> None:
        self._wait()  # the other buffer's write, so that it can be filled next
        view = self._views[self._current][:length]
        try:
            self._pending = self._thread.submit(self._write, view, self._offset)
        except RuntimeError as exc:  # no thread could be started
            raise OSError(errno.EAGAIN, f"cannot start a writer thread: {exc}") from exc
        self._offset += length
        self._current ^= 1
        self._filled = 0

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _write(self, data: memoryview, offset: int) -> None:
        try:
            _write_all(self._fd, data, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL or not self._direct:
                raise
            # The device's alignment is stricter than ALIGN: the page cache from here.
            self._plain()
            _write_all(self._fd, data, offset)

    def _plain(self) -> None:
        if self._direct:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags)
            self._direct = False
