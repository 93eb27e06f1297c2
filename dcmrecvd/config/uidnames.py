"""DCMTK's symbolic UID names (the ones asconfig files use), and UID syntax checks."""

from __future__ import annotations

import re
import sys
from functools import cache
from importlib import resources

# DCMTK's asconfig check: after name resolution, a UID is digits and dots only.
_UID_CHARS = re.compile(r"[0-9.]+")

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"


@cache
def dcmtk_names() -> dict[str, str]:
    """DCMTK 3.6.7 name -> UID (exact, case-sensitive names such as CTImageStorage)."""
    table: dict[str, str] = {}
    text = resources.files("dcmrecvd").joinpath("data/dcmtk-uid-names.tsv").read_text("ascii")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, uid = line.split("\t")
            table[name] = uid
    return table


@cache
def dcmtk_name_of() -> dict[str, str]:
    """UID -> DCMTK 3.6.7 name (the table has one name per UID)."""
    return {uid: name for name, uid in dcmtk_names().items()}


def resolve_dcmtk(value: str) -> str:
    """Resolve an asconfig UID value as DCMTK's DcmUIDHandler does.

    A value starting with a digit is taken as it is; otherwise one leading '=' is
    skipped and the rest looked up. Unknown names come back unchanged, so that
    is_uid() rejects them with the original text.
    """
    if value[:1].isdigit():
        return value
    name = value[1:] if value.startswith("=") else value
    if name == "LocalEndianExplicit":
        return EXPLICIT_VR_LE if sys.byteorder == "little" else EXPLICIT_VR_BE
    if name == "OppositeEndianExplicit":
        return EXPLICIT_VR_BE if sys.byteorder == "little" else EXPLICIT_VR_LE
    return dcmtk_names().get(name, value)


def is_uid(value: str) -> bool:
    """DCMTK's test: digits and dots only, non-empty."""
    return _UID_CHARS.fullmatch(value) is not None
