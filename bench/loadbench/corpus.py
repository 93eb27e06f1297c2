"""Deterministic Part-10 corpora and their manifests.

Every byte follows from (kind, count, seed, stream): UIDs are 2.25 UIDs of a SHA-256 of
those, pixel bytes a SHAKE-128 stream of them, and the File Meta names this generator,
not pydicom's version, so a corpus written twice is identical file for file. No numpy.

Kinds: "ct" (CT Image Storage, 512x512x16 bit, about 0.5 MB, series of a tenth of the
corpus, three series per study), "small" (64x64 8-bit Secondary Capture and Basic Text
SR, alternating, a few KB) and "big" (one Enhanced CT of `size_mb` MiB of frames).
The stream "probe" gives the latency probe instances of the same kind whose UIDs no
"load" corpus holds.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
KINDS = ("ct", "small", "big")
DEFAULT_COUNTS = {"ct": 1000, "small": 2000, "big": 1}
# Part of the manifest: a corpus written by another version of this module is rewritten.
GENERATOR = "loadbench-corpus-1"
MANIFEST = "manifest.json"
FRAME = 512 * 512 * 2
_WORDS = (
    "no",
    "acute",
    "abnormality",
    "stable",
    "nodule",
    "follow-up",
    "recommended",
    "unremarkable",
    "liver",
    "kidney",
    "lung",
    "contrast",
    "enhancement",
    "measuring",
    "mm",
    "compared",
    "with",
    "prior",
    "examination",
)


def uid(seed: int, *parts: object) -> str:
    """A 2.25 UID (a UUID as a decimal number) from the seed and the parts."""
    digest = hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big') >> 2}"


def noise(size: int, seed: int, *parts: object) -> bytes:
    """`size` pseudo-random bytes from the seed and the parts."""
    return hashlib.shake_128("|".join(map(str, (seed, *parts))).encode()).digest(size)


IMPLEMENTATION_CLASS_UID = uid(0, GENERATOR)


@dataclass(frozen=True)
class Entry:
    """One file of a corpus."""

    file: str
    sop_instance_uid: str
    sop_class_uid: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """What a corpus directory holds; written as manifest.json beside the files."""

    kind: str
    count: int
    seed: int
    stream: str
    size_mb: int
    entries: tuple[Entry, ...]
    generator: str = GENERATOR

    @property
    def total_bytes(self) -> int:
        return sum(entry.bytes for entry in self.entries)

    @property
    def mean_bytes(self) -> int:
        return self.total_bytes // max(1, len(self.entries))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["entries"] = tuple(Entry(**entry) for entry in data["entries"])
        return cls(**data)


@dataclass(frozen=True)
class Corpus:
    """A manifest and the directory that holds its files."""

    manifest: Manifest
    directory: Path

    def paths(self) -> list[Path]:
        return [self.directory / entry.file for entry in self.manifest.entries]

    def by_uid(self) -> dict[str, Path]:
        """SOP Instance UID -> file."""
        return {e.sop_instance_uid: self.directory / e.file for e in self.manifest.entries}


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = "LOADBENCH1"
    return meta


def _day(start: datetime.date, days: int) -> str:
    return (start + datetime.timedelta(days=days)).strftime("%Y%m%d")


def _patient_study(
    seed: int, stream: str, sop_class: str, sop_instance: str, *, patient: int, study: int
) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_instance)
    ds.preamble = b"\0" * 128
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.PatientName = f"LOAD^{stream.upper()}{patient:03d}"
    ds.PatientID = f"LOAD{seed:04d}-{stream}-{patient:03d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = uid(seed, stream, "study", patient, study)
    ds.StudyID = str(study + 1)
    ds.AccessionNumber = f"A{seed:03d}{study:05d}"
    ds.ReferringPhysicianName = "REF^DOCTOR"
    ds.Manufacturer = "DCMRECVD LOADBENCH"
    ds.InstitutionName = "Loopback General Hospital"
    return ds


def _image_pixel(ds: Dataset, rows: int, columns: int, bits: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0


def ct_dataset(seed: int, stream: str, index: int, count: int) -> Dataset:
    """CT `index` of `count`: ten series of count/10 slices, three series per study."""
    per_series = max(1, -(-count // 10))
    series, slice_ = divmod(index, per_series)
    study = series // 3
    instance = uid(seed, stream, "ct", index)
    ds = _patient_study(seed, stream, CT_IMAGE, instance, patient=0, study=study)
    start = datetime.date(2024, 1, 1)
    ds.StudyDate = _day(start, study * 3)
    ds.StudyTime = "080000"
    ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = _day(start, series)
    ds.SeriesTime = f"{8 + series % 10:02d}{series % 60:02d}00"
    ds.ContentTime = f"{8 + series % 10:02d}{series % 60:02d}{slice_ % 60:02d}"
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesInstanceUID = uid(seed, stream, "ct-series", series)
    ds.SeriesNumber = series + 1
    ds.SeriesDescription = f"Load CT series {series + 1}"
    ds.InstanceNumber = slice_ + 1
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = uid(seed, stream, "ct-frame-of-reference", series)
    ds.PositionReferenceIndicator = ""
    ds.BodyPartExamined = "CHEST"
    ds.KVP = "120"
    ds.SliceThickness = "1.25"
    ds.ImagePositionPatient = ["-250.0", "-250.0", f"{-slice_ * 1.25:.2f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = f"{-slice_ * 1.25:.2f}"
    ds.PixelSpacing = ["0.9765625", "0.9765625"]
    _image_pixel(ds, 512, 512, 16)
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.PixelData = noise(FRAME, seed, stream, "ct-pixels", index)
    return ds


def _text_sr(ds: Dataset, rng: random.Random) -> None:
    ds.Modality = "SR"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    title = Dataset()
    title.CodeValue = "18748-4"
    title.CodingSchemeDesignator = "LN"
    title.CodeMeaning = "Diagnostic Imaging Report"
    ds.ConceptNameCodeSequence = Sequence([title])
    items = []
    for _ in range(rng.randint(2, 5)):
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "TEXT"
        name = Dataset()
        name.CodeValue = "121071"
        name.CodingSchemeDesignator = "DCM"
        name.CodeMeaning = "Finding"
        item.ConceptNameCodeSequence = Sequence([name])
        item.TextValue = " ".join(rng.choices(_WORDS, k=rng.randint(40, 250)))
        items.append(item)
    ds.ContentSequence = Sequence(items)


def small_dataset(seed: int, stream: str, index: int) -> Dataset:
    """Even indexes a 64x64 8-bit Secondary Capture, odd ones a Basic Text SR."""
    study = index // 100
    sop_class = SECONDARY_CAPTURE if index % 2 == 0 else BASIC_TEXT_SR
    instance = uid(seed, stream, "small", index)
    ds = _patient_study(seed, stream, sop_class, instance, patient=1, study=study)
    if sop_class == SECONDARY_CAPTURE:
        ds.Modality = "OT"
        ds.ConversionType = "WSD"
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.PatientOrientation = ""
        _image_pixel(ds, 64, 64, 8)
        ds.PixelData = noise(64 * 64, seed, stream, "small-pixels", index)
    else:
        # Seeded per instance, so that any one instance can be rebuilt alone.
        _text_sr(ds, random.Random(f"{seed}|{stream}|small-text|{index}"))
    day = _day(datetime.date(2024, 6, 1), study)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = day
    ds.StudyTime = "090000"
    ds.ContentTime = f"09{(index // 60) % 60:02d}{index % 60:02d}"
    ds.SeriesInstanceUID = uid(seed, stream, "small-series", study, index % 2)
    ds.SeriesNumber = 100 + index % 2
    ds.InstanceNumber = index + 1
    return ds


def big_dataset(seed: int, stream: str, size_mb: int) -> Dataset:
    """One Enhanced CT of `size_mb` MiB of 512x512x16 bit frames, per-frame groups."""
    frames = max(1, size_mb * 1024 * 1024 // FRAME)
    instance = uid(seed, stream, "big", size_mb)
    ds = _patient_study(seed, stream, ENHANCED_CT, instance, patient=2, study=0)
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240915"
    ds.StudyTime = ds.SeriesTime = "100000"
    ds.ContentTime = "100500"
    ds.AcquisitionDateTime = "20240915100500"
    ds.SeriesInstanceUID = uid(seed, stream, "big-series", size_mb)
    ds.SeriesNumber = 900
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = uid(seed, stream, "big-frame-of-reference", size_mb)
    ds.PositionReferenceIndicator = ""
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    _image_pixel(ds, 512, 512, 16)
    ds.NumberOfFrames = frames
    ds.AcquisitionNumber = 1
    measures = Dataset()
    measures.PixelSpacing = ["0.9765625", "0.9765625"]
    measures.SliceThickness = "1.0"
    orientation = Dataset()
    orientation.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for frame in range(frames):
        content = Dataset()
        content.FrameAcquisitionNumber = 1
        content.InStackPositionNumber = frame + 1
        position = Dataset()
        position.ImagePositionPatient = ["-250.0", "-250.0", f"{-frame:.1f}"]
        group = Dataset()
        group.FrameContentSequence = Sequence([content])
        group.PlanePositionSequence = Sequence([position])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = noise(frames * FRAME, seed, stream, "big-pixels", size_mb)
    return ds


def datasets(
    kind: str, count: int, seed: int, stream: str, size_mb: int
) -> Iterator[tuple[str, Dataset]]:
    """(file name, dataset) of every instance of the corpus, in order."""
    if kind == "ct":
        for index in range(count):
            yield f"ct_{index:06d}.dcm", ct_dataset(seed, stream, index, count)
    elif kind == "small":
        for index in range(count):
            yield f"small_{index:06d}.dcm", small_dataset(seed, stream, index)
    elif kind == "big":
        yield f"big_{size_mb}MiB.dcm", big_dataset(seed, stream, size_mb)
    else:
        raise ValueError(f"unknown corpus kind {kind!r} (one of {', '.join(KINDS)})")


def write(
    directory: Path, kind: str, count: int, seed: int, *, stream: str = "load", size_mb: int = 1024
) -> Manifest:
    """Write the corpus and its manifest into `directory` (created; old files replaced)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    for old in directory.glob("*.dcm"):
        old.unlink()
    entries = []
    for name, ds in datasets(kind, count, seed, stream, size_mb):
        path = directory / name
        ds.save_as(path, enforce_file_format=True)
        entries.append(Entry(name, ds.SOPInstanceUID, ds.SOPClassUID, path.stat().st_size))
    count = len(entries)
    manifest = Manifest(kind, count, seed, stream, size_mb if kind == "big" else 0, tuple(entries))
    # The manifest last: a corpus whose writing was cut short has none and is rewritten.
    (directory / MANIFEST).write_text(manifest.to_json())
    return manifest


