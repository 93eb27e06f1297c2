"""A path template names received files from their elements, hostile ones included.

Raw peers send datasets whose values no toolkit would encode; every store must answer
Success, land inside the output directory under sane components, and leave the
association able to go on.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import dcmread

from dcmrecvd import pathtemplate
from dcmrecvd.receiver import Receiver
from dcmrecvd.settings import Settings, StorageMode
from tests.support import asconfigs, rawpdu
from tests.support.asconfigs import VERIFY_CT_CFG
from tests.support.net import free_port
from tests.support.peers import our_receiver
from tests.support.streaming_peer import final_files, temp_files, wait_until

TEMPLATE = (
    "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{Modality}.{SOPInstanceUID}{extension}"
)
CONTEXTS = [(1, rawpdu.VERIFICATION, (rawpdu.IMPLICIT,)), (3, rawpdu.CT, (rawpdu.EXPLICIT,))]
NAME_MAX = 255


def dataset(
    sop_instance: str,
    *,
    patient_id: bytes | None = b"PID-1",
    charset: bytes | None = None,
    study: bytes = b"1.2.3",
    series: bytes = b"1.2.3.4",
    private_bytes: int = 0,
) -> bytes:
    """An Explicit VR Little Endian CT dataset with the values as given, in tag order."""

    def short(group: int, element: int, vr: bytes, value: bytes) -> bytes:
        value += (b"\0" if vr == b"UI" else b" ") * (len(value) % 2)
        return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value

    data = b""
    if charset is not None:
        data += short(0x0008, 0x0005, b"CS", charset)
    data += short(0x0008, 0x0016, b"UI", rawpdu.CT.encode())
    data += short(0x0008, 0x0018, b"UI", sop_instance.encode())
    data += short(0x0008, 0x0060, b"CS", b"CT")
    if private_bytes:
        # A large element before the ones the template wants: past the 64 KiB prefix.
        data += short(0x0009, 0x0010, b"LO", b"DCMRECVD TEST")
        data += struct.pack("<HH", 0x0009, 0x1000) + b"OB\0\0"
        data += struct.pack("<L", private_bytes) + b"\x5a" * private_bytes
    if patient_id is not None:
        data += short(0x0010, 0x0020, b"LO", patient_id)
    data += short(0x0020, 0x000D, b"UI", study)
    data += short(0x0020, 0x000E, b"UI", series)
    data += struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<L", 2) + b"\x01\x02"
    return data


@contextmanager
def receiver(
    tmp_path: Path, template: str = TEMPLATE, **changes: object
) -> Iterator[tuple[int, Path]]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    port = free_port()
    settings = dataclasses.replace(
        Settings(port=port, output_dir=str(out), acse_timeout=2, dimse_timeout=2, extension=".dcm"),
        path_template=pathtemplate.parse(template),
        **changes,  # type: ignore[arg-type]
    )
    running: Receiver
    with our_receiver(asconfigs.load(tmp_path, VERIFY_CT_CFG), port, settings) as running:
        yield port, out
        wait_until(lambda: not running.ae.active_associations, what="associations ended")
    assert temp_files(out) == []


def store_all(port: int, datasets: list[tuple[str, bytes]]) -> list[int | None]:
    """Send every dataset on one association; the statuses."""
    peer = rawpdu.Peer(port)
    try:
        assert peer.associate(rawpdu.associate_rq(CONTEXTS))
        statuses = [peer.store(3, uid.encode(), data) for uid, data in datasets]
        peer.send(rawpdu.release_rq())
        peer.read_pdu()
        return statuses
    finally:
        peer.close()


def assert_sane(out: Path, files: list[str]) -> None:
    root = out.resolve()
    for name in files:
        assert (out / name).resolve().is_relative_to(root), name
        for component in name.split("/"):
            assert component not in ("", ".", "..") and not component.startswith("."), name
            assert len(component.encode()) <= NAME_MAX, name
            assert "\x00" not in component and "\\" not in component, name


def test_files_land_where_the_template_says(tmp_path: Path) -> None:
    with receiver(tmp_path) as (port, out):
        assert store_all(port, [("1.2.3.4.5", dataset("1.2.3.4.5"))]) == [0x0000]
        assert final_files(out) == ["PID-1/1.2.3/1.2.3.4/CT.1.2.3.4.5.dcm"]
        stored = dcmread(out / "PID-1/1.2.3/1.2.3.4/CT.1.2.3.4.5.dcm")
        assert stored.SOPInstanceUID == "1.2.3.4.5"


def test_bit_preserving_mode_names_files_the_same_way(tmp_path: Path) -> None:
    with receiver(tmp_path, storage=StorageMode.BIT_PRESERVING) as (port, out):
        assert store_all(port, [("1.2.3.4.6", dataset("1.2.3.4.6"))]) == [0x0000]
        assert final_files(out) == ["PID-1/1.2.3/1.2.3.4/CT.1.2.3.4.6.dcm"]


def test_an_element_past_the_first_64_kib_is_found(tmp_path: Path) -> None:
    with receiver(tmp_path) as (port, out):
        data = dataset("1.2.3.4.7", patient_id=b"FAR", private_bytes=200_000)
        assert store_all(port, [("1.2.3.4.7", data)]) == [0x0000]
        assert final_files(out) == ["FAR/1.2.3/1.2.3.4/CT.1.2.3.4.7.dcm"]


def test_a_missing_value_takes_the_fallback(tmp_path: Path) -> None:
    with receiver(tmp_path, "{PatientID|NOID}/{SOPInstanceUID}{extension}") as (port, out):
        statuses = store_all(
            port,
            [
                ("1.2.3.4.8", dataset("1.2.3.4.8", patient_id=None)),
                ("1.2.3.4.9", dataset("1.2.3.4.9", patient_id=b"   ")),
            ],
        )
        assert statuses == [0x0000, 0x0000]
        assert final_files(out) == ["NOID/1.2.3.4.8.dcm", "NOID/1.2.3.4.9.dcm"]


HOSTILE_VALUES = [
    b"../../etc",
    b"/abs/path",
    b"a\\b",
    b"..",
    b".",
    b".hidden",
    b"x\x00y",
    b"\x01\x02\x1b[31m",
    b"\xff\xfe\xfd",
    b"P" * 300,
    b"a/../../b",
    b'*?:<>|"',
]


def outside(tmp_path: Path, out: Path) -> set[Path]:
    return {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}


@pytest.mark.parametrize("charset", [None, b"ISO_IR 192", b"ISO_IR 100"])
def test_hostile_values_never_leave_the_output_directory(
    tmp_path: Path, charset: bytes | None
) -> None:
    with receiver(tmp_path) as (port, out):
        before = outside(tmp_path, out)
        datasets = [
            (
                f"1.2.3.5.{n}",
                dataset(f"1.2.3.5.{n}", patient_id=value, charset=charset, study=value[:64]),
            )
            for n, value in enumerate(HOSTILE_VALUES, start=1)
        ]
        assert store_all(port, datasets) == [0x0000] * len(datasets)
        stored = final_files(out)
        assert len(stored) == len(datasets)
        assert_sane(out, stored)
        assert outside(tmp_path, out) == before
