"""The few dataset elements that naming and the File Meta header need.

Only the start of the encoded dataset is parsed (group 0008 comes first), so a
received object is never decoded as a whole.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

from pydicom.filereader import read_dataset
from pydicom.uid import UID

SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
SERIES_DATE = 0x00080021

# Group 0008 starts every image dataset; this much almost always holds it, and it is
# all a receiver keeps in memory of a dataset before writing it out.
PREFIX_BYTES = 64 * 1024


@dataclass(frozen=True)
class Header:
    """SOP Class/Instance UID and Series Date as encoded (empty when absent)."""

    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    series_date: str = ""
    series_date_vr: str = ""


class HeaderError(Exception):
    """The start of the dataset cannot be parsed."""


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", errors="replace").rstrip("\x00 ")


def _parse(data: bytes, syntax: UID) -> Header:
    try:
        ds = read_dataset(
            io.BytesIO(data),
            syntax.is_implicit_VR,
            syntax.is_little_endian,
            stop_when=lambda tag, _vr, _length: tag > SERIES_DATE,
        )
    except Exception as exc:  # pydicom raises many types on malformed input
        raise HeaderError(f"cannot parse dataset: {exc}") from exc
    elements = {
        int(tag): ds.get_item(tag) for tag in (SOP_CLASS_UID, SOP_INSTANCE_UID, SERIES_DATE)
    }
    date = elements[SERIES_DATE]
    return Header(
        sop_class_uid=_text(elements[SOP_CLASS_UID].value if elements[SOP_CLASS_UID] else None),
        sop_instance_uid=_text(
            elements[SOP_INSTANCE_UID].value if elements[SOP_INSTANCE_UID] else None
        ),
        series_date=_text(date.value) if date else "",
        # Implicit VR leaves the VR to the dictionary, where Series Date is DA.
        series_date_vr=(date.VR or "DA") if date else "",
    )


def read(data: bytes | memoryview, transfer_syntax: str) -> Header:
    """Parse the header elements of an encoded dataset in `transfer_syntax`."""
    syntax = UID(transfer_syntax)
    if not syntax.is_transfer_syntax:
        raise HeaderError(f"unknown transfer syntax {transfer_syntax}")
    if syntax.is_deflated:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            prefix = inflater.decompress(bytes(data[:PREFIX_BYTES]), PREFIX_BYTES)
        except zlib.error as exc:
            raise HeaderError(f"cannot inflate dataset: {exc}") from exc
        return _parse(prefix, syntax)
    try:
        return _parse(bytes(data[:PREFIX_BYTES]), syntax)
    except HeaderError:
        if len(data) <= PREFIX_BYTES:
            raise
    return _parse(bytes(data), syntax)
