"""A FUSE file system for tests that forgets, at a power cut, everything not fsynced.

It models the strictest disk POSIX allows: the data of a file is durable only once that
file is fsynced (fsync or fdatasync), and a directory entry (create, mkdir, rename, link,
unlink, rmdir) only once its parent directory is fsynced (open the directory, fsync). The
file system lives in memory (`Model`, pure); the durable view is what a power cut at that
moment would leave: entries never fsynced into their parent vanish with everything under
them, files keep only the data of their last fsync.

`python -m tests.forgetfs MOUNTPOINT` serves it in the foreground until unmounted. For
each line `cut VIEW` on its standard input it writes the durable view into the new
directory VIEW, on another file system, and answers `cut` on its standard output.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = 1

# The durable view: names to file data or to a directory's own view.
Tree = dict[str, "Tree | bytes"]


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@dataclass
class Node:
    """A file or a directory: what the running system sees, and what the disk holds."""

    directory: bool
    mode: int
    data: bytearray = field(default_factory=bytearray)
    durable_data: bytes = b""
    entries: dict[str, int] = field(default_factory=dict)
    durable_entries: dict[str, int] = field(default_factory=dict)


class Model:
    """The file system by inode number; paths are absolute, as FUSE gives them.

    Raises OSError with the errno a real file system returns. Inodes are never freed:
    a durable entry may still name one that the running system removed.
    """

    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {ROOT: Node(directory=True, mode=0o755)}
        self._next = ROOT + 1

    def lookup(self, path: str) -> int:
        ino = ROOT
        for name in _names(path):
            node = self.nodes[ino]
            if not node.directory:
                raise _error(errno.ENOTDIR)
            if name not in node.entries:
                raise _error(errno.ENOENT)
            ino = node.entries[name]
        return ino

    def node(self, path: str) -> Node:
        return self.nodes[self.lookup(path)]

    def mkdir(self, path: str, mode: int) -> None:
        self._add(path, Node(directory=True, mode=mode))

    def create(self, path: str, mode: int) -> int:
        return self._add(path, Node(directory=False, mode=mode))

    def unlink(self, path: str) -> None:
        parent, name = self._parent(path)
        if self.nodes[self._entry(parent, name)].directory:
            raise _error(errno.EISDIR)
        del parent.entries[name]

    def rmdir(self, path: str) -> None:
        parent, name = self._parent(path)
        node = self.nodes[self._entry(parent, name)]
        if not node.directory:
            raise _error(errno.ENOTDIR)
        if node.entries:
            raise _error(errno.ENOTEMPTY)
        del parent.entries[name]

    def rename(self, old: str, new: str) -> None:
        old_parent, old_name = self._parent(old)
        ino = self._entry(old_parent, old_name)
        new_parent, new_name = self._parent(new)
        replaced = new_parent.entries.get(new_name)
        if replaced == ino:
            return  # two names of one file: rename(2) does nothing
        if replaced is not None:
            target = self.nodes[replaced]
            if target.directory != self.nodes[ino].directory:
                raise _error(errno.EISDIR if target.directory else errno.ENOTDIR)
            if target.entries:
                raise _error(errno.ENOTEMPTY)
        del old_parent.entries[old_name]
        new_parent.entries[new_name] = ino

    def link(self, existing: str, new: str) -> None:
        ino = self.lookup(existing)
        if self.nodes[ino].directory:
            raise _error(errno.EPERM)
        parent, name = self._parent(new)
        if name in parent.entries:
            raise _error(errno.EEXIST)
        parent.entries[name] = ino

    def write(self, ino: int, offset: int, data: bytes) -> int:
        content = self.nodes[ino].data
        if offset > len(content):
            content.extend(bytes(offset - len(content)))
        content[offset : offset + len(data)] = data
        return len(data)

    def truncate(self, ino: int, length: int) -> None:
        content = self.nodes[ino].data
        if length < len(content):
            del content[length:]
        else:
            content.extend(bytes(length - len(content)))

    def fsync(self, ino: int) -> None:
        """What fsync makes durable: a file's data, or a directory's entries."""
        node = self.nodes[ino]
        if node.directory:
            node.durable_entries = dict(node.entries)
        else:
            node.durable_data = bytes(node.data)

    def durable_view(self) -> Tree:
        """The tree a power cut now would leave."""
        return self._view(ROOT, {ROOT})

    def _view(self, ino: int, above: set[int]) -> Tree:
        tree: Tree = {}
        for name, child in self.nodes[ino].durable_entries.items():
            node = self.nodes[child]
            if not node.directory:
                tree[name] = node.durable_data
            elif child not in above:  # a directory renamed under itself: a loop, not a tree
                tree[name] = self._view(child, above | {child})
        return tree

    def _add(self, path: str, node: Node) -> int:
        parent, name = self._parent(path)
        if name in parent.entries:
            raise _error(errno.EEXIST)
        ino = self._next
        self._next += 1
        self.nodes[ino] = node
        parent.entries[name] = ino
        return ino

    def _parent(self, path: str) -> tuple[Node, str]:
        names = _names(path)
        if not names:
            raise _error(errno.EBUSY)  # the root has no entry to change
        parent = self.node("/" + "/".join(names[:-1]))
        if not parent.directory:
            raise _error(errno.ENOTDIR)
        return parent, names[-1]

    def _entry(self, parent: Node, name: str) -> int:
        if name not in parent.entries:
            raise _error(errno.ENOENT)
        return parent.entries[name]


def _names(path: str) -> list[str]:
    return [name for name in path.split("/") if name]


def write_view(tree: Tree, directory: Path) -> None:
    """Make `tree` real under the new directory `directory`."""
    directory.mkdir()
    for name, entry in tree.items():
        if isinstance(entry, bytes):
            (directory / name).write_bytes(entry)
        else:
            write_view(entry, directory / name)


class Operations:
    """fusepy's operations on a Model, one at a time under `lock` (shared with the cuts).

    File handles are inode numbers, so that an open file stays reachable once its name
    is gone (hard_remove). Operations not defined here are not registered with libfuse:
    the kernel answers them itself (flock, POSIX locks) or fails them with ENOSYS.
    """

    use_ns = True  # fusepy: times in nanoseconds

    def __init__(self, model: Model, lock: threading.Lock) -> None:
        # Private names: fusepy registers every attribute named like an operation ("lock").
        self._model = model
        self._lock = lock
        self._started = time.time_ns()

    def __call__(self, op: str, *args: Any) -> Any:
        with self._lock:
            return getattr(self, op)(*args)

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, int]:
        ino = fh if path is None and fh is not None else self._model.lookup(path or "/")
        node = self._model.nodes[ino]
        kind = stat.S_IFDIR if node.directory else stat.S_IFREG
        return {
            "st_ino": ino,
            "st_mode": kind | node.mode,
            "st_nlink": 2 if node.directory else 1,
            "st_size": len(node.data),
            "st_atime": self._started,
            "st_mtime": self._started,
            "st_ctime": self._started,
        }

    def access(self, path: str, amode: int) -> None:
        self._model.lookup(path)

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *self._model.nodes[fh].entries]

    def opendir(self, path: str) -> int:
        ino = self._model.lookup(path)
        if not self._model.nodes[ino].directory:
            raise _error(errno.ENOTDIR)
        return ino

    def releasedir(self, path: str | None, fh: int) -> None:
        pass

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> None:
        self._model.fsync(fh)

    def mkdir(self, path: str, mode: int) -> None:
        self._model.mkdir(path, mode & 0o7777)

    def rmdir(self, path: str) -> None:
        self._model.rmdir(path)

    def create(self, path: str, mode: int) -> int:
        return self._model.create(path, mode & 0o7777)

    def open(self, path: str, flags: int) -> int:
        ino = self._model.lookup(path)
        if flags & os.O_TRUNC:
            self._model.truncate(ino, 0)
        return ino

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return bytes(self._model.nodes[fh].data[offset : offset + size])

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        return self._model.write(fh, offset, data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        self._model.truncate(fh if fh is not None else self._model.lookup(path or "/"), length)

    def flush(self, path: str | None, fh: int) -> None:
        pass  # close() makes nothing durable

    def release(self, path: str | None, fh: int) -> None:
        pass

    def fsync(self, path: str | None, datasync: int, fh: int) -> None:
        self._model.fsync(fh)

    def unlink(self, path: str) -> None:
        self._model.unlink(path)

    def rename(self, old: str, new: str) -> None:
        self._model.rename(old, new)

    def link(self, target: str, source: str) -> None:
        self._model.link(source, target)  # fusepy: `target` is the new name

    def chmod(self, path: str, mode: int) -> None:
        self._model.node(path).mode = mode & 0o7777

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._model.lookup(path)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        self._model.lookup(path)

    def statfs(self, path: str) -> dict[str, int]:
        blocks = 1 << 24
        return {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": blocks,
            "f_bfree": blocks,
            "f_bavail": blocks,
            "f_files": blocks,
            "f_ffree": blocks,
            "f_namemax": 255,
        }


def _serve_cuts(model: Model, lock: threading.Lock) -> None:
    for line in sys.stdin:
        command, _, view = line.rstrip("\n").partition(" ")
        if command != "cut" or not view:
            print(f"forgetfs: unknown command {line!r}", file=sys.stderr, flush=True)
            continue
        with lock:
            tree = model.durable_view()
        write_view(tree, Path(view))
        print("cut", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.forgetfs MOUNTPOINT", file=sys.stderr)
        return 2
    # Imported here: importing fusepy loads libfuse, which the model's tests do not need.
    from fuse import FUSE  # noqa: PLC0415

    model = Model()
    lock = threading.Lock()
    threading.Thread(target=_serve_cuts, args=(model, lock), daemon=True).start()
    FUSE(
        Operations(model, lock),
        argv[0],
        foreground=True,
        nothreads=True,
        use_ino=True,  # st_ino is the Model's: dcmrecvd keys its directory cache on it
        hard_remove=True,  # no .fuse_hidden files for names removed while open
        big_writes=True,
        fsname="forgetfs",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
