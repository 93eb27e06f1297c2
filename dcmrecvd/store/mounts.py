"""Which kind of file system a path is on, as the kernel's mount table says.

The index is an SQLite file, and SQLite's locking is not safe on NFS; the start-up
warns when the index is there (objectstore.warn_if_index_on_nfs). The table is
/proc/self/mountinfo (proc(5)): this process's view, bind mounts and containers
included. Reading it is the one I/O here; the rest is pure.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
# The kernel's names of the NFS client's file system types (v2/v3, and v4).
NFS_TYPES = frozenset({"nfs", "nfs4"})
# The field after the mount point's optional fields: then type, source, options.
_SEPARATOR = "-"
# The mount point field is the fifth; the optional fields start after the sixth.
_MOUNT_POINT = 4
_FIRST_OPTIONAL = 6
# The kernel writes space, tab, newline and backslash in a path as \ooo (octal).
_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda match: chr(int(match[1], 8)), field)


def _holds(mount_point: str, path: str) -> bool:
    return mount_point in ("/", path) or path.startswith(mount_point + "/")


def filesystem_type(mountinfo: str, path: str) -> str | None:
    """The type of the file system that `path` (absolute, symbolic links resolved) is on,
    by `mountinfo`, the text of /proc/self/mountinfo; None when no line holds it."""
    found: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index(_SEPARATOR, _FIRST_OPTIONAL)
        except ValueError:
            continue
        if separator + 1 >= len(fields):
            continue
        mount_point = _unescape(fields[_MOUNT_POINT])
        # The deepest mount point holds the path; at the same point, the later line was
        # mounted over the earlier.
        if _holds(mount_point, path) and (found is None or len(mount_point) >= found[0]):
            found = (len(mount_point), fields[separator + 1])
    return None if found is None else found[1]


def filesystem_type_of(path: Path) -> str | None:
    """The type of the file system `path` is on (its directory, when it does not exist
    yet); None when the mount table cannot be read."""
    try:
        table = os.fsdecode(MOUNTINFO.read_bytes())
    except OSError:
        return None
    return filesystem_type(table, os.path.realpath(path))
