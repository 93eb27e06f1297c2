"""Streaming structure check of an encoded dataset, fed P-DATA fragment by fragment.

The walk follows PS3.5 chapter 7 (element headers, sequences, items, encapsulated Pixel
Data) without decoding values: values are skipped by length, so a long one costs O(1) per
fragment and memory is a few header bytes plus the stack of open sequences. A dataset it
accepts can be read back element by element by pydicom and by DCMTK's dcmdump; the
decisions on near-misses are in docs/validation.md.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from typing import Final

from pydicom._dicom_dict import DicomDictionary  # the public datadict does not export it
from pydicom.datadict import dictionary_VR

_IMPLICIT_LE: Final = "1.2.840.10008.1.2"
_EXPLICIT_LE: Final = "1.2.840.10008.1.2.1"
_EXPLICIT_BE: Final = "1.2.840.10008.1.2.2"
_DEFLATED_LE: Final = "1.2.840.10008.1.2.1.99"
# Transfer syntaxes whose whole dataset is deflated (PS3.5 A.5): Deflated Explicit VR LE
# and the two JPIP Referenced Deflate syntaxes.
_DEFLATED: Final = frozenset({_DEFLATED_LE, "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"})
# The native syntaxes, where Pixel Data cannot be encapsulated; every other syntax (known
# or not) is explicit VR little endian and may encapsulate it.
_NATIVE: Final = frozenset({_IMPLICIT_LE, _EXPLICIT_LE, _EXPLICIT_BE, _DEFLATED_LE})

_UNDEFINED: Final = 0xFFFFFFFF
_ITEM: Final = 0xFFFEE000
_ITEM_END: Final = 0xFFFEE00D
_SEQUENCE_END: Final = 0xFFFEE0DD
_PIXEL_DATA: Final = 0x7FE00010
# Nested sequences deeper than this are refused: the stack is the validator's only memory
# that grows with the data. pydicom reads 64 levels within Python's recursion limit.
MAX_DEPTH: Final = 64
# Inflated bytes walked at a time, so a deflate bomb costs time, not memory.
_INFLATE_CHUNK: Final = 256 * 1024
_NO_LIMIT: Final = 1 << 62

# The values of these VRs are arrays of fixed-size numbers: pydicom refuses a length that
# is not a multiple of the size (DCMTK only warns).
_NUMBER_SIZES: Final = {
    "US": 2,
    "SS": 2,
    "UL": 4,
    "SL": 4,
    "FL": 4,
    "AT": 4,
    "FD": 8,
    "SV": 8,
    "UV": 8,
    # pydicom reads these ambiguous dictionary VRs as US or SS when accessed.
    "US or SS": 2,
    "US or OW": 2,
    "US or SS or OW": 2,
}
# PS3.5 7.1.2: explicit VR -> (4-byte length form, required multiple of the length).
_LONG_VRS: Final = ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")
_SHORT_VRS: Final = (
    *("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN"),
    *("SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"),
)
_VRS: Final = {
    vr.encode(): (vr in _LONG_VRS, _NUMBER_SIZES.get(vr, 1)) for vr in _LONG_VRS + _SHORT_VRS
}
_SEQUENCE_TAGS: Final = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")
# Every tag of the main dictionary -> the required multiple of its length.
_DICTIONARY_MULTIPLES: Final = {
    tag: _NUMBER_SIZES.get(entry[0], 1) for tag, entry in DicomDictionary.items()
}
# The plain elements the fast loops step over: explicit VR -> multiple (2-byte and 4-byte
# length forms apart), implicit dictionary tag -> multiple. Sequences are not plain.
_PLAIN_SHORT: Final = {vr: multiple for vr, (long, multiple) in _VRS.items() if not long}
_PLAIN_LONG: Final = {vr: multiple for vr, (long, multiple) in _VRS.items() if long and vr != b"SQ"}
_PLAIN_TAGS: Final = {
    tag: multiple
    for tag, multiple in _DICTIONARY_MULTIPLES.items()
    if tag not in _SEQUENCE_TAGS and tag >> 16 != 0xFFFE  # the items and delimiters
}

# What the walk expects next: data elements (the top level or an item), items of a
# sequence, or fragments of encapsulated Pixel Data.
_ELEMENTS: Final = 0
_ITEMS: Final = 1
_FRAGMENTS: Final = 2
_ITEM_OPEN: Final = 3  # a frame only: an open item, whose content is _ELEMENTS

_KIND_NAMES: Final = {_ITEMS: "sequence", _FRAGMENTS: "Pixel Data", _ITEM_OPEN: "item"}


@functools.lru_cache(maxsize=1024)
def _implicit_multiple(tag: int) -> int:
    """The required length multiple of an implicit VR element not in the main dictionary.

    pydicom gives such an element a repeater-group VR (60xx,0010 is US) or, for a group
    length, UL; private ones are opaque here as they are UN without their creator.
    """
    if tag >> 16 & 1:
        return 1
    if tag & 0xFFFF == 0:
        return 4
    try:
        return _NUMBER_SIZES.get(dictionary_VR(tag), 1)
    except KeyError:
        return 1


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class ValidationError(Exception):
    """Where and why a dataset is malformed.

    offset counts bytes from the start of the dataset (after the File Meta group); for a
    deflated dataset it counts inflated bytes.
    """

    def __init__(self, offset: int, tag: int | None, reason: str) -> None:
        super().__init__(offset, tag, reason)
        self.offset = offset
        self.tag = tag
        self.reason = reason

    def __str__(self) -> str:
        where = f" {_tag_text(self.tag)}" if self.tag is not None else ""
        return f"malformed dataset at offset {self.offset:#x}{where}: {self.reason}"

    def comment(self) -> str:
        """The error for a C-STORE Error Comment (LO, at most 64 characters)."""
        where = f" {_tag_text(self.tag)}" if self.tag is not None else ""
        return f"malformed at {self.offset:#x}{where}: {self.reason}"[:64]


class StreamValidator:
    """Checks the structure of one dataset as its fragments arrive, in any split."""

    def __init__(self, transfer_syntax: str) -> None:
        little = transfer_syntax != _EXPLICIT_BE
        self._explicit = transfer_syntax != _IMPLICIT_LE
        self._encapsulated = transfer_syntax not in _NATIVE
        order = "<" if little else ">"
        self._little = little
        self._tag_length = struct.Struct(order + "HHL").unpack_from
        self._explicit_header = struct.Struct(order + "HH2sH").unpack_from
        self._long_length = struct.Struct(order + "L").unpack_from
        self._inflater = zlib.decompressobj(-15) if transfer_syntax in _DEFLATED else None
        self._crc = 0  # CRC-32 of the inflated bytes, for a gzip trailer
        self._tail = b""  # what followed the end of the deflate stream
        self._error: ValidationError | None = None
        self._position = 0  # stream offset of the next byte fed (inflated for deflate)
        self._carry = b""  # the start of an element header split across fragments
        self._skip = 0  # bytes of the current value still to come
        self._skipped: tuple[int, int, int] = (0, 0, 0)  # offset, tag, length of that value
        # Open sequences, items and Pixel Data: (kind, tag, offset, end, limit, implicit);
        # end is None for an undefined length, limit is the innermost defined end.
        self._stack: list[tuple[int, int, int, int | None, int, bool]] = []
        self._kind = _ELEMENTS
        self._limit = _NO_LIMIT
        self._implicit = not self._explicit
        self._fragments = 0  # items seen in the open encapsulated Pixel Data

    @property
    def error(self) -> ValidationError | None:
        """The first error found so far; once set, feed() does nothing more."""
        return self._error

    def feed(self, data: bytes | memoryview) -> None:
        """Walk the next bytes of the dataset (a P-DATA fragment's value, any length)."""
        if self._error is not None or not data:
            return
        try:
            if self._inflater is None:
                self._walk_fragment(data)
            else:
                self._inflate(data)
        except ValidationError as error:
            self._error = error

    def finish(self) -> ValidationError | None:
        """Check that the dataset ended here; the first error, or None when well formed."""
        if self._error is None:
            try:
                self._finish()
            except ValidationError as error:
                self._error = error
        return self._error

    def _inflate(self, data: bytes | memoryview) -> None:
        inflater = self._inflater
        assert inflater is not None
        if inflater.eof:
            self._after_deflate(data)
            return
        try:
            out = inflater.decompress(data, _INFLATE_CHUNK)
            while True:
                self._crc = zlib.crc32(out, self._crc)
                self._walk_fragment(out)
                # A full chunk may leave output pending inside zlib with no input left.
                if inflater.eof or (not inflater.unconsumed_tail and len(out) < _INFLATE_CHUNK):
                    break
                out = inflater.decompress(inflater.unconsumed_tail, _INFLATE_CHUNK)
        except zlib.error as exc:
            raise ValidationError(self._position, None, "corrupt deflate stream") from exc
        if inflater.eof:
            self._after_deflate(inflater.unused_data)

    def _after_deflate(self, tail: bytes | memoryview) -> None:
        # At most a gzip trailer (8 bytes) may follow the stream; _finish checks it.
        if len(self._tail) + len(tail) > 8:
            raise ValidationError(self._position, None, "data after the deflate stream")
        self._tail += bytes(tail)

    def _walk_fragment(self, data: bytes | memoryview) -> None:
        carry = self._carry
        start = 0
        if carry:
            # Only a split header is ever copied: the carry and the next 16 bytes.
            head = carry + bytes(data[:16])
            done = self._walk(head, 0, self._position - len(carry))
            if done < len(carry):  # still no whole header: data is all in head
                self._carry = head[done:]
                self._position += len(data)
                return
            start = done - len(carry)
        done = self._walk(data, start, self._position)
        self._carry = bytes(data[done:])
        self._position += len(data)

    def _walk(self, buf: bytes | memoryview, i: int, base: int) -> int:
        """Walk buf from index i (buf[0] at stream offset base); the index of a partial
        header left at its end, or len(buf)."""
        n = len(buf)
        tag_length = self._tag_length
        explicit_header = self._explicit_header
        long_length = self._long_length
        while True:
            if self._skip:
                if self._skip >= n - i:
                    self._skip -= n - i
                    return n
                i += self._skip
                self._skip = 0
            at = base + i
            while at == self._limit:
                self._close(at)
            if n - i < 8:
                return i
            if at + 8 > self._limit:
                raise ValidationError(at, None, f"header past end of {self._within()}")
            kind = self._kind
            if kind == _ELEMENTS:
                stop = self._plain(buf, i, n, self._limit - base)
                if stop != i:
                    i = stop
                    continue
            if kind != _ELEMENTS or self._implicit:
                group, element, length = tag_length(buf, i)
                tag = group << 16 | element
                if kind == _ITEMS:
                    self._sequence_entry(tag, length, at)
                    i += 8
                    continue
                if kind == _FRAGMENTS:
                    self._skip = self._fragment(tag, length, at)
                    i += 8
                    continue
                if group == 0xFFFE:
                    self._delimiter(tag, length, at)
                    i += 8
                    continue
                header = 8
                multiple = _DICTIONARY_MULTIPLES.get(tag) or _implicit_multiple(tag)
                vr = b""
            else:
                group, element, vr, length = explicit_header(buf, i)
                tag = group << 16 | element
                if group == 0xFFFE:
                    (length,) = long_length(buf, i + 4)
                    self._delimiter(tag, length, at)
                    i += 8
                    continue
                form = _VRS.get(vr)
                if form is None:
                    raise ValidationError(at, tag, self._bad_vr(vr))
                long, multiple = form
                if long:
                    if n - i < 12:
                        return i
                    (length,) = long_length(buf, i + 8)
                    header = 12
                else:
                    header = 8
            if length == _UNDEFINED:
                self._open_undefined(tag, vr, at)
                i += header
                continue
            end = at + header + length
            if end > self._limit:
                raise ValidationError(at, tag, f"length {length} past end of {self._within()}")
            if vr == b"SQ" or (not vr and tag in _SEQUENCE_TAGS):
                self._push(_ITEMS, tag, at, end, self._implicit)
                i += header
                continue
            if length % multiple:
                raise ValidationError(at, tag, f"length {length} not a multiple of {multiple}")
            i += header + length
            if i > n:
                self._skip = i - n
                self._skipped = (at, tag, length)
                return n

    @property
    def _plain(self) -> Callable[[bytes | memoryview, int, int, int], int]:
        return self._plain_implicit if self._implicit else self._plain_explicit

    def _plain_explicit(self, buf: bytes | memoryview, i: int, n: int, limit: int) -> int:
        """Step over plain explicit VR elements wholly in buf[i:min(n, limit)]; where it
        stopped, at something for _walk to look at (the hot loop: ~100 elements a CT)."""
        header = self._explicit_header
        long_length = self._long_length
        short_vrs = _PLAIN_SHORT
        long_vrs = _PLAIN_LONG
        end = min(n, limit)
        while i + 8 <= end:
            group, _element, vr, length = header(buf, i)
            multiple = short_vrs.get(vr)
            if multiple is not None:
                next_i = i + 8 + length
            else:
                multiple = long_vrs.get(vr)
                if multiple is None or i + 12 > end:
                    return i
                (length,) = long_length(buf, i + 8)
                next_i = i + 12 + length
            if next_i > end or length % multiple or group == 0xFFFE:
                return i  # also an undefined length: next_i is then past any end
            i = next_i
        return i

    def _plain_implicit(self, buf: bytes | memoryview, i: int, n: int, limit: int) -> int:
        """_plain_explicit for implicit VR: plain elements are in the dictionary and not
        sequences, or private."""
        tag_length = self._tag_length
        tags = _PLAIN_TAGS
        end = min(n, limit)
        while i + 8 <= end:
            group, element, length = tag_length(buf, i)
            multiple = tags.get(group << 16 | element)
            if multiple is None:
                if not group & 1:
                    return i
                multiple = 1
            next_i = i + 8 + length
            if next_i > end or length % multiple:
                return i
            i = next_i
        return i

    def _bad_vr(self, vr: bytes) -> str:
        if vr.isalpha() and vr.isupper():
            return f"unknown VR {vr.decode()}"
        return f"no VR (bytes {vr.hex()})"

    def _within(self) -> str:
        return _KIND_NAMES[self._stack[-1][0]] if self._stack else "dataset"

    def _push(self, kind: int, tag: int, at: int, end: int | None, implicit: bool) -> None:
        if len(self._stack) >= 2 * MAX_DEPTH:
            raise ValidationError(at, tag, f"sequences nested deeper than {MAX_DEPTH}")
        limit = self._limit if end is None else end
        self._stack.append((kind, tag, at, end, limit, implicit))
        self._kind = _ELEMENTS if kind == _ITEM_OPEN else kind
        self._limit = limit
        self._implicit = implicit

    def _pop(self) -> None:
        self._stack.pop()
        if self._stack:
            kind, _tag, _at, _end, limit, implicit = self._stack[-1]
            self._kind = _ELEMENTS if kind == _ITEM_OPEN else kind
            self._limit = limit
            self._implicit = implicit
        else:
            self._kind = _ELEMENTS
            self._limit = _NO_LIMIT
            self._implicit = not self._explicit

    def _close(self, at: int) -> None:
        """Close what ends at offset at: the innermost open defined length."""
        kind, tag, opened, end, _limit, _implicit = self._stack[-1]
        if end != at:
            raise ValidationError(opened, tag, f"{_KIND_NAMES[kind]} open at end of parent")
        self._pop()

    def _open_undefined(self, tag: int, vr: bytes, at: int) -> None:
        if at + len(vr) + 10 > self._limit:  # the header: 8 bytes implicit, 12 explicit
            raise ValidationError(at, tag, f"header past end of {self._within()}")
        if tag == _PIXEL_DATA and vr in (b"OB", b"OW", b""):
            if not self._encapsulated:
                raise ValidationError(at, tag, "encapsulated in a native transfer syntax")
            self._push(_FRAGMENTS, tag, at, None, self._implicit)
            self._fragments = 0
        elif vr in (b"SQ", b""):
            self._push(_ITEMS, tag, at, None, self._implicit)
        elif vr == b"UN":
            # PS3.5 6.2.2: a sequence in Implicit VR Little Endian, which has no meaning
            # inside a big endian dataset.
            if not self._little:
                raise ValidationError(at, tag, "UN of undefined length in big endian")
            self._push(_ITEMS, tag, at, None, True)
        else:
            raise ValidationError(at, tag, f"undefined length with VR {vr.decode()}")

    def _sequence_entry(self, tag: int, length: int, at: int) -> None:
        if tag == _ITEM:
            end = None if length == _UNDEFINED else at + 8 + length
            if end is not None and end > self._limit:
                raise ValidationError(at, tag, f"item length {length} past end of sequence")
            self._push(_ITEM_OPEN, tag, at, end, self._implicit)
        elif tag != _SEQUENCE_END:
            raise ValidationError(at, tag, "not an item in a sequence")
        elif self._stack[-1][3] is not None:
            raise ValidationError(at, tag, "delimiter in defined-length sequence")
        elif length:
            raise ValidationError(at, tag, "sequence delimiter length not 0")
        else:
            self._pop()

    def _fragment(self, tag: int, length: int, at: int) -> int:
        """Check a Pixel Data fragment's header; the length of its value, to skip."""
        if tag == _SEQUENCE_END:
            if length:
                raise ValidationError(at, tag, "sequence delimiter length not 0")
            if not self._fragments:
                raise ValidationError(at, tag, "Pixel Data without a basic offset table")
            self._pop()
            return 0
        if tag != _ITEM:
            raise ValidationError(at, tag, "not an item in encapsulated Pixel Data")
        if length == _UNDEFINED:
            raise ValidationError(at, tag, "Pixel Data item of undefined length")
        if at + 8 + length > self._limit:
            raise ValidationError(at, tag, f"item length {length} past end of {self._within()}")
        self._fragments += 1
        self._skipped = (at, tag, length)
        return length

    def _delimiter(self, tag: int, length: int, at: int) -> None:
        """An (FFFE,eeee) tag where a data element was expected."""
        if tag != _ITEM_END or not self._stack:
            raise ValidationError(at, tag, "item tag or delimiter among elements")
        if self._stack[-1][3] is not None:
            raise ValidationError(at, tag, "delimiter in defined-length item")
        if length:
            raise ValidationError(at, tag, "item delimiter length not 0")
        self._pop()

    def _finish(self) -> None:
        if self._inflater is not None:
            if not self._inflater.eof:
                raise ValidationError(self._position, None, "deflate stream cut short")
            # PS3.5 A.5 pads a stream of odd length with a NUL byte. Some writers leave a
            # gzip trailer (CRC-32 and size of the inflated data), which pydicom and DCMTK
            # read past; anything else after the stream is refused.
            trailer = struct.pack("<LL", self._crc, self._position & 0xFFFFFFFF)
            if self._tail not in (b"", b"\0", trailer):
                raise ValidationError(self._position, None, "data after the deflate stream")
        end = self._position
        if self._skip:
            at, tag, length = self._skipped
            raise ValidationError(at, tag, f"length {length} past end of dataset")
        if self._carry:
            split: int | None = None
            if len(self._carry) >= 4:
                group, element = struct.unpack_from("<HH" if self._little else ">HH", self._carry)
                split = group << 16 | element
            raise ValidationError(end - len(self._carry), split, "dataset ends inside a header")
        while self._stack and self._limit == end:
            self._close(end)
        if self._stack:
            kind, tag, opened, _end, _limit, _implicit = self._stack[-1]
            raise ValidationError(opened, tag, f"{_KIND_NAMES[kind]} not closed at the end")
