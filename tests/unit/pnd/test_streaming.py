"""C-STORE datasets stream to disk, and every failure path leaves nothing behind."""

from __future__ import annotations

import errno
import os
import shutil
import struct
from pathlib import Path

import pytest
from pydicom import dcmread

from dcmrecvd.pnd import pdulimit
from dcmrecvd.profiles import Profile
from dcmrecvd.settings import StorageMode, SubdirMode
from dcmrecvd.sink import StoreCommand
from dcmrecvd.store import incoming, storage
from dcmrecvd.store.freespace import Reserve
from dcmrecvd.store.objectstore import ObjectStore
from tests.support import dicomgen
from tests.support.peers import our_receiver
from tests.support.streaming_peer import (
    BIG,
    association,
    body,
    dataset,
    encoded,
    final_files,
    send_part,
    settings,
    temp_files,
    wait_until,
)


def nothing_left(out: Path) -> bool:
    return temp_files(out) == [] and final_files(out) == []


@pytest.mark.parametrize("mode", [StorageMode.NORMAL, StorageMode.BIT_PRESERVING])
@pytest.mark.parametrize("size", [16, 60 * 1024, BIG])
def test_stores_exactly_what_arrived(
    profile: Profile, out: Path, port: int, mode: StorageMode, size: int
) -> None:
    ds = dataset("1.2.3.4.100", pixel_bytes=size)
    with our_receiver(profile, port, settings(port, out, storage=mode)), association(port) as a:
        status = a.send_c_store(ds)
    assert status.Status == 0x0000
    stored = out / "CT.1.2.3.4.100"
    assert body(stored) == encoded(ds)
    meta = dcmread(stored, stop_before_pixels=True).file_meta
    assert meta.MediaStorageSOPInstanceUID == "1.2.3.4.100"
    expected_ae = "SENDER" if mode is StorageMode.BIT_PRESERVING else None
    assert meta.get("SourceApplicationEntityTitle") == expected_ae
    assert temp_files(out) == []


def test_dataset_streams_to_a_temp_file_before_it_is_complete(
    profile: Profile, out: Path, port: int
) -> None:
    ds = dataset("1.2.3.4.101", pixel_bytes=BIG)
    with our_receiver(profile, port, settings(port, out)), association(port) as a:
        send_part(a, ds, 0.5)
        # Half the dataset is on disk, not in memory, and not under its final name.
        wait_until(
            lambda: sum(p.stat().st_size for p in temp_files(out)) > BIG // 3,
            what="temp file holding half the dataset",
        )
        assert final_files(out) == []
        a.abort()
    wait_until(lambda: nothing_left(out), what="temp file removed after the abort")


def test_peer_disconnect_mid_dataset_leaves_nothing(profile: Profile, out: Path, port: int) -> None:
    ds = dataset("1.2.3.4.102", pixel_bytes=BIG)
    with our_receiver(profile, port, settings(port, out)), association(port) as a:
        send_part(a, ds, 0.5)
        wait_until(lambda: temp_files(out) != [], what="temp file created")
        # TCP goes away without an A-ABORT.
        a.dul.socket.socket.shutdown(2)
        a.kill()
    wait_until(lambda: nothing_left(out), what="temp file removed after the disconnect")


def test_network_timeout_mid_dataset_leaves_nothing(profile: Profile, out: Path, port: int) -> None:
    ds = dataset("1.2.3.4.103", pixel_bytes=BIG)
    receiver_settings = settings(port, out, dimse_timeout=1)
    with our_receiver(profile, port, receiver_settings) as receiver, association(port) as a:
        send_part(a, ds, 0.5)
        wait_until(lambda: temp_files(out) != [], what="temp file created")
        # The sender stalls; the receiver's idle timer ends the association.
        wait_until(
            lambda: nothing_left(out) and not receiver.ae.active_associations,
            what="association timed out and temp file removed",
        )


