"""Refused objects kept for inspection, bounded in total size.

A refused object (a malformed dataset, SOP UIDs that differ from the request's) is
answered with a failure status whatever happens here; keeping its bytes only helps an
administrator find out what the sender sent. Each kept object is a Part 10 file as it
would have been stored (meta header and the received dataset), named
`<UTC time>-<random>@<node>.dcm`, with `<same>.txt` beside it giving the reason and the
request's UIDs; the node name (nodename.py) keeps apart the files of nodes sharing the
directory. When the directory would grow past its limit, the oldest pairs go
first; an object larger than the whole limit is not kept. The directory is never under
the output directory (config/inifile.py checks), so nothing here is ever taken for a stored
object.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import shutil
import threading
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

from dcmrecvd.store import storage

LOG = logging.getLogger("dcmrecv")

SUFFIX = ".dcm"
NOTE_SUFFIX = ".txt"
LOCK_NAME = ".lock"
_PARTIAL_PREFIX = ".partial-"
# Never in a node name: what follows the last one in a file name is the node's.
_NODE_SEPARATOR = "@"


class Quarantine:
    """One quarantine directory shared by every thread and worker process."""

    def __init__(self, directory: Path, max_bytes: int, node: str) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.node = node
        # flock() excludes other processes; this lock the threads of this one, which
        # share the lock file's open description.
        self._lock = threading.Lock()

    def keep(self, temp: storage.TempFile, note: str) -> Path | None:
        """Move `temp`'s bytes here with `note`; the path, or None if not kept (logged)."""
        size = temp.size
        if size + len(note) > self.max_bytes:
            LOG.warning(
                "refused object not quarantined: %d bytes exceed quarantine-size %d",
                size,
                self.max_bytes,
            )
            return None
        stem = (
            f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(4)}"
            f"{_NODE_SEPARATOR}{self.node}"
        )
        target = self.directory / f"{stem}{SUFFIX}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self._lock, _locked(self.directory / LOCK_NAME):
                self._make_room(size + len(note))
                (self.directory / f"{stem}{NOTE_SUFFIX}").write_text(note, encoding="utf-8")
                _move(temp, target)
        except OSError as exc:
            LOG.warning(
                "refused object not quarantined: %s: %s", self.directory, storage.reason(exc)
            )
            return None
        return target

    def _make_room(self, needed: int) -> None:
        # An object and its note share a stem and go together.
        stems: dict[str, list[tuple[str, int]]] = {}
        total = 0
        for entry in os.scandir(self.directory):
            if entry.name.startswith(_PARTIAL_PREFIX):
                # This node's was left by a copy that died: copies run only under the lock
                # held now. Another node's may be in progress: its lock may not be seen
                # here (NFS without lock service).
                if written_by(entry.name, self.node):
                    with suppress(FileNotFoundError):
                        os.unlink(entry.path)
                continue
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            length = entry.stat(follow_symlinks=False).st_size
            stems.setdefault(entry.name.rsplit(".", 1)[0], []).append((entry.name, length))
            total += length
        # The names start with their UTC time: sorted, the oldest come first.
        for stem in sorted(stems):
            if total + needed <= self.max_bytes:
                break
            for name, length in stems[stem]:
                with suppress(FileNotFoundError):
                    (self.directory / name).unlink()
                total -= length


def written_by(name: str, node: str) -> bool:
    """Whether the file `name` was written by `node`, or by a version that named no
    node (which never shared a quarantine)."""
    _, separator, after = name.rpartition(_NODE_SEPARATOR)
    return not separator or after == f"{node}{SUFFIX}"


class _locked:
    """An exclusive flock() on `path` (created if missing) for a with-block."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> None:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        os.close(self._fd)


def _move(temp: storage.TempFile, target: Path) -> None:
    """Give `temp` the name `target`: a link on the same file system, else a copy."""
    try:
        temp.commit(target, replace=False, durable=False)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    # Another file system: copy under a hidden name, so `target` appears whole.
    partial = target.with_name(f"{_PARTIAL_PREFIX}{target.name}")
    try:
        shutil.copyfile(temp.path, partial)
        partial.rename(target)
    except OSError:
        with suppress(OSError):
            partial.unlink()
        raise
