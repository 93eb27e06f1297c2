"""Durable writes, the File Meta encoder and the header reader."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dcmrecvd import filemeta, header, storage
from tests import dicomgen


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(storage.TEMP_PREFIX))


def test_write_atomic_writes_all_parts_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "CT.1"
    storage.write_atomic(target, [b"abc", memoryview(b"def")])
    assert target.read_bytes() == b"abcdef"
    assert leftovers(tmp_path) == []


def test_write_atomic_replaces_by_default(tmp_path: Path) -> None:
    target = tmp_path / "CT.1"
    target.write_bytes(b"old")
    storage.write_atomic(target, [b"new"])
    assert target.read_bytes() == b"new"


def test_write_atomic_without_replace_keeps_the_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "CT_1"
    target.write_bytes(b"first")
    with pytest.raises(storage.NameTaken):
        storage.write_atomic(target, [b"second"], replace=False)
    assert target.read_bytes() == b"first"
    assert leftovers(tmp_path) == []


def test_failure_leaves_neither_final_nor_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "is-a-directory"
    target.mkdir()
    with pytest.raises(
        storage.StorageError, match=r"cannot store received object: .*Is a directory"
    ):
        storage.write_atomic(target, [b"data"])
    assert target.is_dir()
    assert leftovers(tmp_path) == []


def test_ensure_directory_reports_like_dcmtk(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(b"")
    with pytest.raises(storage.StorageError) as err:
        storage.ensure_directory(tmp_path / "data" / "2024")
    assert str(err.value) == (
        f"cannot create directory for received object: {tmp_path}/data/2024: "
        "Cannot create directory: Not a directory"
    )
    storage.ensure_directory(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()


def test_file_meta_reads_back(tmp_path: Path) -> None:
    raw = filemeta.encode("1.2.3", "4.5.67", ExplicitVRLittleEndian, "SENDER")
    assert raw[:132] == b"\x00" * 128 + b"DICM"
    meta = dcmread(io.BytesIO(raw), force=True).file_meta
    assert meta.MediaStorageSOPClassUID == "1.2.3"
    assert meta.MediaStorageSOPInstanceUID == "4.5.67"
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.ImplementationClassUID == filemeta.IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == filemeta.IMPLEMENTATION_VERSION_NAME
    assert meta.SourceApplicationEntityTitle == "SENDER"
    assert meta.FileMetaInformationGroupLength == len(raw) - 132 - 12
    without_ae = dcmread(
        io.BytesIO(filemeta.encode("1.2", "3.4", ExplicitVRLittleEndian)), force=True
    )
    assert "SourceApplicationEntityTitle" not in without_ae.file_meta


def test_file_meta_keeps_hostile_uids_and_refuses_oversized_ones() -> None:
    meta = dcmread(
        io.BytesIO(filemeta.encode("1.2", "../../x", ExplicitVRLittleEndian)), force=True
    )
    assert meta.file_meta.MediaStorageSOPInstanceUID == "../../x"
    with pytest.raises(ValueError, match="too long"):
        filemeta.encode("1.2", "1" * 70000, ExplicitVRLittleEndian)


def encoded(spec: dicomgen.Spec, syntax: str) -> bytes:
    ds = dicomgen.dataset(spec)
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = syntax == ImplicitVRLittleEndian
    buffer.is_little_endian = syntax != ExplicitVRBigEndian
    write_dataset(buffer, ds)
    data = buffer.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = deflater.compress(data) + deflater.flush()
    return data


@pytest.mark.parametrize(
    "syntax",
    [
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    ],
)
def test_header_elements_in_every_uncompressed_syntax(syntax: str) -> None:
    spec = dicomgen.Spec(dicomgen.CT, "1.2.3.4.100", series_date="20240115 ")
    found = header.read(encoded(spec, syntax), syntax)
    assert found == header.Header(dicomgen.CT, "1.2.3.4.100", "20240115", "DA")


def test_header_keeps_the_encoded_vr_and_absence() -> None:
    lo = dicomgen.Spec(dicomgen.SC, "1.2.3", series_date="20240115", series_date_vr="LO")
    assert (
        header.read(encoded(lo, ExplicitVRLittleEndian), ExplicitVRLittleEndian).series_date_vr
        == "LO"
    )
    none = dicomgen.Spec(dicomgen.MR, "1.2.4", series_date=None)
    found = header.read(encoded(none, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    assert (found.series_date, found.series_date_vr) == ("", "")


def test_header_refuses_an_unknown_transfer_syntax() -> None:
    with pytest.raises(header.HeaderError):
        header.read(b"\x08\x00\x16\x00", "1.2.3.4.999.2")
