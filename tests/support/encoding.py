"""Datasets encoded as a sender would put them on the wire, and as Part 10 files."""

from __future__ import annotations

import zlib

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from tests.support import dicomgen

# (implicit VR, little endian) of each transfer syntax the tests encode in.
FLAGS: dict[str, tuple[bool, bool]] = {
    ImplicitVRLittleEndian: (True, True),
    ExplicitVRLittleEndian: (False, True),
    ExplicitVRBigEndian: (False, False),
    DeflatedExplicitVRLittleEndian: (False, True),
    JPEGBaseline8Bit: (False, True),
}


def encode(ds: Dataset, syntax: str) -> bytes:
    """ds as pydicom writes it in syntax (deflated for the deflated syntax)."""
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = FLAGS[syntax]
    write_dataset(buffer, ds)
    if syntax == DeflatedExplicitVRLittleEndian:
        return deflate(buffer.getvalue())
    return buffer.getvalue()


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def part10(dataset: bytes, syntax: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(dicomgen.SC)
    meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.600")
    meta.TransferSyntaxUID = UID(syntax)
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = False, True
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + buffer.getvalue() + dataset
