"""The streaming structure validator: every rule, in every split of the fragments.

Datasets are written by pydicom, then cut or corrupted by hand. check() feeds each one
whole, byte by byte, in random chunks and split in two at every byte, and asserts that
all of these give the same answer: the validator must not depend on where P-DATA
fragments happen to end.
"""

from __future__ import annotations

import random
import struct
import subprocess
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from dcmrecvd.store.validation import _INFLATE_CHUNK, MAX_DEPTH, StreamValidator, ValidationError
from tests.support import dicomgen
from tests.support.encoding import deflate, encode, part10

NATIVE = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)
ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
UNDEFINED = 0xFFFFFFFF
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())


def explicit(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """An Explicit VR Little Endian element, with its length field overridable."""
    size = len(value) if length is None else length
    if vr in LONG_VRS:
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, size) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, size) + value


def implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, size) + value


def item(content: bytes, length: int | None = None) -> bytes:
    return ITEM + struct.pack("<L", len(content) if length is None else length) + content


def run(data: bytes, syntax: str, chunks: list[int]) -> ValidationError | None:
    validator = StreamValidator(syntax)
    at = 0
    for size in chunks:
        validator.feed(data[at : at + size])
        at += size
    validator.feed(data[at:])
    return validator.finish()


def key(error: ValidationError | None) -> tuple[int, int | None, str] | None:
    return None if error is None else (error.offset, error.tag, error.reason)


def check(data: bytes, syntax: str) -> ValidationError | None:
    """The validator's answer for data, the same whatever the split of the fragments."""
    whole = run(data, syntax, [])
    expected = key(whole)
    assert key(run(data, syntax, [1] * len(data))) == expected, "byte by byte"
    rng = random.Random(len(data))
    for _ in range(5):
        chunks = [rng.randint(1, 40) for _ in range(len(data) // 4 + 1)]
        assert key(run(data, syntax, chunks)) == expected, f"chunks {chunks}"
    for cut in range(len(data) + 1):
        assert key(run(data, syntax, [cut])) == expected, f"split at {cut}"
    return whole


def ok(data: bytes, syntax: str) -> None:
    error = check(data, syntax)
    assert error is None, str(error)


def refused(data: bytes, syntax: str, reason: str) -> ValidationError:
    error = check(data, syntax)
    assert error is not None, "accepted"
    assert reason in error.reason, str(error)
    return error


def nested() -> Dataset:
    """CT-like, with sequences nested two deep of every length form."""
    ds = dicomgen.dataset(dicomgen.Spec(dicomgen.CT, "1.2.3.4.100"))
    inner = Dataset()
    inner.CodeValue = "113691"
    inner.CodingSchemeDesignator = "DCM"
    inner.is_undefined_length_sequence_item = True
    outer = Dataset()
    outer.ReferencedSOPClassUID = dicomgen.CT
    outer.PurposeOfReferenceCodeSequence = Sequence([inner])
    outer["PurposeOfReferenceCodeSequence"].is_undefined_length = True
    defined = Dataset()
    defined.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedImageSequence = Sequence([outer, defined])
    ds.add_new(0x00091010, "LO", "PRIVATE")
    ds.add_new(0x00091011, "OB", b"\x01\x02\x03\x04")
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 6)  # Data Set Trailing Padding
    return ds


def top_level_ends(ds: Dataset, syntax: str) -> set[int]:
    """Offsets where a top-level element ends: the lengths of ds's prefixes, encoded."""
    ends = {0}
    prefix = Dataset()
    for element in ds:
        prefix.add(element)
        ends.add(len(encode(prefix, syntax)))
    return ends


@pytest.mark.parametrize("syntax", NATIVE)
def test_a_dataset_pydicom_writes_is_accepted_in_every_split(syntax: str) -> None:
    ok(encode(nested(), syntax), syntax)


def test_a_deflated_dataset_is_accepted_in_every_split() -> None:
    ok(encode(nested(), DeflatedExplicitVRLittleEndian), DeflatedExplicitVRLittleEndian)


@pytest.mark.parametrize("syntax", NATIVE)
def test_a_cut_is_refused_unless_between_two_top_level_elements(syntax: str) -> None:
    ds = nested()
    data = encode(ds, syntax)
    ends = top_level_ends(ds, syntax)
    for cut in range(len(data) + 1):
        error = run(data[:cut], syntax, [1] * cut)
        assert key(error) == key(run(data[:cut], syntax, [])), cut
        assert (error is None) == (cut in ends), (cut, error)


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (2, "dataset ends inside a header"),  # in a tag
        (5, "dataset ends inside a header"),  # in a VR
        (7, "dataset ends inside a header"),  # in a 2-byte length
        (12, "length 5 past end of dataset"),  # in a value
    ],
)
def test_each_kind_of_cut_says_where(cut: int, reason: str) -> None:
    data = explicit(0x00100010, b"PN", b"ABCDE") + explicit(0x00100020, b"LO", b"1234")
    error = refused(data[:cut], ExplicitVRLittleEndian, reason)
    assert error.offset == 0
    assert error.tag == (0x00100010 if cut >= 4 else None)


