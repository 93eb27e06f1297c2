"""Give a complete temporary file its final name, under the duplicate policy.

Every outcome is atomic: a concurrent association storing the same instance sees the
old file or a complete new one, never a torn file. Unique naming schemes (+fu, +fsu)
never replace a file: a clash takes the scheme's next name.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dcmrecvd.settings import DuplicatePolicy
from dcmrecvd.store import naming, storage

# keep-both: "<name>_<n><extension>"; "_" never occurs in a UID, so the variant cannot
# be another instance's default name.
_VARIANT_SEPARATOR = "_"


class Outcome(enum.Enum):
    STORED = "stored"  # under a name that was free
    REPLACED = "replaced"  # overwrite: the existing file was replaced
    KEPT_EXISTING = "kept-existing"  # keep-first: the new object was dropped
    STORED_AS_VARIANT = "stored-as-variant"  # keep-both: under a unique variant
    REJECTED = "rejected"  # reject: the new object was dropped


@dataclass(frozen=True)
class Placed:
    outcome: Outcome
    path: str  # where the object is, or the existing file it clashed with
    clash: str = ""  # keep-both: the name that was taken


class PlacementError(Exception):
    """The commit to `path` failed with `error` (the temporary file is discarded)."""

    def __init__(self, path: str, error: OSError) -> None:
        super().__init__(f"{path}: {storage.reason(error)}")
        self.path = path
        self.error = error


def variant(name: str, extension_length: int, n: int) -> str:
    """The n-th keep-both variant of `name`, whose last `extension_length` chars are -fe."""
    stem, ext = name[: len(name) - extension_length], name[len(name) - extension_length :]
    return f"{stem}{_VARIANT_SEPARATOR}{n}{ext}"


def place(
    temp: storage.TempFile,
    directory: str,
    next_name: Callable[[], str],
    *,
    unique: bool,
    policy: DuplicatePolicy,
    extension_length: int,
    durable: bool,
    join: Callable[[str, str], str],
) -> Placed:
    """Commit `temp` under a name from `next_name` (called again only by unique schemes).

    `next_name` raises naming.NamingError; a failed commit, or keep-first's fsync of the
    kept file's directory, raises PlacementError. The temporary file is gone afterwards
    unless NamingError was raised (caller discards).
    """
    for _ in range(naming.MAX_TRIES if unique else 1):
        path = join(directory, next_name())
        if unique:
            if _claim(temp, path, durable):
                return Placed(Outcome.STORED, path)
            continue
        if policy is DuplicatePolicy.OVERWRITE:
            existed = os.path.lexists(path)
            _commit(temp, path, replace=True, durable=durable)
            return Placed(Outcome.REPLACED if existed else Outcome.STORED, path)
        if _claim(temp, path, durable):
            return Placed(Outcome.STORED, path)
        if policy is DuplicatePolicy.KEEP_BOTH:
            name = path.rsplit("/", 1)[-1]
            for n in range(1, naming.MAX_TRIES + 1):
                other = join(directory, variant(name, extension_length, n))
                if _claim(temp, other, durable):
                    return Placed(Outcome.STORED_AS_VARIANT, other, clash=path)
            break
        temp.discard()
        if policy is DuplicatePolicy.REJECT:
            return Placed(Outcome.REJECTED, path)
        if durable:
            # Its Success speaks for the file there, which another receiver (another node,
            # on shared storage) may have linked and not yet made durable in the directory.
            try:
                storage.fsync_directory(Path(path).parent)
            except OSError as exc:
                raise PlacementError(path, exc) from exc
        return Placed(Outcome.KEPT_EXISTING, path)
    temp.discard()
    raise naming.NamingError(naming.COULD_NOT_GENERATE_FILENAME)


def _claim(temp: storage.TempFile, path: str, durable: bool) -> bool:
    try:
        _commit(temp, path, replace=False, durable=durable)
    except storage.NameTaken:
        return False
    return True


def _commit(temp: storage.TempFile, path: str, *, replace: bool, durable: bool) -> None:
    try:
        temp.commit(Path(path), replace=replace, durable=durable)
    except OSError as exc:
        temp.discard()
        raise PlacementError(path, exc) from exc
