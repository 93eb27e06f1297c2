"""The durable index of stored objects: one SQLite file that every worker process writes.

The files are the truth. A row is written only once its object is durable under its
final name, so the index never lists an object the disk does not hold, except for a
file removed behind the receiver's back; rows may be missing after a crash or a power
cut. `reconcile` (at start-up) repairs both: it adds what is on disk and not indexed and
forgets what is indexed and no longer on disk; `check` reports the same without writing.
Nodes sharing one output directory each keep their own index: the walk leaves alone the
objects that another node marked as its own (storage.NODE_ATTRIBUTE).

Paths are the key, absolute and normalised as os.path.abspath makes them (symlinks are
not resolved), so that a path recorded by the store and one found by a walk match.

An SQLite connection must not cross fork(): each process opens its own Index after it
is forked; an Index used in another process than the one that opened it raises
IndexFailure. Within a process, threads may share one Index.

Since schema 2 the file also holds what completion and events need (dcmrecvd/events):
the open or complete state of each series and study, and the events with their
deliveries. A worker touches the state of an object's series and study in the
transaction that lists the object, and records an instance-stored event in it too, so
that no event is ever lost between the file and its listing; the events process alone
completes series and studies and delivers.

Since schema 3 it also keeps the Storage Commitment requests until their report is
delivered (dcmrecvd/commitment), so that a report survives a restart.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path
from stat import S_ISREG
from types import TracebackType
from typing import TypeVar

from pydicom import dcmread
from pydicom.multival import MultiValue

from dcmrecvd import eventrecords
from dcmrecvd.store import storage

T = TypeVar("T")

SCHEMA_VERSION = 3
# Long enough for another worker's transaction (one row, or one reconcile batch).
BUSY_TIMEOUT_SECONDS = 10.0
# Rows added per transaction by reconcile: one transaction per file is slow on a large
# store, one for the whole walk would hold the write lock from the workers too long.
_BATCH = 500

_SCHEMA = (
    """CREATE TABLE objects (
        path TEXT PRIMARY KEY NOT NULL,
        sop_class_uid TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL,
        study_instance_uid TEXT NOT NULL,
        series_instance_uid TEXT NOT NULL,
        patient_id TEXT NOT NULL,
        modality TEXT NOT NULL,
        calling_ae TEXT NOT NULL,
        called_ae TEXT NOT NULL,
        peer_address TEXT NOT NULL,
        transfer_syntax TEXT NOT NULL,
        size INTEGER NOT NULL,
        received_at REAL NOT NULL,
        association_id TEXT NOT NULL
    )""",
    "CREATE INDEX objects_sop_instance ON objects (sop_instance_uid)",
    "CREATE INDEX objects_study_series ON objects (study_instance_uid, series_instance_uid)",
)
# Schema 2: completion state, events and their deliveries. `open` is 1 while a series
# (study) is receiving, 0 once complete; first_received is that of its generation.
_SCHEMA_2 = (
    """CREATE TABLE series (
        series_instance_uid TEXT PRIMARY KEY NOT NULL,
        study_instance_uid TEXT NOT NULL,
        generation INTEGER NOT NULL,
        open INTEGER NOT NULL,
        first_received REAL NOT NULL,
        last_received REAL NOT NULL
    )""",
    "CREATE INDEX series_study ON series (study_instance_uid)",
    "CREATE INDEX series_open ON series (open)",
    """CREATE TABLE studies (
        study_instance_uid TEXT PRIMARY KEY NOT NULL,
        generation INTEGER NOT NULL,
        open INTEGER NOT NULL,
        first_received REAL NOT NULL,
        last_received REAL NOT NULL
    )""",
    "CREATE INDEX studies_open ON studies (open)",
    # AUTOINCREMENT: a sequence number is never reused, so manifest names never repeat.
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT UNIQUE NOT NULL,
        kind TEXT NOT NULL,
        created_at REAL NOT NULL,
        study_instance_uid TEXT NOT NULL,
        series_instance_uid TEXT NOT NULL,
        generation INTEGER NOT NULL,
        manifest TEXT NOT NULL
    )""",
    # target: "manifest" or "hook:NAME"; state: pending, done, failed or dropped.
    """CREATE TABLE deliveries (
        seq INTEGER NOT NULL REFERENCES events (seq),
        target TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        due REAL NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (seq, target)
    )""",
    "CREATE INDEX deliveries_due ON deliveries (state, due)",
)
# Schema 3: Storage Commitment requests whose report is pending, done or given up
# (dcmrecvd/commitment/pending.py). `peer` is the [peer] rule that admitted the request
# ("" for none), `destination` the rule's report destination then (JSON, "" for none),
# `refs` the referenced instances (JSON); state: pending, done or failed.
_SCHEMA_3 = (
    """CREATE TABLE commitments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        transaction_uid TEXT NOT NULL,
        received_at REAL NOT NULL,
        calling_ae TEXT NOT NULL,
        called_ae TEXT NOT NULL,
        peer_address TEXT NOT NULL,
        peer TEXT NOT NULL,
        destination TEXT NOT NULL,
        refs TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        due REAL NOT NULL,
        finished_at REAL,
        detail TEXT NOT NULL
    )""",
    "CREATE INDEX commitments_due ON commitments (state, due)",
)
_MIGRATIONS = {
    0: _SCHEMA + _SCHEMA_2 + _SCHEMA_3,
    1: _SCHEMA_2 + _SCHEMA_3,
    2: _SCHEMA_3,
}