def test_handler_error_leaves_nothing(
    profile: Profile, out: Path, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> str:
        raise RuntimeError("injected handler failure")

    monkeypatch.setattr(ObjectStore, "_name", broken)
    ds = dataset("1.2.3.4.104", pixel_bytes=BIG)
    with our_receiver(profile, port, settings(port, out)), association(port) as a:
        status = a.send_c_store(ds)
    assert status.Status == 0xC211  # pynetdicom's answer to a raising handler
    assert nothing_left(out)


def test_write_error_answers_a700_with_comment_and_association_goes_on(
    profile: Profile, out: Path, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = storage.TempFile.write

    def fill_up(self: storage.TempFile, data: bytes | memoryview) -> None:
        if self.size > 1024 * 1024:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, data)

    monkeypatch.setattr(storage.TempFile, "write", fill_up)
    with our_receiver(profile, port, settings(port, out)), association(port) as a:
        failed = a.send_c_store(dataset("1.2.3.4.105", pixel_bytes=BIG))
        assert temp_files(out) == []
        stored = a.send_c_store(dataset("1.2.3.4.106"))
    assert failed.Status == 0xA700
    assert failed.ErrorComment == "No space left on device"
    assert stored.Status == 0x0000
    assert final_files(out) == ["CT.1.2.3.4.106"]
    assert temp_files(out) == []


def test_empty_dataset_answers_c000(profile: Profile, out: Path, port: int) -> None:
    # A dataset that is only a group the header reader skips is not empty; an empty
    # one cannot be sent by pynetdicom, so the sink is driven directly.
    command = StoreCommand(dicomgen.CT, "1.2.3", 1, "1.2.840.10008.1.2.1", "SENDER", 1)
    sink = incoming.IncomingObject(
        command,
        bit_preserving=False,
        spool=storage.Spool(storage.spool_directory(str(out)), "node"),
        reserve=Reserve(),
        space_directory=str(out),
    )
    sink.finish()
    assert sink.failure is not None and sink.failure.kind is incoming.FailureKind.EMPTY
    assert nothing_left(out)


def test_an_oversized_pdu_ends_the_association_before_it_is_read(
    profile: Profile, out: Path, port: int
) -> None:
    ds = dataset("1.2.3.4.107", pixel_bytes=BIG)
    with our_receiver(profile, port, settings(port, out)) as receiver, association(port) as a:
        send_part(a, ds, 0.25)
        wait_until(lambda: temp_files(out) != [], what="temp file created")
        # A P-DATA-TF header announcing 512 MiB, far over the negotiated 16 KiB.
        a.dul.socket.socket.sendall(struct.pack(">BBL", 0x04, 0, 512 * 1024 * 1024) + b"\0" * 64)
        wait_until(
            lambda: nothing_left(out) and not receiver.ae.active_associations,
            what="association ended and temp file removed without reading the PDU",
        )


def test_pdu_limit_leaves_room_for_association_requests() -> None:
    assert pdulimit.limit_for(16384) == pdulimit.MINIMUM_LIMIT
    assert pdulimit.limit_for(4 * 1024 * 1024) == 4 * 1024 * 1024
    assert pdulimit.limit_for(0) is None


def test_series_date_directory_from_the_prefix_of_a_big_dataset(
    profile: Profile, out: Path, port: int
) -> None:
    ds = dataset("1.2.3.4.108", pixel_bytes=BIG)
    receiver_settings = settings(port, out, subdir=SubdirMode.SERIES_DATE)
    with our_receiver(profile, port, receiver_settings), association(port) as a:
        assert a.send_c_store(ds).Status == 0x0000
    assert final_files(out) == ["data/2024/01/15/CT.1.2.3.4.108"]
    assert body(out / "data/2024/01/15/CT.1.2.3.4.108") == encoded(ds)


def test_a_deleted_output_directory_is_recreated(profile: Profile, out: Path, port: int) -> None:
    with our_receiver(profile, port, settings(port, out)), association(port) as a:
        assert a.send_c_store(dataset("1.2.3.4.109")).Status == 0x0000
        shutil.rmtree(out)
        assert a.send_c_store(dataset("1.2.3.4.110", pixel_bytes=BIG)).Status == 0x0000
    assert final_files(out) == ["CT.1.2.3.4.110"]
    assert temp_files(out) == []
