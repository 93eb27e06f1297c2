"""File and directory names for received objects, as Debian's DCMTK 3.6.7 dcmrecv makes them.

Pure logic: the clock, the process start time and the file system are passed in, so that
every name is reproducible. Behaviour follows DcmStorageSCP::generateDirAndFilename,
OFFilenameCreator (+fsu), DcmDate (+ssd) and Debian's OFStandard::sanitizeFilename.

Names are not length-limited, as in DCMTK: a component over 255 bytes makes the later
write fail with ENAMETOOLONG, which the caller answers with 0xA700 like any write error
(under +fsu the failure shows up earlier, in ``exists``, and becomes a NamingError).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources

from pydicom.uid import generate_uid

from dcmrecvd.settings import NamingScheme, SubdirMode

# DCMTK's reason texts (OFCondition texts), logged after
# "cannot generate directory or file name for received object: ".
INVALID_SOP_CLASS_UID = "Invalid SOP Class UID"
INVALID_SOP_INSTANCE_UID = "Invalid SOP Instance UID"
COULD_NOT_GENERATE_FILENAME = "Could not generate filename"
COULD_NOT_GENERATE_DIRECTORY_NAME = "Could not generate directory name"

# Fallback prefixes for SOP classes missing from the table.
UNKNOWN_PREFIX = "UNKNOWN"
SHORT_UNKNOWN_PREFIX = "XX"  # +fsu only

# OFFilenameCreator gives up after this many existing candidates.
MAX_TRIES = 1024

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)

# Debian's sanitizeFilename: a byte table keeping these and turning every other byte
# (controls, DEL, >= 0x80, path separators, shell specials) into "_".
_KEEP = b" -.0123456789:@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_SANITISE = bytes(b if b in _KEEP else ord("_") for b in range(256))

# DcmDate: exactly YYYYMMDD, or the pre-3.0 YYYY.MM.DD; ASCII digits only.
_DA = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})|([0-9]{4})\.([0-9]{2})\.([0-9]{2})")


class NamingError(Exception):
    """No name could be made; args[0] is DCMTK's reason text.

    The caller answers 0xC000 in normal mode and aborts the association under +B.
    """


@cache
def _prefixes() -> dict[str, str]:
    table: dict[str, str] = {}
    text = (
        resources.files("dcmrecvd").joinpath("data/dcmtk-modality-prefixes.tsv").read_text("ascii")
    )
    for line in text.splitlines():
        if line and not line.startswith("#"):
            uid, prefix = line.split("\t")
            table.setdefault(uid, prefix)  # first match wins, as in DCMTK's linear search
    return table


def modality_prefix(sop_class_uid: str) -> str | None:
    """DCMTK 3.6.7's file-name prefix for a SOP class (exact match), or None if unlisted."""
    return _prefixes().get(sop_class_uid)


def subdirectory(
    mode: SubdirMode,
    series_date: str | None,
    vr: str | None,
    today: date,
    *,
    dataset_available: bool = True,
) -> str:
    """The subdirectory under the output directory: "", "data/YYYY/MM/DD" or "undef/YYYYMMDD".

    series_date is the text of Series Date (0008,0021), values separated by backslashes,
    or None if the element is missing; vr is its VR. today is the local date. Under +B
    there is no dataset (dataset_available=False) and DCMTK cannot make a series-date
    directory.
    """
    if mode is SubdirMode.NONE:
        return ""
    if not dataset_available:
        raise NamingError(COULD_NOT_GENERATE_DIRECTORY_NAME)
    if series_date is not None and vr == "DA":
        match = _DA.fullmatch(series_date.split("\\", 1)[0].rstrip(" "))
        if match is not None:
            year, month, day = (part for part in match.groups() if part is not None)
            # OFDate's only check: no per-month day limit, any year.
            if 1 <= int(month) <= 12 and 1 <= int(day) <= 31:
                return f"data/{year}/{month}/{day}"
    return f"undef/{today.year:04d}{today.month:02d}{today.day:02d}"


