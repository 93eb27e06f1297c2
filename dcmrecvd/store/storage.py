"""Durable writes: a hidden, locked temporary file, fsync, atomic rename or link.

A received object streams into a temporary file in the spool directory
`<output directory>/.dcmrecvd-spool/` and appears under its final name only once it
is complete and on disk; every failure leaves neither a partial final file nor the
temporary file. A temporary file's name carries the node and the process that write it,
and the file is flock()ed by that process, so `sweep` removes exactly the files of this
node's processes that died (the kernel drops the lock), never those of a live receiver,
nor any of another node sharing the output directory, whose locks this node may not see
(NFS without lock service). Each temporary file, and so the object it becomes, is marked
with the node's name in an extended attribute, so that a node's index leaves the other
nodes' objects alone. docs/storage.md and docs/scale-out.md have the whole scheme.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR

from dcmrecvd.store.directio import DirectWriter

LOG = logging.getLogger("dcmrecv")

SPOOL_DIRECTORY = ".dcmrecvd-spool"
TEMP_PREFIX = ".dcmrecvd-"
TEMP_SUFFIX = ".tmp"
# "<prefix><node>.<pid>.<16 hex digits><suffix>"; before node names (no sharing then),
# "<prefix><16 hex digits><suffix>". Node names may hold dots: the fields after the node
# are found from the end.
_TEMP_NAME = re.compile(
    rf"{re.escape(TEMP_PREFIX)}(?:(?P<node>.+)\.[0-9]+\.)?[0-9a-f]{{16}}"
    rf"{re.escape(TEMP_SUFFIX)}"
)

# The node that stored an object, on its inode: link() and rename() keep it, and the
# fsync of commit makes it durable with the inode (ext4 and XFS journal the change).
NODE_ATTRIBUTE = "user.dcmrecvd.node"

# The fsync in commit serialises the disk write-back of the whole object after the
# transfer (about 0.5 s per GiB, on top of the receive). Past DIRECT_FROM bytes the
# rest of an object is written with O_DIRECT (directio.py), which leaves nothing to
# write back; where the file system refuses O_DIRECT, a TempFile instead starts the
# write-back of every WRITEBACK_BYTES as they are written, and the final fsync has
# only the tail left. Smaller objects make no extra system call.
WRITEBACK_BYTES = 8 * 1024 * 1024
DIRECT_FROM = WRITEBACK_BYTES
SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start the write-out, do not wait for it


def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None  # not Linux, or no such symbol in this libc
    function.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _libc_sync_file_range()


class StorageError(Exception):
    """A directory or file could not be written; the text is DCMTK's log message."""


class NameTaken(Exception):
    """A commit without replace found the final name already taken."""


def reason(exc: OSError) -> str:
    """The strerror text DCMTK prints for a failed system call."""
    return exc.strerror or str(exc)


def spool_directory(output_dir: str) -> Path:
    """Where the temporary files of objects stored under `output_dir` are written."""
    return Path(output_dir or ".") / SPOOL_DIRECTORY


@dataclass(frozen=True)
class Spool:
    """A spool directory as one node uses it: where its temporary files go, and the node
    name (nodename.py) they carry."""

    directory: Path
    node: str


def temp_name(node: str, pid: int, token: str) -> str:
    """The name of a temporary file of process `pid` on `node`; `token` makes it unique."""
    return f"{TEMP_PREFIX}{node}.{pid}.{token}{TEMP_SUFFIX}"


def temp_node(name: str) -> str | None:
    """The node whose temporary file `name` is; "" for the format before node names, and
    None when `name` is not a temporary file's."""
    match = _TEMP_NAME.fullmatch(name)
    if match is None:
        return None
    return match["node"] or ""


def sweepable(name: str, node: str) -> bool:
    """Whether the sweep of `node` may take the file `name` (once no process holds it):
    its own temporary files, and those of versions that named no node (they never shared
    a spool). Another node's never: its lock may not be visible here."""
    return temp_node(name) in ("", node)


# Directories made durable by this process, by path: the (st_dev, st_ino) they had then,
# so that one deleted and made anew by another process under a new inode number is made
# durable again. Entries are facts about the disk, so threads may race on them (at worst
# both fsync) and forked workers may inherit them.
_durable: dict[str, tuple[int, int]] = {}