def test_a_cut_in_a_4_byte_length_is_inside_a_header() -> None:
    data = explicit(0x00091010, b"OB", b"\0\0")
    refused(data[:10], ExplicitVRLittleEndian, "dataset ends inside a header")


def test_a_cut_inside_a_sequence_or_item_leaves_it_open() -> None:
    ds = nested()
    data = encode(ds, ExplicitVRLittleEndian)
    at = data.index(struct.pack("<HH2s", 0x0040, 0xA170, b"SQ"))  # the undefined-length one
    error = refused(data[: at + 12], ExplicitVRLittleEndian, "sequence not closed")
    assert error.tag == 0x0040A170
    error = refused(data[: at + 20], ExplicitVRLittleEndian, "item not closed")
    assert error.tag == 0xFFFEE000
    defined = data.index(struct.pack("<HH2s", 0x0008, 0x1140, b"SQ"))
    refused(data[: defined + 12], ExplicitVRLittleEndian, "sequence not closed")


def encapsulated(frames: list[bytes]) -> Dataset:
    ds = dicomgen.dataset(dicomgen.Spec(dicomgen.SC, "1.2.3.4.600"))
    del ds.PixelData
    ds.add_new(0x7FE00010, "OB", encapsulate(frames))
    ds["PixelData"].is_undefined_length = True
    return ds


def test_encapsulated_pixel_data_is_accepted_and_every_cut_in_it_refused() -> None:
    data = encode(encapsulated([b"\xff\xd8" + bytes(10), b"\x01\x02"]), JPEGBaseline8Bit)
    ok(data, JPEGBaseline8Bit)
    start = data.index(b"\xe0\x7f\x10\x00")
    for cut in range(start + 1, len(data)):
        error = run(data[:cut], JPEGBaseline8Bit, [])
        assert error is not None, cut
        assert key(run(data[:cut], JPEGBaseline8Bit, [1] * cut)) == key(error)


def test_an_unknown_transfer_syntax_may_encapsulate() -> None:
    ok(encode(encapsulated([b"\x01\x02"]), JPEGBaseline8Bit), "1.2.3.4.999")


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_encapsulated_pixel_data_in_a_native_syntax_is_refused(syntax: str) -> None:
    refused(encode(encapsulated([b"\x01\x02"]), syntax), syntax, "encapsulated in a native")


PIXEL_HEADER = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, UNDEFINED)