@dataclass(frozen=True)
class Entry:
    """One stored instance; text is "" where unknown."""

    path: str  # absolute, normalised (os.path.abspath)
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    modality: str
    calling_ae: str
    called_ae: str
    peer_address: str
    transfer_syntax: str
    size: int  # bytes
    received_at: float  # epoch seconds
    association_id: str


# The table's columns are the fields, in order: a row is Entry(*row).
ENTRY_COLUMNS = ", ".join(f.name for f in fields(Entry))
_PLACEHOLDERS = ", ".join("?" * len(fields(Entry)))


@dataclass(frozen=True)
class NewEvent:
    """An event to record, with the deliveries it gets (all pending at first)."""

    id: str
    kind: str
    created_at: float
    study_instance_uid: str
    series_instance_uid: str
    generation: int
    manifest: str  # JSON
    targets: tuple[str, ...]


def new_event(
    occurrence: eventrecords.Occurrence, files: Sequence[Entry], targets: tuple[str, ...]
) -> NewEvent:
    """The event to record for `occurrence` over `files`, with its manifest built now."""
    return NewEvent(
        id=occurrence.id,
        kind=occurrence.kind.value,
        created_at=occurrence.created_at,
        study_instance_uid=occurrence.study_instance_uid,
        series_instance_uid=occurrence.series_instance_uid,
        generation=occurrence.generation,
        manifest=eventrecords.encode(eventrecords.manifest(occurrence, files)),
        targets=targets,
    )


def insert_event(connection: sqlite3.Connection, event: NewEvent) -> int:
    """Record `event` and its deliveries within the caller's transaction; its sequence."""
    cursor = connection.execute(
        "INSERT INTO events (id, kind, created_at, study_instance_uid, series_instance_uid,"
        " generation, manifest) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            event.id,
            event.kind,
            event.created_at,
            event.study_instance_uid,
            event.series_instance_uid,
            event.generation,
            event.manifest,
        ),
    )
    seq = cursor.lastrowid
    assert seq is not None
    connection.executemany(
        "INSERT INTO deliveries (seq, target, state, attempts, due, detail)"
        " VALUES (?, ?, 'pending', 0, ?, '')",
        [(seq, target, event.created_at) for target in event.targets],
    )
    return seq


def touch(connection: sqlite3.Connection, entry: Entry) -> None:
    """Within the caller's transaction: `entry` arrived, so its series and study are
    open; one that had completed re-opens with its generation one higher."""
    if not entry.study_instance_uid or not entry.series_instance_uid:
        return  # nothing to complete: an object without them is only listed
    at = entry.received_at
    connection.execute(
        "INSERT INTO series (series_instance_uid, study_instance_uid, generation, open,"
        " first_received, last_received) VALUES (?, ?, 1, 1, ?, ?)"
        " ON CONFLICT (series_instance_uid) DO UPDATE SET"
        " generation = generation + 1 - open,"
        " first_received = CASE WHEN open THEN first_received ELSE excluded.first_received END,"
        " last_received = max(last_received, excluded.last_received),"
        " open = 1",
        (entry.series_instance_uid, entry.study_instance_uid, at, at),
    )
    connection.execute(
        "INSERT INTO studies (study_instance_uid, generation, open, first_received,"
        " last_received) VALUES (?, 1, 1, ?, ?)"
        " ON CONFLICT (study_instance_uid) DO UPDATE SET"
        " generation = generation + 1 - open,"
        " first_received = CASE WHEN open THEN first_received ELSE excluded.first_received END,"
        " last_received = max(last_received, excluded.last_received),"
        " open = 1",
        (entry.study_instance_uid, at, at),
    )


class IndexFailure(Exception):
    """The index file cannot be opened, read or written; the text names it."""


