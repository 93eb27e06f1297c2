"""Test objects: small, valid Part-10 files of several kinds, and hostile ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
PRIVATE_SOP = "1.2.3.4.999.1"


@dataclass(frozen=True)
class Spec:
    """One object to make: its SOP class and instance UID and an optional Series Date."""

    sop_class: str
    sop_instance: str
    series_date: str | None = "20240115"
    series_date_vr: str = "DA"


def dataset(spec: Spec) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = spec.sop_class
    ds.SOPInstanceUID = spec.sop_instance
    if spec.series_date is not None:
        ds.add_new(0x00080021, spec.series_date_vr, spec.series_date)
    ds.Modality = "OT"
    ds.PatientName = "Test^Object"
    ds.PatientID = "DCMRECVD-1"
    ds.StudyInstanceUID = "1.2.3.4.1"
    ds.SeriesInstanceUID = "1.2.3.4.1.1"
    # An explicit-length sequence: DCMTK's normal mode would rewrite it, we must not.
    item = Dataset()
    item.CodeValue = "T-D1100"
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = "Head"
    ds.AnatomicRegionSequence = Sequence([item])
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(16))
    return ds


def write(spec: Spec, path: Path) -> Path:
    """Write `spec` as an Explicit VR Little Endian Part-10 file."""
    part10(spec).save_as(path, enforce_file_format=True)
    return path


def part10(spec: Spec) -> Dataset:
    """`spec`'s dataset with an Explicit VR Little Endian File Meta group (for sending)."""
    ds = dataset(spec)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(spec.sop_class)
    meta.MediaStorageSOPInstanceUID = UID(spec.sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


STANDARD = [
    Spec(CT, "1.2.3.4.100"),
    Spec(MR, "1.2.3.4.200", series_date=None),
    Spec(BASIC_TEXT_SR, "1.2.3.4.300", series_date="2023.03.04"),
    Spec(ENCAPSULATED_PDF, "1.2.3.4.500", series_date="20230304\\20240506"),
    Spec(SC, "1.2.3.4.600", series_date="20240230"),
    Spec(SC, "1.2.3.4.601", series_date="2024XX15"),
    Spec(SC, "1.2.3.4.602", series_date="20241301"),
    Spec(SC, "1.2.3.4.603", series_date=""),
    Spec(SC, "1.2.3.4.604", series_date="20240115 "),
    Spec(SC, "1.2.3.4.605", series_date="20240115", series_date_vr="LO"),
]
PRIVATE = [Spec(PRIVATE_SOP, "1.2.3.4.998")]
HOSTILE = [
    Spec(CT, "../../evil/1.2"),
    Spec(CT, "a/b c$d_e"),
    Spec(CT, ".."),
]


def write_all(specs: list[Spec], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [write(spec, directory / f"obj{i:03d}.dcm") for i, spec in enumerate(specs)]
