"""The durable index: the SQLite file, writers in several processes, reconcile and check."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from dcmrecvd.store import index, storage
from dcmrecvd.store.index import Entry, Index, IndexFailure
from tests.support import dicomgen

FORK = multiprocessing.get_context("fork")
# This node's name, and another node's sharing its output directory.
NODE = "node-a"
OTHER = "node-b"


def entry(path: str, sop_instance: str = "1.2.3.4.9", **changes: Any) -> Entry:
    made = Entry(
        path=path,
        sop_class_uid=dicomgen.CT,
        sop_instance_uid=sop_instance,
        study_instance_uid="1.2.3.4.1",
        series_instance_uid="1.2.3.4.1.1",
        patient_id="DCMRECVD-1",
        modality="CT",
        calling_ae="MODALITY",
        called_ae="DCMRECVD",
        peer_address="192.0.2.7",
        transfer_syntax=ExplicitVRLittleEndian,
        size=1234,
        received_at=1_700_000_000.5,
        association_id="a1",
    )
    return dataclasses.replace(made, **changes)


def test_the_file_is_in_wal_mode_with_a_versioned_schema(tmp_path: Path) -> None:
    with Index(tmp_path / "index.db"):
        pass
    raw = sqlite3.connect(tmp_path / "index.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (index.SCHEMA_VERSION,)
        indexes = {
            row[0]: row[1]
            for row in raw.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
            if row[1] is not None
        }
    finally:
        raw.close()
    assert "(sop_instance_uid)" in indexes["objects_sop_instance"]
    assert "(study_instance_uid, series_instance_uid)" in indexes["objects_study_series"]


def test_record_get_and_forget_survive_a_reopen(tmp_path: Path) -> None:
    first = entry(str(tmp_path / "CT.1"), "1.2.3.4.1")
    second = entry(str(tmp_path / "CT.2"), "1.2.3.4.2", calling_ae="OTHER", size=99)
    with Index(tmp_path / "index.db") as db:
        db.record(first)
        db.record(second)
        db.forget(first.path)
    with Index(tmp_path / "index.db") as db:
        assert db.paths() == {second.path}
        assert db.get(second.path) == second
        assert db.get(first.path) is None


def test_record_replaces_the_row_of_the_same_path(tmp_path: Path) -> None:
    path = str(tmp_path / "CT.1")
    with Index(tmp_path / "index.db") as db:
        db.record(entry(path, "1.2.3.4.1"))
        newer = entry(path, "1.2.3.4.1", association_id="a2", size=4321, received_at=2e9)
        db.record(newer)
        assert db.paths() == {path}
        assert db.get(path) == newer


def test_record_refuses_a_relative_or_unnormalised_path(tmp_path: Path) -> None:
    with Index(tmp_path / "index.db") as db:
        for path in ("CT.1", f"{tmp_path}/sub/../CT.1"):
            with pytest.raises(ValueError, match="absolute and normalised"):
                db.record(entry(path))
        assert db.paths() == set()


def test_add_missing_keeps_a_row_already_there(tmp_path: Path) -> None:
    recorded = entry(str(tmp_path / "CT.1"), "1.2.3.4.1", calling_ae="MODALITY")
    walked = entry(recorded.path, "1.2.3.4.1", calling_ae="", association_id="")
    new = entry(str(tmp_path / "CT.2"), "1.2.3.4.2", calling_ae="")
    with Index(tmp_path / "index.db") as db:
        db.record(recorded)
        assert db.add_missing([walked, new]) == [new.path]
        assert db.get(recorded.path) == recorded
        assert db.get(new.path) == new


def _write_200(database: Path, worker: int, start: threading.Barrier) -> None:
    start.wait()  # both processes create the file and write at the same time
    with Index(database) as db:
        for n in range(200):
            db.record(entry(f"/store/{worker}/CT.{n}", f"1.2.3.{worker}.{n}"))


def test_two_processes_write_the_same_file_concurrently(tmp_path: Path) -> None:
    database = tmp_path / "index.db"
    start = FORK.Barrier(2)
    workers = [FORK.Process(target=_write_200, args=(database, w, start)) for w in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [worker.exitcode for worker in workers] == [0, 0]
    with Index(database) as db:
        assert db.paths() == {f"/store/{w}/CT.{n}" for w in (1, 2) for n in range(200)}


def _open(database: Path, start: threading.Barrier, opener: int) -> None:
    start.wait()
    with Index(database) as db:
        db.record(entry(f"/store/CT.{opener}"))


def test_processes_creating_the_same_file_at_once_all_open_it(tmp_path: Path) -> None:
    # SQLite answers busy at once to a switch to WAL while another process reads.
    for attempt in range(5):
        database = tmp_path / f"index{attempt}.db"
        start = FORK.Barrier(8)
        openers = [FORK.Process(target=_open, args=(database, start, n)) for n in range(8)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
        assert [opener.exitcode for opener in openers] == [0] * 8
        with Index(database) as db:
            assert len(db.paths()) == 8


def test_threads_of_one_process_share_one_index(tmp_path: Path) -> None:
    start = threading.Barrier(4)
    failures: list[BaseException] = []
    with Index(tmp_path / "index.db") as db:

        def write(worker: int) -> None:
            start.wait()
            try:
                for n in range(50):
                    db.record(entry(f"/store/{worker}/CT.{n}"))
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert len(db.paths()) == 200


def _use_inherited(db: Index) -> None:
    try:
        db.record(entry("/store/CT.child"))
    except IndexFailure as exc:
        os._exit(0 if "after fork()" in str(exc) else 2)
    os._exit(1)


def test_an_index_inherited_over_fork_refuses_to_work(tmp_path: Path) -> None:
    with Index(tmp_path / "index.db") as db:
        child = FORK.Process(target=_use_inherited, args=(db,))
        child.start()
        child.join()
        assert child.exitcode == 0
        assert db.paths() == set()
        db.record(entry("/store/CT.parent"))  # the parent's connection still works
        assert db.paths() == {"/store/CT.parent"}


def test_a_file_that_is_not_a_database_fails_with_its_path(tmp_path: Path) -> None:
    database = tmp_path / "index.db"
    database.write_bytes(os.urandom(4096))
    with pytest.raises(IndexFailure, match=str(database)):
        Index(database)


def test_a_missing_directory_fails_with_the_path(tmp_path: Path) -> None:
    database = tmp_path / "missing" / "index.db"
    with pytest.raises(IndexFailure, match=str(database)):
        Index(database)


def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "index.db"
    Index(database).close()
    raw = sqlite3.connect(database)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(IndexFailure, match="schema version 99"):
        Index(database)


def test_a_closed_index_fails(tmp_path: Path) -> None:
    db = Index(tmp_path / "index.db")
    db.close()
    db.close()
    with pytest.raises(IndexFailure, match="closed"):
        db.paths()


def test_describe_reads_a_stored_file(tmp_path: Path) -> None:
    (path,) = dicomgen.write_all([dicomgen.Spec(dicomgen.MR, "1.2.3.4.200")], tmp_path)
    found = index.describe(path, 1_700_000_000.0)
    assert found == Entry(
        path=str(path),
        sop_class_uid=dicomgen.MR,
        sop_instance_uid="1.2.3.4.200",
        study_instance_uid="1.2.3.4.1",
        series_instance_uid="1.2.3.4.1.1",
        patient_id="DCMRECVD-1",
        modality="OT",
        calling_ae="",
        called_ae="",
        peer_address="",
        transfer_syntax=ExplicitVRLittleEndian,
        size=path.stat().st_size,
        received_at=1_700_000_000.0,
        association_id="",
    )


def test_describe_takes_missing_sop_uids_from_the_file_meta(tmp_path: Path) -> None:
    ds = dicomgen.part10(dicomgen.Spec(dicomgen.CT, "1.2.3.4.100"))
    del ds.SOPClassUID
    del ds.SOPInstanceUID
    ds.save_as(tmp_path / "CT.1", enforce_file_format=True)
    found = index.describe(tmp_path / "CT.1", 0.0)
    assert found is not None
    assert (found.sop_class_uid, found.sop_instance_uid) == (dicomgen.CT, "1.2.3.4.100")


@pytest.mark.parametrize("content", [b"", b"not DICOM at all\n", bytes(128) + b"DIC"])
def test_describe_returns_none_for_a_file_that_is_not_dicom(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "junk").write_bytes(content)
    assert index.describe(tmp_path / "junk", 0.0) is None
    assert index.describe(tmp_path / "absent", 0.0) is None


class Store:
    """An output directory with the index inside, as the daemon may lay it out."""

    def __init__(self, root: Path) -> None:
        self.out = root / "out"
        self.out.mkdir()
        self.db = Index(self.out / ".dcmrecvd-index.db")
        self.quarantine = self.out / "quarantine"
        self.spool = storage.spool_directory(str(self.out))

    def skip(self, path: Path) -> bool:
        return path in self.db.files or path in (self.spool, self.quarantine)

    def rows(self) -> dict[str, Entry | None]:
        return {path: self.db.get(path) for path in self.db.paths()}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setattr(index, "_BATCH", 2)  # several batches and a partial one
    made = Store(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    # Behind the index's back: stored objects, some in subdirectories...
    specs = [dicomgen.Spec(dicomgen.CT, f"1.2.3.4.{n}") for n in range(5)]
    dicomgen.write_all(specs[:3], made.out)
    dicomgen.write_all(specs[3:], made.out / "20240115")
    # ...and what is not one: a spool file, a quarantined object, a hidden file, a file
    # that is not DICOM, a symlink to an object, a symlinked directory of objects.
    dicomgen.write_all(specs[:1], made.spool)
    dicomgen.write_all(specs[:1], made.quarantine)
    dicomgen.write(specs[0], made.out / ".hidden.dcm")
    (made.out / "notes.txt").write_text("not DICOM\n")
    (made.out / "link.dcm").symlink_to(made.out / "obj000.dcm")
    dicomgen.write_all(specs[:1], tmp_path / "elsewhere")
    (made.out / "linked").symlink_to(tmp_path / "elsewhere")
    return made


def test_reconcile_adds_forgets_and_leaves_the_rest_alone(store: Store) -> None:
    out = str(store.out)
    gone = [f"{out}/CT.gone", f"{out}/20240115/CT.gone"]
    for path in gone:
        store.db.record(entry(path))
    store.db.record(entry("/not/under/out/CT.1"))
    # Indexed and still there: kept as the store wrote it, with its association.
    kept = entry(f"{out}/obj000.dcm", "1.2.3.4.0", calling_ae="MODALITY")
    store.db.record(kept)

    result = index.reconcile(store.db, store.out, node=NODE, skip=store.skip)

    added = [f"{out}/20240115/obj000.dcm", f"{out}/20240115/obj001.dcm"]
    added += [f"{out}/obj001.dcm", f"{out}/obj002.dcm"]
    assert result == index.Reconciled(
        added=added, gone=sorted(gone), unreadable=[f"{out}/notes.txt"]
    )
    assert store.db.paths() == {*added, kept.path, "/not/under/out/CT.1"}
    assert store.db.get(kept.path) == kept
    found = store.db.get(f"{out}/20240115/obj001.dcm")
    assert found is not None
    assert found.sop_instance_uid == "1.2.3.4.4"
    assert found.received_at == os.stat(found.path).st_mtime


def test_reconcile_twice_changes_nothing_the_second_time(store: Store) -> None:
    store.db.record(entry(f"{store.out}/CT.gone"))
    first = index.reconcile(store.db, store.out, node=NODE, skip=store.skip)
    assert first.added and first.gone
    rows = store.rows()
    second = index.reconcile(store.db, store.out, node=NODE, skip=store.skip)
    assert (second.added, second.gone) == ([], [])
    assert store.rows() == rows


def test_reconcile_keeps_a_row_in_a_skipped_directory(store: Store) -> None:
    spooled = str(store.spool / "obj000.dcm")
    store.db.record(entry(spooled))
    result = index.reconcile(store.db, store.out, node=NODE, skip=store.skip)
    assert spooled not in result.gone
    assert spooled in store.db.paths()


def test_check_reports_what_reconcile_would_do_and_changes_nothing(store: Store) -> None:
    store.db.record(entry(f"{store.out}/CT.gone"))
    rows = store.rows()
    checked = index.check(store.db, store.out, node=NODE, skip=store.skip)
    assert store.rows() == rows
    assert checked.added and checked.gone and checked.unreadable
    assert index.reconcile(store.db, store.out, node=NODE, skip=store.skip) == checked


def marked(path: Path, node: str) -> Path:
    os.setxattr(path, storage.NODE_ATTRIBUTE, node.encode())
    return path


def test_the_walk_leaves_out_another_nodes_objects_and_adopts_its_own_and_unmarked(
    tmp_path: Path,
) -> None:
    """Nodes sharing an output directory: an object another node stored is neither listed
    nor tracked, nor reported as unlisted; this node's own unlisted object (a crash between
    its store and its row) and an unmarked one (from before marks, or put there by hand)
    are listed and open their series."""
    out = tmp_path / "out"
    out.mkdir()
    series = {"theirs": "1.2.3.5.1", "ours": "1.2.3.5.2", "unmarked": "1.2.3.5.3"}
    paths = {}
    for name, uid in series.items():
        ds = dicomgen.part10(dicomgen.Spec(dicomgen.CT, f"{uid}.1"))
        ds.SeriesInstanceUID = uid
        ds.save_as(out / f"{name}.dcm", enforce_file_format=True)
        paths[name] = str(out / f"{name}.dcm")
    marked(out / "theirs.dcm", OTHER)
    marked(out / "ours.dcm", NODE)
    adopted = sorted([paths["ours"], paths["unmarked"]])
    with Index(tmp_path / "index.db") as db:
        checked = index.check(db, out, node=NODE, skip=lambda _path: False)
        assert (checked.added, checked.others) == (adopted, 1)
        assert db.paths() == set()
        found = index.reconcile(db, out, node=NODE, skip=lambda _path: False, track=True)
        assert found == index.Reconciled(added=adopted, others=1)
        assert db.paths() == set(adopted)
        tracked = db.transaction(
            lambda c: c.execute("SELECT series_instance_uid FROM series ORDER BY 1").fetchall(),
            write=False,
        )
        assert tracked == [(series["ours"],), (series["unmarked"],)]
        # The other node's object is left out at every start, and never counts as gone.
        again = index.reconcile(db, out, node=NODE, skip=lambda _path: False, track=True)
        assert again == index.Reconciled(others=1)
    # To the other node, this node's object is the other one.
    with Index(tmp_path / "other.db") as db:
        theirs = index.check(db, out, node=OTHER, skip=lambda _path: False)
        assert (theirs.added, theirs.others) == (sorted([paths["theirs"], paths["unmarked"]]), 1)
