"""The few dataset elements that naming and the File Meta header need.

Only the start of the encoded dataset is parsed (group 0008 comes first), so a
received object is never decoded as a whole. The elements before Series Date are
walked by hand: pydicom's reader costs about a fifth of the receiver's Python time per
instance. Where the walk meets what only pydicom knows how to read (an undefined
length, an unknown VR, the data ending first), pydicom reads it, as it always did.

A path template asks for more elements (`wanted`): the walk then goes on to the last of
them and keeps their raw values, and Specific Character Set to decode them.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.filereader import read_dataset
from pydicom.uid import UID

SPECIFIC_CHARACTER_SET = 0x00080005
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
SERIES_DATE = 0x00080021

# Group 0008 starts every image dataset; this much almost always holds it, and it is
# all a receiver keeps in memory of a dataset before writing it out.
PREFIX_BYTES = 64 * 1024

_WANTED = (SOP_CLASS_UID, SOP_INSTANCE_UID, SERIES_DATE)
# PS3.5 7.1.2: the explicit VRs with a 2-byte reserved field and a 4-byte length.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split())
_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class Header:
    """SOP Class/Instance UID and Series Date as encoded (empty when absent)."""

    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    series_date: str = ""
    series_date_vr: str = ""
    # The raw values of the other elements asked for that are there, by tag.
    values: tuple[tuple[int, bytes], ...] = ()
    # False when the data ended before the last element asked for: those not in
    # `values` may then come later in the dataset.
    complete: bool = True

    def value_map(self) -> Mapping[int, bytes]:
        return dict(self.values)

    def character_set(self) -> str | None:
        """Specific Character Set's text, None when the dataset has none (or none was
        asked for: it is kept only with other wanted elements)."""
        raw = self.value_map().get(SPECIFIC_CHARACTER_SET)
        return raw.decode("ascii", "replace") if raw else None


class HeaderError(Exception):
    """The start of the dataset cannot be parsed."""


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", errors="replace").rstrip("\x00 ")


def _header(
    elements: dict[int, tuple[bytes | None, str]], wanted: frozenset[int], complete: bool
) -> Header:
    """The Header of the raw values (and VRs; empty when implicit) found."""
    sop_class = elements.get(SOP_CLASS_UID)
    sop_instance = elements.get(SOP_INSTANCE_UID)
    date = elements.get(SERIES_DATE)
    return Header(
        sop_class_uid=_text(sop_class[0]) if sop_class else "",
        sop_instance_uid=_text(sop_instance[0]) if sop_instance else "",
        series_date=_text(date[0]) if date else "",
        # Implicit VR leaves the VR to the dictionary, where Series Date is DA.
        series_date_vr=(date[1] or "DA") if date else "",
        values=tuple(
            (tag, value or b"")
            for tag, (value, _vr) in sorted(elements.items())
            if tag in wanted or (wanted and tag == SPECIFIC_CHARACTER_SET)
        ),
        complete=complete,
    )


def _last(wanted: frozenset[int]) -> int:
    """The last tag the walk must pass."""
    return max(wanted | {SERIES_DATE})


def _scan(
    data: bytes, implicit: bool, little: bool, wanted: frozenset[int] = frozenset()
) -> Header | None:
    """The header elements, read without pydicom; None where pydicom has to decide."""
    keep = frozenset(_WANTED) | wanted | ({SPECIFIC_CHARACTER_SET} if wanted else frozenset())
    last = _last(wanted)
    order = "<" if little else ">"
    tag_format, short_format, long_format = order + "HH", order + "H", order + "L"
    found: dict[int, tuple[bytes | None, str]] = {}
    offset = 0
    end = len(data)
    while offset + 8 <= end:
        group, element = struct.unpack_from(tag_format, data, offset)
        tag = group << 16 | element
        vr = b""
        if implicit:
            (length,) = struct.unpack_from(long_format, data, offset + 4)
            offset += 8
        else:
            vr = data[offset + 4 : offset + 6]
            if vr in _SHORT_VRS:
                (length,) = struct.unpack_from(short_format, data, offset + 6)
                offset += 8
            elif vr in _LONG_VRS and offset + 12 <= end:
                (length,) = struct.unpack_from(long_format, data, offset + 8)
                offset += 12
            else:
                return None
        if tag > last:  # pydicom stops here too, once it has read the header
            return _header(found, wanted, True)
        if length == _UNDEFINED_LENGTH or offset + length > end:
            return None
        if tag in keep:
            if vr == b"UN":
                return None  # pydicom puts the dictionary's VR in its place
            found[tag] = (data[offset : offset + length], vr.decode("ascii"))
        offset += length
    return None


def _parse(data: bytes, syntax: UID, wanted: frozenset[int]) -> Header:
    scanned = _scan(data, syntax.is_implicit_VR, syntax.is_little_endian, wanted)
    if scanned is not None:
        return scanned
    last = _last(wanted)
    stream = io.BytesIO(data)
    try:
        ds = read_dataset(
            stream,
            syntax.is_implicit_VR,
            syntax.is_little_endian,
            stop_when=lambda tag, _vr, _length: tag > last,
        )
    except Exception as exc:  # pydicom raises many types on malformed input
        raise HeaderError(f"cannot parse dataset: {exc}") from exc
    elements = {}
    for tag in (*_WANTED, *wanted, SPECIFIC_CHARACTER_SET):
        raw = ds.get_item(tag)
        if raw is not None and isinstance(raw.value, bytes | None):
            elements[tag] = (raw.value, raw.VR or "")
    # pydicom stops before the first tag past `last`, so data left over means it got there.
    return _header(elements, wanted, stream.tell() < len(data) or not wanted)


@functools.cache
def _syntax(transfer_syntax: str) -> UID:
    # Made once per syntax: pydicom validates the value of every UID it makes.
    return UID(transfer_syntax)


def read(
    data: bytes | memoryview, transfer_syntax: str, wanted: frozenset[int] = frozenset()
) -> Header:
    """Parse the header elements of an encoded dataset in `transfer_syntax`, and the raw
    values of the elements `wanted` (none of them a sequence, all before Pixel Data)."""
    syntax = _syntax(transfer_syntax)
    if not syntax.is_transfer_syntax:
        raise HeaderError(f"unknown transfer syntax {transfer_syntax}")
    if syntax.is_deflated:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            prefix = inflater.decompress(bytes(data[:PREFIX_BYTES]), PREFIX_BYTES)
        except zlib.error as exc:
            raise HeaderError(f"cannot inflate dataset: {exc}") from exc
        return _parse(prefix, syntax, wanted)
    try:
        found = _parse(bytes(data[:PREFIX_BYTES]), syntax, wanted)
        if found.complete or len(data) <= PREFIX_BYTES:
            return found
    except HeaderError:
        if len(data) <= PREFIX_BYTES:
            raise
    return _parse(bytes(data), syntax, wanted)
