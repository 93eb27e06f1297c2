"""A node's name: what tells apart the files of dcmrecvd nodes sharing one output directory.

Each node names its temporary files (store/storage.py) and quarantined objects
(store/quarantine.py) with it, and sweeps only what carries its own name; it marks its
stored objects with it, and its index leaves out those of other nodes. [receiver]
node-name sets it; by default it is the host name, made a safe file-name component.
docs/scale-out.md has the whole scheme.
"""

from __future__ import annotations

import re
import socket

# HOST_NAME_MAX on Linux: a host name always fits once made safe.
MAX_LENGTH = 64
# A file-name component on every file system: no '/', no hidden name, no '.' or '..'.
_NAME = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9_.-]{{0,{MAX_LENGTH - 1}}}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# What an empty host name (or one of dots only) becomes.
FALLBACK = "localhost"


def check(text: str) -> str:
    """`text` if it is a valid node name; ValueError with the reason if not."""
    if not _NAME.fullmatch(text):
        raise ValueError(
            f"not a node name (1 to {MAX_LENGTH} letters, digits, '-', '_' and '.',"
            f" not starting with '.'): '{text}'"
        )
    return text


def from_hostname(hostname: str) -> str:
    """`hostname` as a valid node name: every other character becomes '_'."""
    name = _UNSAFE.sub("_", hostname).lstrip(".")[:MAX_LENGTH]
    return name or FALLBACK


def resolve(configured: str | None) -> str:
    """The node name: the one configured, else this host's name."""
    return configured if configured is not None else from_hostname(socket.gethostname())
