"""The validator against pydicom's reader, on random datasets, cut and corrupted.

Random well-formed datasets (elements of every VR, private ones, sequences nested with
defined and undefined lengths, encapsulated Pixel Data) written by pydicom must be
accepted; whatever the validator accepts after a random cut or byte change, pydicom must
read back element by element. Where the two legitimately differ, the case is excluded
narrowly below, with the reason.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom._dicom_dict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from dcmrecvd.store.validation import StreamValidator
from tests.support import dicomgen
from tests.support.encoding import deflate, encode, part10

SYNTAXES = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
)


def _tags(vr: str, count: int = 3) -> list[int]:
    """A few public, current tags of vr (single-valued or not), outside groups 0000-0002.

    Specific Character Set is left out: pydicom decodes it while reading and fails on a
    bad one, a value the validator does not look at.
    """
    found = [
        tag
        for tag, (entry_vr, _vm, _name, retired, _keyword) in sorted(DicomDictionary.items())
        if entry_vr == vr and not retired and tag >> 16 > 2 and tag != 0x00080005
    ]
    return found[:count]


_TEXT = st.text(alphabet="ABCXYZ019 _", max_size=10)
_STRINGS: dict[str, st.SearchStrategy[Any]] = {
    "AE": st.text(alphabet="ABC123", min_size=1, max_size=16),
    "AS": st.sampled_from(["030Y", "012M"]),
    "DA": st.sampled_from(["20240115", ""]),
    "DT": st.sampled_from(["20240115120000", ""]),
    "TM": st.sampled_from(["120000.5", "0101"]),
    "DS": st.sampled_from(["1.5", "-2", "3E2", ""]),
    "IS": st.sampled_from(["1", "-20", "300"]),
    "UI": st.sampled_from(["1.2.3", dicomgen.CT]),
    "UR": st.sampled_from(["http://x/y", ""]),
    **{vr: _TEXT for vr in ("CS", "SH", "LO", "UC", "PN", "ST", "LT", "UT")},
}
_NUMBERS: dict[str, st.SearchStrategy[Any]] = {
    "US": st.integers(0, 0xFFFF),
    "SS": st.integers(-0x8000, 0x7FFF),
    "UL": st.integers(0, 0xFFFFFFFF),
    "SL": st.integers(-(1 << 31), (1 << 31) - 1),
    "AT": st.integers(0, 0xFFFFFFFF),
    "UV": st.integers(0, (1 << 64) - 1),
    "SV": st.integers(-(1 << 63), (1 << 63) - 1),
    "FL": st.integers(-1000, 1000).map(float),
    "FD": st.integers(-1000, 1000).map(float),
}
_BYTES = {"OB": 1, "OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _bytes(multiple: int) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=24).map(lambda b: b[: len(b) - len(b) % multiple])


_element = st.one_of(
    *(st.tuples(st.sampled_from(_tags(vr)), st.just(vr), v) for vr, v in _STRINGS.items()),
    *(
        st.tuples(st.sampled_from(_tags(vr)), st.just(vr), st.lists(v, max_size=3))
        for vr, v in _NUMBERS.items()
    ),
    *(st.tuples(st.sampled_from(_tags(vr)), st.just(vr), _bytes(m)) for vr, m in _BYTES.items()),
    # Private, without a creator pydicom knows: UN to pydicom, opaque to the validator.
    st.tuples(st.integers(0x00091000, 0x000910FF), st.sampled_from(["UN", "OB", "LO"]), _bytes(2)),
)
# A sequence: its tag, its items, whether it and its items have undefined lengths.
_SEQUENCE_TAGS = [*_tags("SQ", 6), 0x00091100]


def _with_sequences(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    sequence = st.tuples(
        st.sampled_from(_SEQUENCE_TAGS),
        st.just("SQ"),
        st.lists(st.tuples(children, st.booleans()), min_size=1, max_size=3),
        st.booleans(),
    )
    return st.lists(st.one_of(sequence, _element), min_size=1, max_size=8)


_datasets = st.recursive(st.lists(_element, min_size=1, max_size=8), _with_sequences, max_leaves=30)


def build(elements: list[Any]) -> Dataset:
    ds = Dataset()
    for spec in elements:
        tag, vr, value = spec[0], spec[1], spec[2]
        if vr == "SQ":
            items = []
            for content, undefined_item in value:
                child = build(content)
                child.is_undefined_length_sequence_item = undefined_item
                items.append(child)
            ds.add_new(tag, "SQ", Sequence(items))
            ds[tag].is_undefined_length = spec[3]
        else:
            ds.add_new(tag, vr, value)
    return ds


def read_all(ds: Dataset) -> None:
    """Read every element's value, as a user of the stored file would."""
    for element in ds:  # iteration converts each raw element
        if element.VR == "SQ":
            for child in element.value:
                read_all(child)