class Index:
    """The index file at `path` (its directory must exist), created when missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        # True when this opening made the file (it listed nothing before).
        self.created = False
        try:
            # Autocommit: every transaction below is explicit.
            connection = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise IndexFailure(f"{path}: {exc}") from exc
        self._connection = connection
        try:
            self._prepare(connection)
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise IndexFailure(f"{path}: {exc}") from exc
        except IndexFailure:
            self.close()
            raise

    def _prepare(self, connection: sqlite3.Connection) -> None:
        mode = self._wal(connection)
        if mode != "wal":
            # Without WAL, a reader blocks the workers' writes.
            raise IndexFailure(f"{self.path}: journal mode is {mode}, WAL was refused")
        # A commit is not fsynced, only each checkpoint: a power cut may lose the last
        # rows but never corrupts the file, and reconcile adds the lost rows back.
        connection.execute("PRAGMA synchronous = NORMAL")
        # IMMEDIATE: two processes creating the file at once take turns here.
        connection.execute("BEGIN IMMEDIATE")
        try:
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if version in _MIGRATIONS:
                for statement in _MIGRATIONS[version]:
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self.created = version == 0
            elif version != SCHEMA_VERSION:
                raise IndexFailure(
                    f"{self.path}: schema version {version}, this program knows {SCHEMA_VERSION}"
                )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    @staticmethod
    def _wal(connection: sqlite3.Connection) -> str:
        """Switch to WAL; the journal mode the file is in then.

        While another connection reads the file, SQLite answers busy at once instead of
        waiting (it would deadlock with a writer), so try again until the busy timeout.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
                return str(mode)
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(0.005)

    @property
    def files(self) -> tuple[Path, Path, Path]:
        """The index file and SQLite's two files beside it (for a walk to skip)."""
        return self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")

    def _run(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """`work` in one transaction (IMMEDIATE when it writes), errors as IndexFailure."""
        if os.getpid() != self._pid:
            raise IndexFailure(
                f"{self.path}: opened in process {self._pid}, used in {os.getpid()}: "
                "open the index after fork()"
            )
        with self._lock:
            connection = self._connection
            if connection is None:
                raise IndexFailure(f"{self.path}: the index is closed")
            try:
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = work(connection)
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise IndexFailure(f"{self.path}: {exc}") from exc
            return result

    def transaction(self, work: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """`work` in one transaction of this process's connection; raises IndexFailure."""
        return self._run(work, write=write)

    def record(self, entry: Entry, *, track: bool = False, event: NewEvent | None = None) -> None:
        """Index a stored object; a row with the same path (an overwrite) is replaced.

        `track`: open its series and study for completion; `event`: record it too. All
        in one transaction, so the listing, the state and the event go together.
        """
        _check_path(entry.path)

        def insert(connection: sqlite3.Connection) -> None:
            connection.execute(
                f"INSERT OR REPLACE INTO objects ({ENTRY_COLUMNS}) VALUES ({_PLACEHOLDERS})",
                astuple(entry),
            )
            if track:
                touch(connection, entry)
            if event is not None:
                insert_event(connection, event)

        self._run(insert, write=True)

    def add_missing(self, entries: Iterable[Entry], *, track: bool = False) -> list[str]:
        """Index those of `entries` whose path is not indexed; the paths added.

        A row already there, even one recorded since the caller looked, is kept: the
        store's row knows the association, a walk does not. `track`: the objects added
        open their series and study for completion, as received at their entry's time.
        """
        batch = list(entries)
        for entry in batch:
            _check_path(entry.path)

        def insert(connection: sqlite3.Connection) -> list[str]:
            added = []
            for entry in batch:
                cursor = connection.execute(
                    f"INSERT OR IGNORE INTO objects ({ENTRY_COLUMNS}) VALUES ({_PLACEHOLDERS})",
                    astuple(entry),
                )
                if cursor.rowcount == 1:
                    added.append(entry.path)
                    if track:
                        touch(connection, entry)
            return added

        return self._run(insert, write=True)

    def forget(self, path: str) -> None:
        """Remove the row of `path`, if any."""
        self._run(lambda c: c.execute("DELETE FROM objects WHERE path = ?", (path,)), write=True)

    def paths(self) -> set[str]:
        rows = self._run(lambda c: c.execute("SELECT path FROM objects").fetchall(), write=False)
        return {row[0] for row in rows}

    def get(self, path: str) -> Entry | None:
        row = self._run(
            lambda c: c.execute(
                f"SELECT {ENTRY_COLUMNS} FROM objects WHERE path = ?", (path,)
            ).fetchone(),
            write=False,
        )
        return None if row is None else Entry(*row)

    def close(self) -> None:
        """Close the connection (in the process that opened it only); idempotent."""
        connection, self._connection = self._connection, None
        if connection is not None and os.getpid() == self._pid:
            connection.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _check_path(path: str) -> None:
    if path != os.path.abspath(path):
        raise ValueError(f"index paths are absolute and normalised: {path!r}")


# What describe reads: the rest of the dataset is skipped, the pixel data never read.
_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "Modality",
]


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(item) for item in value)
    return str(value)


