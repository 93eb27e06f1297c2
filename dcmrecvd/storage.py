"""Durable writes: a hidden temporary file beside the target, fsync, atomic rename.

A received object appears under its final name only once it is complete and on
disk; a failure leaves neither a partial final file nor the temporary file.
Temporary files are named `.dcmrecvd-<random>.tmp` in the target directory, so
consumers that skip dot files never see them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

TEMP_PREFIX = ".dcmrecvd-"
TEMP_SUFFIX = ".tmp"


class StorageError(Exception):
    """A directory or file could not be written; the text is DCMTK's log message."""


class NameTaken(Exception):
    """write_atomic(replace=False) found the final name already taken."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def ensure_directory(directory: Path) -> None:
    """Create `directory` and its parents as needed (DCMTK recreates a deleted -od too)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create directory for received object: {directory}: "
            f"Cannot create directory: {_reason(exc)}"
        ) from exc
    if not directory.is_dir():
        raise StorageError(
            f"cannot create directory for received object: {directory}: "
            "Cannot create directory: Not a directory"
        )


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            written = os.write(fd, view)
            view = view[written:]


def write_atomic(path: Path, parts: Sequence[bytes | memoryview], *, replace: bool = True) -> None:
    """Write `parts` to `path` so that it is either absent, the old file, or complete.

    With replace=False an existing `path` is left alone and NameTaken raised: a link
    claims the name atomically, so concurrent writers never overwrite each other.
    """
    temp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            _write_all(fd, parts)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(temp, path)
        else:
            try:
                os.link(temp, path)
            finally:
                temp.unlink()
        _fsync_directory(path.parent)
    except FileExistsError as exc:
        raise NameTaken(str(path)) from exc
    except OSError as exc:
        with suppress(OSError):
            temp.unlink(missing_ok=True)
        raise StorageError(f"cannot store received object: {path}: {_reason(exc)}") from exc