def _wire_bytes(text: str) -> bytes:
    """The bytes DCMTK would have seen for a UID: pydicom decodes UI values as latin-1."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _argv_bytes(text: str) -> bytes:
    """The bytes DCMTK would have seen for command-line text (os.fsdecode'd argv)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _sanitised(name: bytes) -> str:
    return name.translate(_SANITISE).decode("ascii")


def _random_pair(seed: int) -> tuple[int, int]:
    """Two steps of DCMTK's OFrand_r; returns (32-bit value, new seed).

    The first draw gives the upper 16 bits (GCC's evaluation order in the Debian build,
    confirmed by the observed names).
    """
    high = (seed * 1103515245 + 12345) % 0x80000000
    low = (high * 1103515245 + 12345) % 0x80000000
    return ((high & 0xFFFF) << 16) | (low & 0xFFFF), low


@dataclass(frozen=True)
class FileNamer:
    """Makes file names (not paths) under one naming scheme.

    start_time is the receiver's start in epoch seconds (+fsu's first 8 hex digits);
    new_uid makes +fu's fresh UIDs.
    """

    scheme: NamingScheme
    extension: str
    start_time: int
    new_uid: Callable[[], str] = generate_uid

    def name(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        *,
        now: datetime,
        exists: Callable[[str], bool],
    ) -> str:
        """The file name for one object.

        The UIDs are the C-STORE command's (the caller falls back to the dataset's when
        the command's is empty). now is the current local time; naive means local.
        exists(name) tells +fsu whether that name is taken in the target directory: True
        if it exists, False if not (ENOENT); any other OSError ends the search.
        Raises NamingError with DCMTK's reason.
        """
        ext = _argv_bytes(self.extension)
        if self.scheme is NamingScheme.DEFAULT:
            if not sop_class_uid:
                raise NamingError(INVALID_SOP_CLASS_UID)
            if not sop_instance_uid:
                raise NamingError(INVALID_SOP_INSTANCE_UID)
            prefix = modality_prefix(sop_class_uid) or UNKNOWN_PREFIX
            return _sanitised(f"{prefix}.".encode() + _wire_bytes(sop_instance_uid) + ext)
        if self.scheme is NamingScheme.UNIQUE:
            prefix = modality_prefix(sop_class_uid) or UNKNOWN_PREFIX
            return _sanitised(f"{prefix}.X.".encode() + _wire_bytes(self.new_uid()) + ext)
        if self.scheme is NamingScheme.SYSTEM_TIME:
            prefix = modality_prefix(sop_class_uid) or UNKNOWN_PREFIX
            stamp = (
                f"{now.year:04d}{now.month:02d}{now.day:02d}"
                f"{now.hour:02d}{now.minute:02d}{now.second:02d}.{now.microsecond:06d}"
            )
            return _sanitised(f"{stamp}.{prefix}".encode() + ext)
        return self._short_unique(sop_class_uid, now, exists, ext)

    def _short_unique(
        self, sop_class_uid: str, now: datetime, exists: Callable[[str], bool], ext: bytes
    ) -> str:
        # DCMTK reseeds from time(NULL) on every call and keeps no state between calls,
        # so objects received in the same second share the first candidate. Its cast to
        # unsigned int needs no mask here: the generator works modulo 2**31.
        seed = (now.astimezone(UTC) - _EPOCH) // _SECOND
        head = f"{modality_prefix(sop_class_uid) or SHORT_UNKNOWN_PREFIX}_"
        head += f"{self.start_time & 0xFFFFFFFF:08x}"
        for _ in range(MAX_TRIES):
            value, seed = _random_pair(seed)
            candidate = _sanitised(f"{head}{value:08x}".encode() + ext)
            try:
                if not exists(candidate):
                    return candidate
            except OSError as exc:
                raise NamingError(COULD_NOT_GENERATE_FILENAME) from exc
        raise NamingError(COULD_NOT_GENERATE_FILENAME)