def describe(path: Path, received_at: float) -> Entry | None:
    """The entry of a stored Part-10 file, None when it is not one or cannot be read.

    Who sent it and over which association is not in the file: those fields are "".
    """
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            ds = dcmread(file, stop_before_pixels=True, specific_tags=_TAGS, force=False)
            values = {keyword: _text(ds.get(keyword)) for keyword in _TAGS}
            meta = ds.file_meta
            # The store names a dataset without SOP UIDs from the request, in File Meta.
            sop_class = values["SOPClassUID"] or _text(meta.get("MediaStorageSOPClassUID"))
            sop_instance = values["SOPInstanceUID"] or _text(meta.get("MediaStorageSOPInstanceUID"))
            syntax = _text(meta.get("TransferSyntaxUID"))
    except Exception:  # pydicom raises many types on a file that is not what it expects
        return None
    return Entry(
        path=os.path.abspath(path),
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_instance_uid=values["StudyInstanceUID"],
        series_instance_uid=values["SeriesInstanceUID"],
        patient_id=values["PatientID"],
        modality=values["Modality"],
        calling_ae="",
        called_ae="",
        peer_address="",
        transfer_syntax=syntax,
        size=size,
        received_at=received_at,
        association_id="",
    )


@dataclass
class Reconciled:
    """What differed between the index and the files under the output directory."""

    added: list[str] = field(default_factory=list)  # on disk, not indexed (now indexed)
    gone: list[str] = field(default_factory=list)  # indexed, not on disk (now forgotten)
    unreadable: list[str] = field(default_factory=list)  # on disk, not DICOM: left alone
    others: int = 0  # on disk, not indexed, marked by another node: left alone


def _is_regular(path: str) -> bool:
    try:
        return S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _walk(
    index: Index, output_dir: Path, node: str, skip: Callable[[Path], bool], found: Reconciled
) -> Iterator[Entry]:
    """The entries of the files not indexed that are `node`'s or unmarked; fills
    found.gone, found.unreadable and found.others."""
    root = os.path.abspath(output_dir)
    # Indexed paths not met by the walk yet: those left at the end may be gone.
    unseen = {p for p in index.paths() if p.startswith(root + os.sep)}
    for directory, subdirectories, names in os.walk(root):
        # os.walk does not follow symlinked directories (followlinks=False).
        subdirectories[:] = [d for d in subdirectories if not skip(Path(directory, d))]
        for name in names:
            path = os.path.join(directory, name)
            if name.startswith(".") or skip(Path(path)):
                continue
            if path in unseen:
                unseen.discard(path)
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue  # removed since listed
            if not S_ISREG(st.st_mode):
                continue
            marked = storage.stored_by(path)
            if marked is not None and marked != node:
                found.others += 1
                continue
            entry = describe(Path(path), st.st_mtime)
            if entry is None:
                found.unreadable.append(path)
            else:
                yield entry
    # An indexed file in a skipped directory is not seen by the walk, and not gone.
    found.gone = sorted(p for p in unseen if not _is_regular(p))


def reconcile(
    index: Index,
    output_dir: Path,
    *,
    node: str,
    skip: Callable[[Path], bool],
    track: bool = False,
) -> Reconciled:
    """Make the index list exactly the DICOM files under `output_dir` that are not
    another node's; what it changed.

    `node` is this node's name: an unlisted file marked with another node's is left
    out; unmarked ones (stored before marks existed, on a file system without them, or
    put there by hand) are listed. `skip` names the paths (files and directories) that
    are not stored objects: the spool, the index's own files, a quarantine inside,
    temporary names. Files whose name starts with "." are never objects. Rows a worker
    records meanwhile are kept. `track`: the objects added open their series and study
    (see add_missing).
    """
    found = Reconciled()
    batch: list[Entry] = []
    for entry in _walk(index, output_dir, node, skip, found):
        batch.append(entry)
        if len(batch) == _BATCH:
            found.added += index.add_missing(batch, track=track)
            batch = []
    found.added += index.add_missing(batch, track=track)
    for path in found.gone:
        index.forget(path)
    found.added.sort()
    found.unreadable.sort()
    return found


def check(index: Index, output_dir: Path, *, node: str, skip: Callable[[Path], bool]) -> Reconciled:
    """What reconcile would change, without changing the index."""
    found = Reconciled()
    found.added = sorted(entry.path for entry in _walk(index, output_dir, node, skip, found))
    found.unreadable.sort()
    return found
