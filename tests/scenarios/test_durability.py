"""Duplicate policies, parallel stores of one instance, the free-space reserve, a full disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from dcmrecvd.profiles import Profile
from dcmrecvd.settings import DuplicatePolicy, NamingScheme, Settings
from dcmrecvd.store import objectstore
from dcmrecvd.store.freespace import Reserve
from tests.support import dicomgen
from tests.support.peers import Proposal, our_receiver, probe
from tests.support.streaming_peer import (
    BIG,
    association,
    body,
    dataset,
    encoded,
    final_files,
    settings,
    temp_files,
)

UID = "1.2.3.4.100"
NAME = f"CT.{UID}"


def store_twice(
    profile: Profile, port: int, receiver_settings: Settings
) -> tuple[list[int], list[str]]:
    """Store two versions of one instance; their statuses and the ErrorComments."""
    statuses, comments = [], []
    with our_receiver(profile, port, receiver_settings), association(port) as a:
        for patient in ("First^Version", "Second^Version"):
            rsp = a.send_c_store(dataset(UID, patient=patient))
            statuses.append(int(rsp.Status))
            comments.append(str(rsp.get("ErrorComment", "")))
    return statuses, comments


def patient_of(path: Path) -> str:
    return str(dcmread(path).PatientName)


def test_overwrite_replaces_with_dcmtks_warning(
    profile: Profile, out: Path, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    statuses, _ = store_twice(profile, port, settings(port, out))
    assert statuses == [0x0000, 0x0000]
    assert final_files(out) == [NAME]
    assert patient_of(out / NAME) == "Second^Version"
    assert f"file already exists, overwriting: {out}/{NAME}" in caplog.messages


def test_keep_first_answers_success_and_keeps_the_stored_file(
    profile: Profile, out: Path, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    policy = settings(port, out, duplicates=DuplicatePolicy.KEEP_FIRST)
    statuses, _ = store_twice(profile, port, policy)
    assert statuses == [0x0000, 0x0000]
    assert final_files(out) == [NAME]
    assert patient_of(out / NAME) == "First^Version"
    assert f"file already exists, keeping the stored file: {out}/{NAME}" in caplog.messages
    assert temp_files(out) == []


def test_keep_both_stores_under_a_unique_name(profile: Profile, out: Path, port: int) -> None:
    policy = settings(port, out, duplicates=DuplicatePolicy.KEEP_BOTH, extension=".dcm")
    with our_receiver(profile, port, policy), association(port) as a:
        for patient in ("First^Version", "Second^Version", "Third^Version"):
            assert a.send_c_store(dataset(UID, patient=patient)).Status == 0x0000
    assert final_files(out) == [f"{NAME}.dcm", f"{NAME}_1.dcm", f"{NAME}_2.dcm"]
    assert patient_of(out / f"{NAME}.dcm") == "First^Version"
    assert patient_of(out / f"{NAME}_2.dcm") == "Third^Version"
    assert temp_files(out) == []


def test_reject_answers_a_failure_and_keeps_the_stored_file(
    profile: Profile, out: Path, port: int
) -> None:
    policy = settings(port, out, duplicates=DuplicatePolicy.REJECT)
    statuses, comments = store_twice(profile, port, policy)
    assert statuses == [0x0000, objectstore.DUPLICATE_SOP_INSTANCE]
    assert comments[1] == "duplicate SOP instance"
    assert patient_of(out / NAME) == "First^Version"
    assert temp_files(out) == []


@pytest.mark.parametrize("policy", [DuplicatePolicy.OVERWRITE, DuplicatePolicy.KEEP_FIRST])
def test_parallel_associations_never_tear_a_file(
    profile: Profile, out: Path, port: int, policy: DuplicatePolicy
) -> None:
    versions = [dataset(UID, pixel_bytes=256 * 1024, patient=f"Sender^{i}") for i in range(4)]
    statuses: list[int] = []
    lock = threading.Lock()

    def send(ds: object) -> None:
        with association(port) as a:
            for _ in range(5):
                status = int(a.send_c_store(ds).Status)
                with lock:
                    statuses.append(status)

    receiver_settings = settings(port, out, duplicates=policy, max_associations=8)
    with our_receiver(profile, port, receiver_settings):
        threads = [threading.Thread(target=send, args=(ds,)) for ds in versions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert statuses == [0x0000] * 20
    assert final_files(out) == [NAME]
    assert body(out / NAME) in {encoded(ds) for ds in versions}
    assert temp_files(out) == []


def test_unique_names_are_unaffected_by_the_policy(profile: Profile, out: Path, port: int) -> None:
    policy = settings(port, out, duplicates=DuplicatePolicy.REJECT, naming=NamingScheme.UNIQUE)
    statuses, _ = store_twice(profile, port, policy)
    assert statuses == [0x0000, 0x0000]
    assert len(final_files(out)) == 2


class FakeDisk:
    """statvfs of a 1 MB file system whose free space the test sets."""

    def __init__(self, free: int) -> None:
        self.free = free

    def statvfs(self, _path: str) -> os.statvfs_result:
        blocks = 1_000_000 // 1000
        return os.statvfs_result(
            (1000, 1000, blocks, self.free // 1000, self.free // 1000, 100, 100, 100, 0, 255)
        )


CT_PROPOSAL = Proposal(contexts=((dicomgen.CT, (ExplicitVRLittleEndian,)),))


def test_reserve_refuses_associations_and_stores_and_recovers(
    profile: Profile, out: Path, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FakeDisk(free=900_000)
    with our_receiver(profile, port, settings(port, out)) as receiver:
        receiver.store.reserve = Reserve(bytes=500_000, statvfs=disk.statvfs)
        with association(port) as a:
            assert a.send_c_store(dataset("1.2.3.4.1")).Status == 0x0000
            disk.free = 100_000
            low = a.send_c_store(dataset("1.2.3.4.2"))
            assert (low.Status, low.ErrorComment) == (0xA700, "free space below the reserve")
            disk.free = 900_000
            assert a.send_c_store(dataset("1.2.3.4.3")).Status == 0x0000
        disk.free = 100_000
        # Rejected transient, service provider (presentation), local limit exceeded.
        assert probe(port, CT_PROPOSAL).rejection == (2, 3, 2)
        disk.free = 900_000
        assert probe(port, CT_PROPOSAL).rejection is None
    assert final_files(out) == ["CT.1.2.3.4.1", "CT.1.2.3.4.3"]
    assert temp_files(out) == []
    warning = f"free space on {out} is 100000 bytes, below the reserve of 500000 bytes"
    assert caplog.messages.count(warning) == 1  # the association refusal
    assert f"cannot store received object: {warning}" in caplog.messages


def test_percent_reserve() -> None:
    disk = FakeDisk(free=40_000)
    assert Reserve(percent=5, statvfs=disk.statvfs).shortfall("/x") == (
        "free space on /x is 40000 bytes (4.0%), below the reserve of 5%"
    )
    assert Reserve(percent=3, statvfs=disk.statvfs).shortfall("/x") is None
    assert Reserve(statvfs=disk.statvfs).shortfall("/x") is None


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs), mounted for the test; needs root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount(8)")
    point = tmp_path / "small"
    point.mkdir()
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_real_full_disk_answers_a700_and_leaves_nothing(
    profile: Profile, small_tmpfs: Path, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    with our_receiver(profile, port, settings(port, small_tmpfs)), association(port) as a:
        full = a.send_c_store(dataset("1.2.3.4.7", pixel_bytes=BIG))
        assert temp_files(small_tmpfs) == []
        after = a.send_c_store(dataset("1.2.3.4.8"))
    assert (full.Status, full.ErrorComment) == (0xA700, "No space left on device")
    assert after.Status == 0x0000
    assert final_files(small_tmpfs) == ["CT.1.2.3.4.8"]
    assert temp_files(small_tmpfs) == []
    assert (
        f"cannot store received object: {small_tmpfs}/CT.1.2.3.4.7: No space left on device"
        in caplog.messages
    )


def test_real_full_disk_below_reserve_refuses_then_recovers(
    profile: Profile, small_tmpfs: Path, port: int
) -> None:
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 + 512 * 1024))
    receiver_settings = settings(port, small_tmpfs, free_space_reserve_bytes=1024 * 1024)
    with our_receiver(profile, port, receiver_settings):
        assert probe(port, CT_PROPOSAL).rejection == (2, 3, 2)
        filler.unlink()
        with association(port) as a:
            assert a.send_c_store(dataset("1.2.3.4.9")).Status == 0x0000
    assert final_files(small_tmpfs) == ["CT.1.2.3.4.9"]