@pytest.mark.parametrize(
    ("fragments", "reason"),
    [
        (SEQUENCE_END, "without a basic offset table"),
        (item(b"") + struct.pack("<HHL", 0xFFFE, 0xE000, UNDEFINED), "of undefined length"),
        (item(b"") + explicit(0x00100010, b"PN", b"AB"), "not an item in encapsulated"),
        (item(b"") + item(b"ab") + struct.pack("<HHL", 0xFFFE, 0xE0DD, 4), "length not 0"),
        (item(b"") + item(b"ab") + ITEM_END, "not an item in encapsulated"),
        (item(b"") + item(b"ab"), "Pixel Data not closed"),
        (item(b"") + item(b"ab", length=40) + SEQUENCE_END, "length 40 past end of dataset"),
    ],
)
def test_malformed_encapsulated_pixel_data_is_refused(fragments: bytes, reason: str) -> None:
    refused(PIXEL_HEADER + fragments, JPEGBaseline8Bit, reason)


def test_an_odd_fragment_length_is_accepted() -> None:
    # PS3.5 A.4 wants even fragments, but pydicom and dcmdump both read an odd one.
    ok(PIXEL_HEADER + item(b"") + item(b"abc") + SEQUENCE_END, JPEGBaseline8Bit)


def test_an_odd_value_length_is_accepted() -> None:
    # PS3.5 7.1.1 wants even lengths; pydicom and dcmdump both read odd ones.
    ok(
        explicit(0x00100010, b"PN", b"ABC") + explicit(0x00091010, b"OB", b"x"),
        ExplicitVRLittleEndian,
    )


@pytest.mark.parametrize(
    ("vr", "value"),
    [(b"US", b"\1\0\0"), (b"UL", b"\1\0"), (b"FD", bytes(12)), (b"AT", bytes(6)), (b"SV", b"\0")],
)
def test_a_number_array_of_a_broken_length_is_refused(vr: bytes, value: bytes) -> None:
    # pydicom refuses to read these (dcmdump only warns).
    data = explicit(0x00280010, vr, value)
    refused(data, ExplicitVRLittleEndian, "not a multiple of")


@pytest.mark.parametrize(
    ("tag", "length", "accepted"),
    [
        (0x00280010, 3, False),  # Rows, US in the dictionary
        (0x00280106, 3, False),  # Smallest Image Pixel Value, US or SS
        (0x60000010, 3, False),  # Overlay Rows, US in a repeater group
        (0x00200000, 2, False),  # a group length, UL
        (0x00280010, 4, True),
        (0x00091010, 3, True),  # private: UN without its creator
        (0x00100010, 3, True),
    ],
)
def test_implicit_vr_lengths_follow_the_dictionary(tag: int, length: int, accepted: bool) -> None:
    data = implicit(tag, bytes(length))
    error = check(data, ImplicitVRLittleEndian)
    assert (error is None) == accepted, error


def test_a_value_longer_than_the_dataset_is_refused() -> None:
    data = encode(nested(), ExplicitVRLittleEndian)
    at = data.index(struct.pack("<HH2s", 0x0010, 0x0010, b"PN"))
    corrupt = bytearray(data)
    corrupt[at + 6 : at + 8] = struct.pack("<H", 0xF000)
    error = refused(bytes(corrupt), ExplicitVRLittleEndian, "past end of dataset")
    assert (error.offset, error.tag) == (at, 0x00100010)


def test_an_element_longer_than_its_item_is_refused() -> None:
    content = explicit(0x00080100, b"SH", b"AB") + explicit(0x00080102, b"SH", b"CD")
    short = item(content, length=len(content) - 1)
    sequence = explicit(0x00082218, b"SQ", short)
    refused(
        sequence + explicit(0x00100010, b"PN", b"AB"), ExplicitVRLittleEndian, "past end of item"
    )


def test_an_item_longer_than_its_sequence_is_refused() -> None:
    inner = item(explicit(0x00080100, b"SH", b"AB"))
    sequence = explicit(0x00082218, b"SQ", inner, length=len(inner) - 2)
    refused(sequence + bytes(2), ExplicitVRLittleEndian, "past end of sequence")


def test_a_header_across_the_end_of_an_item_is_refused() -> None:
    content = explicit(0x00080100, b"SH", b"AB") + b"\x08\x00"
    sequence = explicit(0x00082218, b"SQ", item(content))
    refused(sequence + bytes(6), ExplicitVRLittleEndian, "header past end of item")