def ensure_directory(directory: Path) -> None:
    """Create `directory` and its parents as needed (DCMTK recreates a deleted -od too).

    On return every level of `directory` is durable in its parent.
    """
    try:
        st = os.stat(directory)
    except OSError:
        pass
    else:
        # The usual case, in one stat(): a directory this process already made durable.
        if _durable.get(str(directory)) == (st.st_dev, st.st_ino) and S_ISDIR(st.st_mode):
            return
    try:
        make_directory(directory)
    except OSError as exc:
        raise StorageError(
            f"cannot create directory for received object: {directory}: "
            f"Cannot create directory: {reason(exc)}"
        ) from exc


def make_directory(directory: Path) -> None:
    """Create `directory` and its parents as needed, each level fsynced into its parent.

    A level that already existed is fsynced into its parent too, once per process: another
    receiver may have just created it (EEXIST) and not fsynced its parent yet. The walk up
    stops at a level this process made durable before, or at the root of the file system.
    Raises OSError with the errno of the failed call.
    """
    level = os.path.abspath(directory)
    missing = []  # the deepest first
    while True:
        try:
            st = os.stat(level)
        except FileNotFoundError:
            missing.append(level)
            level = os.path.dirname(level)
        else:
            break
    for new in reversed(missing):
        with suppress(FileExistsError):  # another receiver made it at the same time
            os.mkdir(new)
    if missing:
        level = missing[0]
        st = os.stat(level)
    if not S_ISDIR(st.st_mode):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(directory))
    made = {str(directory): (st.st_dev, st.st_ino)}
    # A missing level is new even if its inode number is in _durable: numbers are reused.
    while level in missing or _durable.get(level) != (st.st_dev, st.st_ino):
        parent = os.path.dirname(level)
        parent_st = os.stat(parent)
        if parent == level or parent_st.st_dev != st.st_dev:
            break  # the root of a file system: its entry is not on this one
        fsync_directory(Path(parent))
        made[level] = (st.st_dev, st.st_ino)
        level, st = parent, parent_st
    # Only now: a thread seeing a level durable must not find the levels above still to do.
    _durable.update(made)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing `length` bytes of `fd` from `offset` to disk, without waiting.

    Only a hint (sync_file_range, not in os): OSError where it is missing (ENOSYS)
    or the file system refuses it (EINVAL, ESPIPE, ...).
    """
    if _SYNC_FILE_RANGE is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    if _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


# Spool directories whose file system refused NODE_ATTRIBUTE, so that this process tries
# and warns once per directory; forked workers inherit it (a fact about the disk).
_unmarkable: set[Path] = set()


def _mark(spool: Spool, fd: int) -> None:
    """Set NODE_ATTRIBUTE of the file `fd` to the node's name; where the file system has
    no user extended attributes, warn once and go on without: the object is stored
    all the same, and the node's objects are unmarked, as before marks existed."""
    if spool.directory in _unmarkable:
        return
    try:
        os.setxattr(fd, NODE_ATTRIBUTE, os.fsencode(spool.node))
    except OSError as exc:
        # Never a reason to refuse an object: without the mark it is stored as before
        # marks existed (a write or fsync error that matters fails the store anyway).
        _unmarkable.add(spool.directory)
        LOG.warning(
            "cannot mark objects in %s with their node (%s): objects stored there do not"
            " carry node %s's name, and other nodes sharing the directory take them for"
            " their own at their start (docs/scale-out.md)",
            spool.directory.parent,
            reason(exc),
            spool.node,
        )


def stored_by(path: str) -> str | None:
    """The node named in NODE_ATTRIBUTE of the file `path` (a symlink is not followed);
    None when it has none (ENODATA), its file system keeps none, or it cannot be read:
    all of them count as unmarked."""
    try:
        return os.fsdecode(os.getxattr(path, NODE_ATTRIBUTE, follow_symlinks=False))
    except OSError:
        return None


# Tries at a locked temporary file that a concurrent sweep has not taken away.
_CREATE_ATTEMPTS = 3


def _create(spool: Spool) -> tuple[Path, int]:
    """A new temporary file in `spool`, flock()ed, still under its name.

    Between the open and the flock another process's `sweep` sees an unlocked file: it
    may lock it first (our flock fails) or remove it (our lock holds a nameless inode,
    and commit would fail). Once we hold the lock no sweep removes it, so a file that is
    still ours under its name after the flock stays ours; otherwise try a new name.
    """
    for attempt in range(_CREATE_ATTEMPTS):
        path = spool.directory / temp_name(spool.node, os.getpid(), secrets.token_hex(8))
        # Readable too: directio reads back the last partial block it takes over.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return path, fd
        except OSError:
            if attempt == _CREATE_ATTEMPTS - 1:
                os.close(fd)
                raise
        os.close(fd)
    raise OSError(errno.EAGAIN, "temporary file removed by a concurrent sweep")