def pydicom_reads(dataset: bytes, syntax: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_all(dcmread(io.BytesIO(part10(dataset, syntax)), force=True))
    except Exception:  # pydicom raises many types on malformed input
        return False
    return True


def validate(data: bytes, syntax: str, splits: list[int]) -> bool:
    validator = StreamValidator(syntax)
    at = 0
    for size in splits:
        validator.feed(data[at : at + size])
        at += size
    validator.feed(data[at:])
    return validator.finish() is None


def encoded(elements: list[Any], syntax: str, frames: list[bytes] | None) -> bytes:
    ds = build(elements)
    if syntax == JPEGBaseline8Bit and frames is not None:
        ds.add_new(0x7FE00010, "OB", encapsulate(frames))
        ds["PixelData"].is_undefined_length = True
    return encode(ds, ExplicitVRLittleEndian if syntax == JPEGBaseline8Bit else syntax)


_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples in every run; 20000 random ones passed once
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_frames = st.one_of(st.none(), st.lists(st.binary(min_size=1, max_size=9), min_size=1, max_size=3))


@_SETTINGS
@given(
    elements=_datasets,
    syntax=st.sampled_from(SYNTAXES),
    frames=_frames,
    splits=st.lists(st.integers(1, 64), max_size=20),
)
def test_a_well_formed_dataset_is_accepted_and_read_by_pydicom(
    elements: list[Any], syntax: str, frames: list[bytes] | None, splits: list[int]
) -> None:
    data = encoded(elements, syntax, frames)
    assert validate(data, syntax, splits)
    assert pydicom_reads(data, syntax)


@_SETTINGS
@given(
    elements=_datasets,
    syntax=st.sampled_from(SYNTAXES),
    frames=_frames,
    # Where to cut and which bytes to change to what, in thousandths of the length.
    damage=st.tuples(
        st.one_of(st.just(1000), st.integers(0, 999)),
        st.lists(st.tuples(st.integers(0, 999), st.integers(0, 255)), max_size=2),
    ),
    splits=st.lists(st.integers(1, 64), max_size=20),
)
def test_what_the_validator_accepts_after_damage_pydicom_reads(
    elements: list[Any],
    syntax: str,
    frames: list[bytes] | None,
    damage: tuple[int, list[tuple[int, int]]],
    splits: list[int],
) -> None:
    cut, flips = damage
    deflated = syntax == DeflatedExplicitVRLittleEndian
    plain = encoded(elements, ExplicitVRLittleEndian if deflated else syntax, frames)
    damaged = bytearray(plain)
    for at, value in flips:
        damaged[at * len(damaged) // 1000] = value
    # A deflated dataset is damaged before deflating (its structure is what is tested)
    # and cut after: a cut deflate stream must always be refused.
    data = deflate(bytes(damaged)) if deflated else bytes(damaged)
    data = data[: cut * len(data) // 1000]
    if validate(data, syntax, splits):
        assert pydicom_reads(data, syntax), data.hex()