def load(directory: Path) -> Manifest:
    return Manifest.from_json((directory / MANIFEST).read_text())


def ensure(
    directory: Path, kind: str, count: int, seed: int, *, stream: str = "load", size_mb: int = 1024
) -> Manifest:
    """The corpus in `directory`, written first unless it is there whole, as asked."""
    wanted = (kind, 1 if kind == "big" else count, seed, stream, size_mb if kind == "big" else 0)
    try:
        found = load(directory)
    except (OSError, ValueError, TypeError, KeyError):
        return write(directory, kind, count, seed, stream=stream, size_mb=size_mb)
    have = (found.kind, found.count, found.seed, found.stream, found.size_mb)
    whole = all(
        (directory / entry.file).is_file()
        and (directory / entry.file).stat().st_size == entry.bytes
        for entry in found.entries
    )
    if have != wanted or found.generator != GENERATOR or not whole:
        return write(directory, kind, count, seed, stream=stream, size_mb=size_mb)
    return found


def corpus_dir(root: Path, kind: str, count: int, seed: int, *, stream: str, size_mb: int) -> Path:
    """Where a corpus lives under `root`: its parameters are its name."""
    if kind == "big":
        return root / f"{stream}-big-{size_mb}MiB-seed{seed}"
    return root / f"{stream}-{kind}-{count}-seed{seed}"
