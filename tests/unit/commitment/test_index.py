"""Storage Commitment over a real index file and real files: the check of each instance,
and the requests kept until their report is delivered (schema 3, and its migration)."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcmrecvd.commitment import model, pending
from dcmrecvd.commitment.check import check
from dcmrecvd.commitment.model import Failure, Reference, Request
from dcmrecvd.settings import CommitmentSettings, ReportDestination
from dcmrecvd.store import index
from dcmrecvd.store.index import Entry, Index
from tests.support import dicomgen

T0 = 1_800_000_000.0
CT = dicomgen.CT
MR = dicomgen.MR


@pytest.fixture
def listing(tmp_path: Path) -> Iterator[Index]:
    with Index(tmp_path / "index.db") as opened:
        yield opened


def described(path: Path) -> Entry:
    entry = index.describe(path, T0)
    assert entry is not None
    return entry


def stored(listing: Index, directory: Path, sop_class: str, uid: str) -> Path:
    """A real Part-10 file of `uid`, listed in the index."""
    path = dicomgen.write(dicomgen.Spec(sop_class, uid), directory / f"{uid}.dcm")
    listing.record(described(path))
    return path


def test_check_tells_stored_never_sent_deleted_and_other_class(
    listing: Index, tmp_path: Path
) -> None:
    stored(listing, tmp_path, CT, "1.2.3.1")
    stored(listing, tmp_path, CT, "1.2.3.2").unlink()  # deleted behind the index's back
    stored(listing, tmp_path, MR, "1.2.3.3")
    request = Request(
        "9.1",
        (
            Reference(CT, "1.2.3.1"),
            Reference(CT, "1.2.3.2"),
            Reference(CT, "1.2.3.3"),
            Reference(CT, "1.2.3.4"),  # never sent
        ),
    )
    made = check(listing, request, verify=False)
    assert made.stored == (Reference(CT, "1.2.3.1"),)
    assert made.failed == (
        (Reference(CT, "1.2.3.2"), Failure.NO_SUCH_OBJECT_INSTANCE),
        (Reference(CT, "1.2.3.3"), Failure.CLASS_INSTANCE_CONFLICT),
        (Reference(CT, "1.2.3.4"), Failure.NO_SUCH_OBJECT_INSTANCE),
    )


def test_a_directory_or_symlink_where_the_file_was_is_not_stored(
    listing: Index, tmp_path: Path
) -> None:
    path = stored(listing, tmp_path, CT, "1.2.3.1")
    target = tmp_path / "elsewhere.dcm"
    path.rename(target)
    os.symlink(target, path)
    made = check(listing, Request("9.1", (Reference(CT, "1.2.3.1"),)), verify=False)
    assert made.failed == ((Reference(CT, "1.2.3.1"), Failure.NO_SUCH_OBJECT_INSTANCE),)


def test_verify_rereads_the_file_meta(listing: Index, tmp_path: Path) -> None:
    stored(listing, tmp_path, CT, "1.2.3.1")
    # The index says 1.2.3.2 is in this file, which holds 1.2.3.5 (replaced behind it).
    other = stored(listing, tmp_path, CT, "1.2.3.5")
    listing.record(
        dataclasses.replace(
            described(other),
            sop_instance_uid="1.2.3.2",
            path=str(tmp_path / "1.2.3.2.dcm"),
        )
    )
    os.link(other, tmp_path / "1.2.3.2.dcm")
    garbage = stored(listing, tmp_path, CT, "1.2.3.3")
    garbage.write_bytes(b"not DICOM at all")
    request = Request("9.1", tuple(Reference(CT, uid) for uid in ("1.2.3.1", "1.2.3.2", "1.2.3.3")))
    unverified = check(listing, request, verify=False)
    assert unverified.failed == ()
    verified = check(listing, request, verify=True)
    assert verified.stored == (Reference(CT, "1.2.3.1"),)
    assert verified.failed == (
        (Reference(CT, "1.2.3.2"), Failure.PROCESSING_FAILURE),
        (Reference(CT, "1.2.3.3"), Failure.PROCESSING_FAILURE),
    )


def keep(listing: Index, due: float = T0, **changes: object) -> pending.Pending:
    fields: dict[str, object] = {
        "received_at": T0,
        "who": ("CT1", "DCMRECVD", "192.0.2.7"),
        "peer": "ct",
        "destination": ReportDestination("192.0.2.7", 104, "CT1"),
        "due": due,
    }
    fields.update(changes)
    request = Request("9.1", (Reference(CT, "1.2.3.1"), Reference(MR, "1.2.3.2")))
    return pending.record(listing, request, **fields)  # type: ignore[arg-type]


def test_a_request_is_kept_until_delivered_with_who_sent_it(listing: Index) -> None:
    kept = keep(listing)
    assert pending.due(listing, T0 - 1, 10) == []
    [found] = pending.due(listing, T0, 10)
    assert found == kept
    assert found.destination == ReportDestination("192.0.2.7", 104, "CT1")
    assert found.fields["TRANSACTION_UID"] == "9.1"
    assert pending.count_pending(listing) == 1
    pending.delivered(listing, kept.id, T0 + 1, "delivered to CT1")
    assert pending.due(listing, T0 + 10, 10) == []
    assert pending.count_pending(listing) == 0
    assert pending.state_of(listing, kept.id) == (pending.DONE, 0, "delivered to CT1")


def test_a_failed_delivery_counts_and_moves_the_request_later(listing: Index) -> None:
    kept = keep(listing)
    pending.retry(listing, kept.id, T0 + 30, "refused")
    assert pending.due(listing, T0 + 29, 10) == []
    [again] = pending.due(listing, T0 + 30, 10)
    assert again.attempts == 1
    assert pending.next_due(listing) == T0 + 30
    pending.given_up(listing, kept.id, T0 + 31, "too old")
    assert pending.next_due(listing) is None
    assert pending.state_of(listing, kept.id) == (pending.FAILED, 1, "too old")
    # Finished is final: a late retry or delivery changes nothing.
    pending.retry(listing, kept.id, T0, "late")
    pending.delivered(listing, kept.id, T0, "late")
    assert pending.state_of(listing, kept.id) == (pending.FAILED, 1, "too old")


def test_a_release_makes_it_due_without_counting_an_attempt(listing: Index) -> None:
    kept = keep(listing, due=T0 + 300)
    pending.release(listing, kept.id, T0 + 1)
    [found] = pending.due(listing, T0 + 1, 10)
    assert found.attempts == 0


def test_the_longest_due_come_first_and_a_batch_is_bounded(listing: Index) -> None:
    keep(listing, due=T0 + 5)
    early = keep(listing, due=T0 + 1)
    middle = keep(listing, due=T0 + 3)
    assert [p.id for p in pending.due(listing, T0 + 10, 2)] == [early.id, middle.id]


def test_finished_requests_are_pruned_after_a_week(listing: Index) -> None:
    done = keep(listing)
    waiting = keep(listing)
    pending.delivered(listing, done.id, T0, "ok")
    assert pending.prune(listing, T0 + pending.KEEP_FINISHED - 1) == 0
    assert pending.prune(listing, T0 + pending.KEEP_FINISHED + 1) == 1
    assert pending.state_of(listing, done.id) is None
    assert pending.state_of(listing, waiting.id) is not None


def test_a_version_2_index_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    raw = sqlite3.connect(path)
    for statement in index._SCHEMA + index._SCHEMA_2:
        raw.execute(statement)
    entry = Entry(
        str(tmp_path / "x.dcm"),
        CT,
        "1.2.3.1",
        "A",
        "A1",
        "P",
        "CT",
        "C",
        "D",
        "E",
        "F",
        1,
        T0,
        "G",
    )
    raw.execute(f"INSERT INTO objects VALUES ({', '.join('?' * 14)})", dataclasses.astuple(entry))
    raw.execute("PRAGMA user_version = 2")
    raw.commit()
    raw.close()
    with Index(path) as migrated:
        assert not migrated.created
        assert migrated.get(entry.path) == entry
        kept = keep(migrated)
        assert pending.due(migrated, T0, 10) == [kept]
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone() == (3,)
    raw.close()


def test_a_request_survives_reopening_the_index(tmp_path: Path) -> None:
    with Index(tmp_path / "index.db") as first:
        kept = keep(first)
    with Index(tmp_path / "index.db") as second:
        assert pending.due(second, T0, 10) == [kept]


def test_the_recorded_destination_of_a_request_without_rule(listing: Index) -> None:
    kept = keep(listing, peer="", destination=None)
    [found] = pending.due(listing, T0, 10)
    assert (found.peer, found.destination) == ("", None)
    assert model.address(CommitmentSettings(), found.peer, found.destination, "X") is None
    assert found.id == kept.id