class TempFile:
    """One object's temporary file: write, then commit under a final name or discard.

    Raises OSError on every failed system call; the caller decides the status.
    """

    def __init__(self, spool: Spool) -> None:
        try:
            self.path, self._fd = _create(spool)
        except FileNotFoundError:
            make_directory(spool.directory)
            self.path, self._fd = _create(spool)
        self._open = True
        self._committed = False
        # Spent making it durable (O_DIRECT's last writes, fsync of file and directory).
        self.fsync_seconds = 0.0
        self.size = 0
        # Where the bytes whose write-back is not started yet begin; None once
        # start_writeback failed for this file (the final fsync alone makes it durable).
        self._writeback_from: int | None = 0
        self._direct: DirectWriter | None = None
        self._direct_tried = False
        try:
            _mark(spool, self._fd)  # before any data, so no final name lacks it
        except OSError:
            self.discard()
            raise

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if self._direct is not None:
            self._direct.add(view)
            self.size += len(view)
            return
        while view:
            written = os.write(self._fd, view)
            self.size += written
            view = view[written:]
        start = self._writeback_from
        if start is not None and self.size - start >= WRITEBACK_BYTES:
            try:
                start_writeback(self._fd, start, self.size - start)
            except OSError:
                self._writeback_from = None
            else:
                self._writeback_from = self.size
        if not self._direct_tried and self.size >= DIRECT_FROM:
            self._direct_tried = True
            self._direct = DirectWriter.start(self._fd, self.size)

    def commit(self, final: Path, *, replace: bool, durable: bool = True) -> None:
        """Make the file `final`: replacing what is there, or NameTaken if not `replace`.

        With `durable` (always, except when benchmarking) the data and the new
        directory entry are on disk when this returns. On any exception the
        temporary file is still there; the caller discards it.
        """
        started = time.monotonic()
        if self._direct is not None:
            direct, self._direct = self._direct, None
            try:
                direct.finish()
            finally:
                direct.close()
        if durable:
            os.fsync(self._fd)
        self.fsync_seconds += time.monotonic() - started
        if replace:
            try:
                os.replace(self.path, final)
            except FileNotFoundError:
                # NFS: a retransmitted RENAME whose first transmission did it finds no
                # source; the name has our file then.
                if not self._is(final):
                    raise
        else:
            # link() claims the name atomically: concurrent writers never replace
            # each other, and the first object stays.
            try:
                os.link(self.path, final)
            except FileExistsError as exc:
                # NFS: LINK is not idempotent, and a retransmitted one that the first
                # transmission did answers EEXIST; the name has our file then.
                if not self._is(final):
                    raise NameTaken(str(final)) from exc
            # The object is in place; a temporary name left over is swept at next start.
            with suppress(OSError):
                os.unlink(self.path)
        self._committed = True
        self._close()
        if durable:
            started = time.monotonic()
            fsync_directory(final.parent)
            self.fsync_seconds += time.monotonic() - started

    def _is(self, path: Path) -> bool:
        """Whether `path` names this temporary file's inode."""
        try:
            return os.path.samestat(os.lstat(path), os.fstat(self._fd))
        except OSError:
            return False

    def discard(self) -> None:
        """Remove the temporary file unless it was committed; never raises."""
        self._close()
        if self._committed:
            return
        with suppress(OSError):
            self.path.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._direct is not None:
            self._direct.close()  # its thread may still be writing to the file
            self._direct = None
        if self._open:
            self._open = False
            with suppress(OSError):
                os.close(self._fd)


def sweep(spool: Spool) -> list[Path]:
    """Remove the node's temporary files that no live process holds (left by a killed
    one); those of other nodes stay, whatever their locks."""
    removed: list[Path] = []
    try:
        entries = list(spool.directory.iterdir())
    except FileNotFoundError:
        return removed
    for path in entries:
        if not sweepable(path.name, spool.node):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live receiver is writing it
        else:
            with suppress(OSError):
                path.unlink()
                removed.append(path)
        finally:
            os.close(fd)
    return removed
