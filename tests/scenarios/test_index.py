"""The index lists every stored object with who sent it; it never costs a store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pynetdicom import AE

from dcmrecvd.settings import DuplicatePolicy, EventSettings, Settings
from dcmrecvd.store import index, objectstore
from tests.support import asconfigs, dicomgen
from tests.support.asconfigs import VERIFY_CT_CFG
from tests.support.net import LOCALHOST, free_port
from tests.support.peers import our_receiver
from tests.support.streaming_peer import final_files, wait_until


def send(port: int, instances: list[str]) -> list[int]:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(dicomgen.CT, "1.2.840.10008.1.2.1")
    assoc = ae.associate(LOCALHOST, port, ae_title="DCMRECV")
    assert assoc.is_established
    try:
        return [
            int(assoc.send_c_store(dicomgen.part10(dicomgen.Spec(dicomgen.CT, uid))).Status)
            for uid in instances
        ]
    finally:
        assoc.release()


def store(tmp_path: Path, instances: list[str], **changes: object) -> tuple[Path, Path]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    listing = tmp_path / "index.sqlite"
    port = free_port()
    settings = Settings(port=port, output_dir=str(out), index_path=str(listing), **changes)  # type: ignore[arg-type]
    with our_receiver(asconfigs.load(tmp_path, VERIFY_CT_CFG), port, settings) as receiver:
        assert send(port, instances) == [0x0000] * len(instances)
        wait_until(lambda: not receiver.ae.active_associations, what="associations ended")
    return out, listing


def test_each_stored_object_is_listed_with_its_sender(tmp_path: Path) -> None:
    out, listing = store(tmp_path, ["1.2.3.4.901", "1.2.3.4.902"])
    with index.Index(listing) as found:
        assert found.paths() == {str(out / name) for name in final_files(out)}
        entry = found.get(str(out / "CT.1.2.3.4.901"))
    assert entry is not None
    assert (entry.sop_class_uid, entry.sop_instance_uid) == (dicomgen.CT, "1.2.3.4.901")
    assert (entry.study_instance_uid, entry.series_instance_uid) == ("1.2.3.4.1", "1.2.3.4.1.1")
    assert (entry.patient_id, entry.modality) == ("DCMRECVD-1", "OT")
    assert (entry.calling_ae, entry.called_ae, entry.peer_address) == (
        "CT01",
        "DCMRECV",
        LOCALHOST,
    )
    assert entry.transfer_syntax == "1.2.840.10008.1.2.1"
    # The dataset's bytes as received: the stored file adds the File Meta header.
    assert 0 < entry.size < (out / "CT.1.2.3.4.901").stat().st_size
    assert entry.association_id


def test_an_overwritten_file_is_listed_once(tmp_path: Path) -> None:
    out, listing = store(
        tmp_path, ["1.2.3.4.903", "1.2.3.4.903"], duplicates=DuplicatePolicy.OVERWRITE
    )
    with index.Index(listing) as found:
        assert found.paths() == {str(out / "CT.1.2.3.4.903")}


def test_a_failing_index_never_fails_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_self: index.Index, _entry: index.Entry, **_tracking: object) -> None:
        raise index.IndexFailure("disk I/O error")

    monkeypatch.setattr(index.Index, "record", broken)
    with caplog.at_level(logging.ERROR, logger="dcmrecv"):
        out, _listing = store(tmp_path, ["1.2.3.4.904"])
    assert final_files(out) == ["CT.1.2.3.4.904"]
    assert any("cannot list the stored object in the index" in m for m in caplog.messages)


def series_rows(listing: Path) -> list[tuple[str, int, int]]:
    with index.Index(listing) as found:
        return found.transaction(
            lambda c: c.execute(
                "SELECT series_instance_uid, generation, open FROM series ORDER BY 1"
            ).fetchall(),
            write=False,
        )


def test_start_up_tracks_unlisted_objects_but_not_those_a_new_index_adopts(tmp_path: Path) -> None:
    """Objects a crash left unlisted open their series for completion at the next start;
    the objects an index finds when it is first made were there before it, and do not."""
    out = tmp_path / "out"
    out.mkdir()
    listing = tmp_path / "index.sqlite"
    settings = Settings(output_dir=str(out), index_path=str(listing), events=EventSettings())
    first = dicomgen.part10(dicomgen.Spec(dicomgen.CT, "1.2.3.4.950"))
    first.save_as(out / "before.dcm", enforce_file_format=True)
    objectstore.reconcile_index(settings)
    assert series_rows(listing) == []
    later = dicomgen.part10(dicomgen.Spec(dicomgen.CT, "1.2.3.4.951"))
    later.SeriesInstanceUID = "1.2.3.4.1.9"
    later.save_as(out / "unlisted.dcm", enforce_file_format=True)
    objectstore.reconcile_index(settings)
    assert series_rows(listing) == [("1.2.3.4.1.9", 1, 1)]
    with index.Index(listing) as found:
        assert found.paths() == {str(out / "before.dcm"), str(out / "unlisted.dcm")}


def test_the_events_directory_inside_the_output_directory_is_not_walked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".events" / "new").mkdir(parents=True)
    dicomgen.part10(dicomgen.Spec(dicomgen.CT, "1.2.3.4.952")).save_as(
        out / ".events" / "new" / "x.dcm", enforce_file_format=True
    )
    listing = out / ".index.sqlite"
    events = EventSettings(directory=str(out / ".events"))
    settings = Settings(output_dir=str(out), index_path=str(listing), events=events)
    assert objectstore.check_index(settings).added == []