def test_a_defined_length_sequence_ends_exactly_with_its_last_item() -> None:
    inner = item(explicit(0x00080100, b"SH", b"AB"))
    sequence = explicit(0x00082218, b"SQ", inner + inner)
    ok(sequence + explicit(0x00100010, b"PN", b"AB"), ExplicitVRLittleEndian)
    ok(explicit(0x00082218, b"SQ", b""), ExplicitVRLittleEndian)


def undefined_sequence(content: bytes, tag: int = 0x00082218, vr: bytes = b"SQ") -> bytes:
    return explicit(tag, vr, content, length=UNDEFINED)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (undefined_sequence(item(b"")), "sequence not closed at the end"),
        (
            undefined_sequence(ITEM + struct.pack("<L", UNDEFINED) + SEQUENCE_END),
            "delimiter among elements",
        ),
        (undefined_sequence(ITEM + struct.pack("<L", UNDEFINED)), "item not closed at the end"),
        (SEQUENCE_END, "delimiter among elements"),
        (ITEM_END, "delimiter among elements"),
        (item(b""), "delimiter among elements"),
        (explicit(0x00082218, b"SQ", SEQUENCE_END), "delimiter in defined-length sequence"),
        (explicit(0x00082218, b"SQ", item(ITEM_END)), "delimiter in defined-length item"),
        (undefined_sequence(item(b"") + b"\xfe\xff\xdd\xe0\1\0\0\0"), "length not 0"),
        (
            undefined_sequence(ITEM + struct.pack("<L", UNDEFINED) + b"\xfe\xff\x0d\xe0\2\0\0\0"),
            "length not 0",
        ),
        (undefined_sequence(explicit(0x00100010, b"PN", b"AB")), "not an item in a sequence"),
        (explicit(0x00082218, b"SQ", item(b"", length=UNDEFINED)), "item open at end of parent"),
    ],
)
def test_broken_sequence_structure_is_refused(data: bytes, reason: str) -> None:
    refused(data, ExplicitVRLittleEndian, reason)


def test_undefined_lengths_close_with_their_delimiters() -> None:
    undefined_item = ITEM + struct.pack("<L", UNDEFINED) + explicit(0x00080100, b"SH", b"AB")
    data = undefined_sequence(undefined_item + ITEM_END + item(b"") + SEQUENCE_END)
    ok(data + explicit(0x00100010, b"PN", b"AB"), ExplicitVRLittleEndian)


def deep(levels: int) -> bytes:
    data = explicit(0x00080100, b"SH", b"AB")
    for _ in range(levels):
        data = undefined_sequence(
            ITEM + struct.pack("<L", UNDEFINED) + data + ITEM_END + SEQUENCE_END
        )
    return data


def test_nesting_is_capped() -> None:
    assert run(deep(MAX_DEPTH), ExplicitVRLittleEndian, []) is None
    error = run(deep(MAX_DEPTH + 1), ExplicitVRLittleEndian, [])
    assert error is not None
    assert f"nested deeper than {MAX_DEPTH}" in error.reason


@pytest.mark.parametrize(
    ("vr", "reason"), [(b"XX", "unknown VR XX"), (b"\x10\x00", "no VR (bytes 1000)")]
)
def test_an_explicit_vr_must_be_known(vr: bytes, reason: str) -> None:
    data = struct.pack("<HH2sH", 0x0009, 0x1010, vr, 2) + b"AB"
    refused(data, ExplicitVRLittleEndian, reason)


@pytest.mark.parametrize("vr", [b"OB", b"OW", b"UT"])
def test_undefined_length_is_refused_where_it_cannot_be(vr: bytes) -> None:
    # dcmdump refuses an undefined-length OB that is not Pixel Data.
    refused(
        undefined_sequence(item(b"") + SEQUENCE_END, vr=vr),
        ExplicitVRLittleEndian,
        "undefined length with VR",
    )


