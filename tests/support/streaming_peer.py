"""A pynetdicom requestor that can stop half-way through a C-STORE dataset."""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE

from dcmrecvd.settings import Settings
from dcmrecvd.store import storage
from tests.support import dicomgen
from tests.support.net import LOCALHOST


def settings(port: int, out: Path, **changes: Any) -> Settings:
    """Settings for a receiver on `port` storing into `out`."""
    return dataclasses.replace(Settings(port=port, output_dir=str(out)), **changes)


# Our receiver's default max PDU; fragments of this size reach it one at a time.
PDU = 16384
# A dataset bigger than the in-memory prefix many times over.
BIG = 4 * 1024 * 1024


def wait_until(condition: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what}")
        time.sleep(0.01)  # polling interval of the deadline loop, not synchronisation


def dataset(sop_instance: str, pixel_bytes: int = 16, patient: str = "Test^Object") -> Dataset:
    """A CT dataset with `pixel_bytes` of 8-bit pixel data (rounded to whole rows of 256)."""
    ds = dicomgen.dataset(dicomgen.Spec(dicomgen.CT, sop_instance))
    ds.PatientName = patient
    if pixel_bytes > 16:
        ds.Columns = 256
        ds.Rows = max(1, pixel_bytes // 256)
        ds.PixelData = bytes(i % 251 for i in range(ds.Rows * 256))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def encoded(ds: Dataset) -> bytes:
    """`ds` as Explicit VR Little Endian dataset bytes, as a pynetdicom requestor sends it."""
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = False
    buffer.is_little_endian = True
    write_dataset(buffer, ds)
    return buffer.getvalue()


def temp_files(output_dir: Path) -> list[Path]:
    spool = storage.spool_directory(str(output_dir))
    if not spool.is_dir():
        return []
    return sorted(spool.iterdir())


def final_files(output_dir: Path) -> list[str]:
    return sorted(
        str(p.relative_to(output_dir))
        for p in output_dir.rglob("*")
        if p.is_file() and storage.SPOOL_DIRECTORY not in p.parts
    )


def body(path: Path) -> bytes:
    """The dataset bytes of a stored Part-10 file (everything after the meta group)."""
    raw = path.read_bytes()
    group_length = int.from_bytes(raw[140:144], "little")
    return raw[144 + group_length :]


def meta_of(path: Path, *keywords: str) -> tuple[object, ...]:
    """The File Meta elements `keywords` of the stored file at `path`."""
    meta = dcmread(path, stop_before_pixels=True).file_meta
    return tuple(meta.get(k) for k in keywords)


@contextmanager
def association(port: int, calling: str = "SENDER") -> Iterator[Any]:
    ae = AE(ae_title=calling)
    ae.acse_timeout = 10
    ae.dimse_timeout = 30
    ae.maximum_pdu_size = PDU
    ae.add_requested_context(dicomgen.CT, ExplicitVRLittleEndian)
    assoc = ae.associate(LOCALHOST, port, ae_title="ANY")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def send_part(assoc: Any, ds: Dataset, fraction: float) -> None:
    """Send the command and the first `fraction` of the P-DATA of a C-STORE of `ds`."""
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = io.BytesIO(encoded(ds))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    context_id = assoc.accepted_contexts[0].context_id
    pdus = list(message.encode_msg(context_id, assoc.acceptor.maximum_length))
    for pdu in pdus[: max(2, int(len(pdus) * fraction))]:
        assoc.dul.send_pdu(pdu)