def test_an_undefined_length_un_is_an_implicit_vr_sequence() -> None:
    content = item(implicit(0x00080100, b"AB")) + SEQUENCE_END
    ok(undefined_sequence(content, tag=0x00091010, vr=b"UN"), ExplicitVRLittleEndian)
    explicit_content = item(explicit(0x00080100, b"SH", b"AB")) + SEQUENCE_END
    refused(
        undefined_sequence(explicit_content, tag=0x00091010, vr=b"UN"),
        ExplicitVRLittleEndian,
        "past end of item",  # read as implicit, "SH\x02\x00" is a length
    )


def test_an_undefined_length_un_in_big_endian_is_refused() -> None:
    data = struct.pack(">HH2sHL", 0x0009, 0x1010, b"UN", 0, UNDEFINED)
    refused(data + struct.pack(">HHL", 0xFFFE, 0xE0DD, 0), ExplicitVRBigEndian, "big endian")


def test_implicit_vr_sequences_are_found_by_tag_and_by_undefined_length() -> None:
    inner = item(implicit(0x00080100, b"AB"))
    by_tag = implicit(0x00082218, inner)  # Anatomic Region Sequence, defined length
    private = implicit(0x00091010, inner + SEQUENCE_END, length=UNDEFINED)
    public = implicit(0x00100010, inner + SEQUENCE_END, length=UNDEFINED)
    ok(by_tag + private + public, ImplicitVRLittleEndian)
    # The same bytes as a defined-length sequence must hold items.
    refused(
        implicit(0x00082218, implicit(0x00080100, b"AB")), ImplicitVRLittleEndian, "not an item"
    )
    not_items = implicit(0x00091010, implicit(0x00100010, b"AB"), length=UNDEFINED)
    refused(not_items, ImplicitVRLittleEndian, "not an item")


def test_implicit_vr_pixel_data_of_undefined_length_is_refused() -> None:
    data = implicit(0x7FE00010, item(b"") + SEQUENCE_END, length=UNDEFINED)
    refused(data, ImplicitVRLittleEndian, "encapsulated in a native")


@pytest.mark.parametrize("trailing", [b"\0", b"\0\0\0\0", bytes(7)])
def test_bytes_after_the_last_element_are_refused(trailing: bytes) -> None:
    # pydicom ignores fewer than 8 trailing bytes, dcmdump refuses them.
    data = explicit(0x00100010, b"PN", b"AB") + trailing
    error = refused(data, ExplicitVRLittleEndian, "dataset ends inside a header")
    assert error.offset == 10


def test_trailing_padding_is_an_element_like_any_other() -> None:
    data = explicit(0x00100010, b"PN", b"AB") + explicit(0xFFFCFFFC, b"OB", bytes(100))
    ok(data, ExplicitVRLittleEndian)


def test_an_empty_dataset_is_well_formed() -> None:
    assert StreamValidator(ExplicitVRLittleEndian).finish() is None


DEFLATED = DeflatedExplicitVRLittleEndian


def plain() -> bytes:
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = False, True
    write_dataset(buffer, nested())
    return buffer.getvalue()


def odd_deflate_stream() -> bytes:
    """A deflate stream of odd length (without the pad PS3.5 A.5 asks for)."""
    padding = b""
    while len(stream := deflate(plain() + explicit(0x00091012, b"LO", padding))) % 2 == 0:
        padding += b"AB"
    return stream


def gzip_trailed() -> bytes:
    """A deflate stream followed by the gzip trailer some writers leave."""
    data = plain()
    return deflate(data) + struct.pack("<LL", zlib.crc32(data), len(data))


def test_a_deflated_stream_of_odd_length_is_accepted_with_or_without_its_pad() -> None:
    stream = odd_deflate_stream()
    ok(stream, DEFLATED)
    ok(stream + b"\0", DEFLATED)


@pytest.mark.parametrize("tail", [b"\1", b"\0\0", b"gzip", bytes(8), bytes(9)])
def test_after_the_deflate_stream_nothing_but_a_pad_or_a_gzip_trailer(tail: bytes) -> None:
    refused(deflate(plain()) + tail, DEFLATED, "data after the deflate stream")


def test_a_gzip_trailer_after_the_deflate_stream_is_accepted() -> None:
    # pydicom's own test file image_dfl.dcm has one; pydicom and dcmdump read past it.
    stream = gzip_trailed()
    ok(stream, DEFLATED)
    wrong_crc = stream[:-8] + bytes([stream[-8] ^ 1]) + stream[-7:]
    refused(wrong_crc, DEFLATED, "data after the deflate stream")


def test_a_corrupt_deflate_stream_is_refused() -> None:
    stream = bytearray(deflate(plain()))
    stream[0] = 0xFF  # BTYPE 11: a reserved block type
    refused(bytes(stream), DEFLATED, "corrupt deflate stream")


def test_a_deflate_stream_cut_short_is_refused_at_every_cut() -> None:
    stream = deflate(plain())
    for cut in range(len(stream)):
        error = run(stream[:cut], DEFLATED, [])
        assert error is not None, cut
        assert key(run(stream[:cut], DEFLATED, [1] * cut)) == key(error)


def test_deflated_structure_errors_give_inflated_offsets() -> None:
    data = plain() + b"\0\0"
    error = refused(deflate(data), DEFLATED, "dataset ends inside a header")
    assert error.offset == len(data) - 2


def test_a_long_value_is_skipped_in_constant_memory() -> None:
    validator = StreamValidator(ExplicitVRLittleEndian)
    validator.feed(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, 64 * 1024 * 1024))
    fragment = bytes(128 * 1024)
    for _ in range(512):
        validator.feed(fragment)
    assert validator.finish() is None


def test_a_deflate_bomb_is_walked_in_bounded_chunks() -> None:
    size = 32 * 1024 * 1024
    header = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, size)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = compressor.compress(header)
    stream += b"".join(compressor.compress(bytes(1 << 20)) for _ in range(32))
    stream += compressor.flush()
    validator = StreamValidator(DEFLATED)
    validator.feed(stream)
    assert validator.finish() is None


def test_a_deflated_dataset_ending_near_a_multiple_of_the_inflate_chunk_is_whole() -> None:
    # Inflating stops at each full chunk; output zlib still holds must be walked too.
    for total in range(2 * _INFLATE_CHUNK - 40, 2 * _INFLATE_CHUNK + 40, 2):
        header = struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, total - 12)
        validator = StreamValidator(DEFLATED)
        validator.feed(deflate(header + bytes(total - 12)))
        assert validator.finish() is None, total


def test_feed_keeps_no_reference_to_the_fragment() -> None:
    data = bytearray(encode(nested(), ExplicitVRLittleEndian))
    validator = StreamValidator(ExplicitVRLittleEndian)
    for cut in (0, 7, 50, 123):  # cuts inside headers and values alike
        with memoryview(data) as view:
            validator.feed(view[cut : cut + 7])
    data.extend(b"x")  # a BufferError if a view of data were still alive
    assert validator.error is None


def test_the_first_error_stays_and_feed_then_does_nothing() -> None:
    validator = StreamValidator(ExplicitVRLittleEndian)
    validator.feed(struct.pack("<HH2sH", 0x0010, 0x0010, b"ZZ", 0))
    first = validator.error
    assert first is not None
    validator.feed(b"\0" * 100)
    assert validator.error is first
    assert validator.finish() is first


def test_the_comment_fits_an_error_comment() -> None:
    error = ValidationError(0x1A2, 0x7FE00010, "item length odd")
    assert error.comment() == "malformed at 0x1a2 (7FE0,0010): item length odd"
    long = ValidationError(0xFFFFFFFF, 0x7FE00010, "length 4294967294 past end of Pixel Data")
    assert len(long.comment()) <= 64
    assert ValidationError(8, None, "corrupt deflate stream").comment() == (
        "malformed at 0x8: corrupt deflate stream"
    )


# Malformed datasets the validator refuses, written as Part-10 files for dcmdump.
MALFORMED = {
    "cut in a value": explicit(0x00100010, b"PN", b"ABCD")[:-2],
    "trailing bytes": explicit(0x00100010, b"PN", b"AB") + bytes(4),
    "unclosed sequence": undefined_sequence(item(explicit(0x00080100, b"SH", b"AB"))),
    "OB of undefined length": undefined_sequence(item(b"AB") + SEQUENCE_END, vr=b"OB"),
    "unknown VR": explicit(0x00091010, b"LO", b"TEST") + explicit(0x00091011, b"XX", b"abcd"),
    "element past its item": explicit(
        0x00082218, b"SQ", item(explicit(0x00080100, b"SH", b"ABCD")[:-2])
    )
    + explicit(0x00100010, b"PN", b"AB"),
}


def dcmdump_reads(path: Path) -> bool:
    return (
        subprocess.run(
            ["dcmdump", str(path)], check=False, capture_output=True, timeout=30
        ).returncode
        == 0
    )


@pytest.mark.interop
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_dcmdump_fails_where_the_validator_refuses(name: str, tmp_path: Path) -> None:
    data = MALFORMED[name]
    assert run(data, ExplicitVRLittleEndian, []) is not None
    path = tmp_path / "malformed.dcm"
    path.write_bytes(part10(data, ExplicitVRLittleEndian))
    assert not dcmdump_reads(path)


@pytest.mark.interop
@pytest.mark.parametrize(
    ("name", "dataset", "syntax"),
    [
        ("odd value", explicit(0x00100010, b"PN", b"ABC"), ExplicitVRLittleEndian),
        ("odd fragment", PIXEL_HEADER + item(b"") + item(b"abc") + SEQUENCE_END, JPEGBaseline8Bit),
        ("nested", encode(nested(), ExplicitVRLittleEndian), ExplicitVRLittleEndian),
        ("gzip trailer", gzip_trailed(), DEFLATED),
        ("odd deflate stream", odd_deflate_stream(), DEFLATED),
    ],
)
def test_dcmdump_reads_the_near_misses_the_validator_accepts(
    name: str, dataset: bytes, syntax: str, tmp_path: Path
) -> None:
    assert run(dataset, syntax, []) is None
    path = tmp_path / "near-miss.dcm"
    path.write_bytes(part10(dataset, syntax))
    assert dcmdump_reads(path)


def has_file_meta(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(132)[128:] == b"DICM"


PYDICOM_FILES = [
    path
    for path in sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))
    if has_file_meta(path)
]


def pydicom_reads_all(path: Path) -> bool:
    def read(ds: Dataset) -> None:
        for element in ds:  # iteration converts each raw element
            if element.VR == "SQ":
                for child in element.value:
                    read(child)

    try:
        read(dcmread(path))
    except Exception:  # pydicom raises many types on malformed input
        return False
    return True


@pytest.mark.interop
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", PYDICOM_FILES, ids=lambda path: path.name)
def test_pydicoms_test_files_are_accepted_exactly_when_pydicom_and_dcmdump_read_them(
    path: Path,
) -> None:
    # Real writers' files, some damaged on purpose (MR_truncated.dcm, a gzip trailer in
    # image_dfl.dcm, an implicit dataset under an explicit syntax in SC_rgb_jpeg.dcm).
    with path.open("rb") as file:
        read_preamble(file, False)
        meta = _read_file_meta_info(file)  # pydicom has no public reader of its end
        if "TransferSyntaxUID" not in meta:
            pytest.skip("no transfer syntax")
        dataset = file.read()
    accepted = run(dataset, meta.TransferSyntaxUID, [16384] * (len(dataset) // 16384)) is None
    assert accepted == (pydicom_reads_all(path) and dcmdump_reads(path))
