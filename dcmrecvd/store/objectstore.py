"""The object store: where a received object goes and what its C-STORE status is.

Like DCMTK's DcmStorageSCP under the receiver's policy: a sink for each incoming dataset,
then naming, the series-date subdirectory, placement under the duplicate policy, the free-
space reserve and quarantine, each with DCMTK dcmrecv's log line. The output-directory check
and the spool sweep live here too, so that a program can check or clean the store without
building a receiver.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pydicom.dataset import Dataset

from dcmrecvd import eventrecords, logfields, nodename, pathtemplate
from dcmrecvd.settings import EventKind, EventSettings, NamingScheme, Settings, StorageMode
from dcmrecvd.sink import Discarding, Sink, StoreCommand
from dcmrecvd.stats import Stats
from dcmrecvd.store import (
    header,
    incoming,
    index,
    mounts,
    naming,
    placement,
    quarantine,
    storage,
)
from dcmrecvd.store.freespace import Reserve

LOG = logging.getLogger("dcmrecv")

# C-STORE statuses dcmrecv sends, with the text of its "Sending C-STORE Response" line.
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
# dcmrecvd's check-sop-uids, as storescp (DCMTK's dcmrecv never sends it).
DATASET_DOES_NOT_MATCH = 0xA900
# The duplicate policy "reject" (PS3.7 C.4.2.1.2 has no storage-specific code for it).
DUPLICATE_SOP_INSTANCE = 0x0111
STATUS_TEXT = {
    SUCCESS: "Success",
    OUT_OF_RESOURCES: "Refused: OutOfResources",
    CANNOT_UNDERSTAND: "Error: CannotUnderstand",
    DATASET_DOES_NOT_MATCH: "Error: DataSetDoesNotMatchSOPClass",
    DUPLICATE_SOP_INSTANCE: "Failed: DuplicateSOPInstance",
}


def check_output_directory(directory: str) -> str | None:
    """DCMTK's reason why `directory` cannot take files, or None when it can."""
    path = Path(directory or ".")
    if not path.is_dir():
        return "Directory does not exist"
    if not os.access(path, os.W_OK | os.X_OK):
        return "Directory is not writable"
    return None


def spool(settings: Settings) -> storage.Spool:
    """The spool of `settings`' output directory, as this node uses it."""
    return storage.Spool(
        storage.spool_directory(settings.output_dir), nodename.resolve(settings.node_name)
    )


def sweep_spool(settings: Settings) -> None:
    """Remove the temporary files that a killed receiver of this node left in the spool
    directory."""
    own = spool(settings)
    removed = storage.sweep(own)
    if removed:
        LOG.warning(
            "removed %d temporary file(s) of an interrupted receiver from %s",
            len(removed),
            own.directory,
        )


def _not_objects(settings: Settings) -> Callable[[Path], bool]:
    """What in the output directory is not a received object: the spool, the index, the
    events directory."""
    assert settings.index_path is not None
    name = Path(settings.index_path).name
    events = (
        Path(os.path.abspath(settings.events.directory)) if settings.events is not None else None
    )
    return lambda path: (
        storage.SPOOL_DIRECTORY in path.parts
        or path.name.startswith(name)
        or (events is not None and Path(os.path.abspath(path)) == events)
    )


def warn_if_index_on_nfs(settings: Settings) -> None:
    """Warn when the index is on NFS, where SQLite's locking is not safe: nodes sharing
    an output directory on NFS keep each its own index on its own disk."""
    if settings.index_path is None:
        return
    kind = mounts.filesystem_type_of(Path(settings.index_path))
    if kind in mounts.NFS_TYPES:
        LOG.warning(
            "index %s is on an NFS file system (%s), where SQLite's locking is not safe:"
            " put the index on this node's local disk",
            settings.index_path,
            kind,
        )


def reconcile_index(settings: Settings) -> None:
    """Make the index list exactly this node's objects in the output directory (the files
    are the truth): what a kill or a power cut left unlisted is added, what is gone is
    dropped, what another node sharing the directory stored is left out. Raises
    index.IndexFailure."""
    if settings.index_path is None:
        return
    path = Path(settings.index_path)
    with index.Index(path) as listing:
        # An index made now adopts what is on disk: those objects were there before
        # completion was tracked, and must not each become an event.
        track = settings.events is not None and not listing.created
        fixed = index.reconcile(
            listing,
            Path(settings.output_dir),
            node=nodename.resolve(settings.node_name),
            skip=_not_objects(settings),
            track=track,
        )
    if fixed.added or fixed.gone:
        LOG.warning(
            "index %s: listed %d stored object(s) it lacked, dropped %d that are gone,"
            " left out %d of other nodes",
            path,
            len(fixed.added),
            len(fixed.gone),
            fixed.others,
        )
    elif fixed.others:
        LOG.info("index %s: left out %d stored object(s) of other nodes", path, fixed.others)


def check_index(settings: Settings) -> index.Reconciled:
    """What the index and the output directory disagree on; nothing is changed."""
    assert settings.index_path is not None
    with index.Index(Path(settings.index_path)) as listing:
        return index.check(
            listing,
            Path(settings.output_dir),
            node=nodename.resolve(settings.node_name),
            skip=_not_objects(settings),
        )


# The elements the index lists besides the SOP UIDs.
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
PATIENT_ID = 0x00100020
MODALITY = 0x00080060
INDEX_TAGS = frozenset({STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, PATIENT_ID, MODALITY})


def _instance_event(events: EventSettings, entry: index.Entry) -> index.NewEvent | None:
    """The instance-stored event of `entry`, when a manifest or a hook wants one."""
    kind = EventKind.INSTANCE_STORED
    targets = eventrecords.targets(events, kind, [entry.modality])
    if not targets:
        return None
    occurrence = eventrecords.Occurrence(
        kind=kind,
        id=str(uuid.uuid4()),
        created_at=entry.received_at,
        study_instance_uid=entry.study_instance_uid,
        series_instance_uid=entry.series_instance_uid,
        generation=0,
        reason="",
    )
    return index.new_event(occurrence, [entry], targets)


def join_path(directory: str, name: str) -> str:
    """DCMTK's combineDirAndFilename: relative stays relative, trailing '/' dropped."""
    if not directory:
        return name
    return f"{directory.rstrip('/')}/{name}"


def _exists(directory: Path, name: str) -> bool:
    try:
        (directory / name).lstat()
    except FileNotFoundError:
        return False
    return True


def _failure(status: int, comment: str) -> Dataset:
    """A failure response with an Error Comment (LO: at most 64 characters)."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment[:64]
    return response


class ObjectStore:
    """The files of one receiver's settings; `stats` counts what it stores."""

    def __init__(self, settings: Settings, stats: Stats) -> None:
        self.settings = settings
        self.stats = stats
        self.namer = naming.FileNamer(settings.naming, settings.extension, int(time.time()))
        self.spool = spool(settings)
        self.reserve = Reserve(
            settings.free_space_reserve_bytes, settings.free_space_reserve_percent
        )
        self.quarantine = (
            quarantine.Quarantine(
                Path(settings.quarantine_dir), settings.quarantine_max_bytes, self.spool.node
            )
            if settings.quarantine_dir is not None
            else None
        )
        # Opened in the process that stores (a worker, after its fork), as SQLite wants.
        self.index = index.Index(Path(settings.index_path)) if settings.index_path else None
        wanted = INDEX_TAGS if self.index is not None else frozenset()
        if settings.path_template is not None:
            wanted |= settings.path_template.tags
        self._wanted = wanted

    def sink(self, command: StoreCommand, progress: Callable[[int], None] | None = None) -> Sink:
        """Where the dataset of a C-STORE-RQ whose command has arrived goes; `progress`
        is told the bytes received so far."""
        if self.settings.storage is StorageMode.IGNORE:
            return Discarding()
        return incoming.IncomingObject(
            command,
            bit_preserving=self.settings.storage is StorageMode.BIT_PRESERVING,
            spool=self.spool,
            reserve=self.reserve,
            space_directory=self.settings.output_dir,
            check_sop_uids=self.settings.check_sop_uids,
            keep_refused=self.quarantine is not None,
            wanted=self._wanted,
            progress=progress,
        )

    def store(self, sink: Sink | None) -> int | Dataset:
        """Store one received object; the C-STORE response status (with a comment)."""
        if self.settings.storage is StorageMode.IGNORE:
            LOG.debug("received dataset is not stored since the storage mode is set to 'ignore'")
            return SUCCESS
        if not isinstance(sink, incoming.IncomingObject):
            # The command said that no dataset follows: nothing to store, ever.
            LOG.error("cannot store received object: the request has no dataset")
            return _failure(CANNOT_UNDERSTAND, "C-STORE request without a dataset")
        try:
            return self._store_object(sink)
        finally:
            sink.discard()  # nothing left to remove once the object is in place

    def _store_object(self, obj: incoming.IncomingObject) -> int | Dataset:
        failure = obj.failure
        if failure is not None and failure.kind in (
            incoming.FailureKind.EMPTY,
            incoming.FailureKind.NO_CONTEXT,
        ):
            return CANNOT_UNDERSTAND
        if failure is not None and failure.kind in incoming.REFUSED:
            return self._refuse(obj, failure)
        if failure is not None and failure.kind is incoming.FailureKind.BAD_META:
            LOG.error(
                "cannot generate directory or file name for received object: %s", failure.detail
            )
            return CANNOT_UNDERSTAND
        sop_class, sop_instance = obj.sop_uids
        bit_preserving = self.settings.storage is StorageMode.BIT_PRESERVING
        try:
            if self.settings.path_template is not None:
                directory, name = self._templated(self.settings.path_template, obj)
            else:
                directory = self._directory(obj.header, bit_preserving)
                # The first name, for the error lines; unique schemes may take another.
                name = self._name(directory, sop_class, sop_instance)
        except naming.NamingError as exc:
            LOG.error("cannot generate directory or file name for received object: %s", exc)
            return CANNOT_UNDERSTAND
        if failure is not None and failure.kind is incoming.FailureKind.NO_SPACE:
            LOG.warning("cannot store received object: %s", failure.detail)
            return _failure(OUT_OF_RESOURCES, "free space below the reserve")
        if failure is not None:
            LOG.error(
                "cannot store received object: %s: %s",
                join_path(directory, name),
                failure.detail,
            )
            return _failure(OUT_OF_RESOURCES, failure.detail)
        try:
            storage.ensure_directory(Path(directory or "."))
        except storage.StorageError as exc:
            LOG.error("%s", exc)
            return _failure(OUT_OF_RESOURCES, "cannot create directory")
        assert obj.temp is not None
        names = iter([name])
        try:
            placed = placement.place(
                obj.temp,
                directory,
                lambda: next(names, None) or self._name(directory, sop_class, sop_instance),
                unique=self.settings.naming in (NamingScheme.UNIQUE, NamingScheme.SHORT_UNIQUE),
                policy=self.settings.duplicates,
                extension_length=len(os.fsencode(self.settings.extension)),
                durable=not self.settings.benchmark_skip_fsync,
                join=join_path,
            )
        except naming.NamingError as exc:
            LOG.error("cannot generate directory or file name for received object: %s", exc)
            return CANNOT_UNDERSTAND
        except placement.PlacementError as exc:
            LOG.error("cannot store received object: %s", exc)
            return _failure(OUT_OF_RESOURCES, storage.reason(exc.error))
        status = self._report(placed, obj.received)
        if self.index is not None and placed.outcome not in (
            placement.Outcome.KEPT_EXISTING,
            placement.Outcome.REJECTED,
        ):
            self._index(self.index, obj, placed.path)
        return status

    def _refuse(self, obj: incoming.IncomingObject, failure: incoming.Failure) -> Dataset:
        """Answer an object that arrived whole but cannot be stored; keep its bytes if asked.

        DCMTK's dcmrecv aborts the association on a dataset it cannot parse; a failure
        status lets the sender go on with the rest of its batch.
        """
        sop_class, sop_instance = obj.command.sop_class_uid, obj.command.sop_instance_uid
        fields = {
            "SOP_CLASS_UID": sop_class,
            "SOP_INSTANCE_UID": sop_instance,
            "REFUSED": failure.kind.name,
        }
        kept = None
        if self.quarantine is not None and obj.temp is not None:
            note = "".join(
                f"{key}={value}\n"
                for key, value in {
                    "REASON": failure.detail,
                    **fields,
                    "TRANSFER_SYNTAX_UID": str(obj.command.transfer_syntax),
                    "DICOM_CALLING_AET": obj.command.calling_ae_title,
                    **logfields.bound(),
                }.items()
            )
            kept = self.quarantine.keep(obj.temp, note)
        if kept is not None:
            fields["QUARANTINE_PATH"] = str(kept)
        LOG.error(
            "cannot store received object: %s%s",
            failure.detail,
            f" (kept in {kept})" if kept is not None else "",
            extra=fields,
        )
        status = (
            DATASET_DOES_NOT_MATCH
            if failure.kind is incoming.FailureKind.SOP_UIDS_DIFFER
            else CANNOT_UNDERSTAND
        )
        return _failure(status, failure.comment)

    def _index(self, listing: index.Index, obj: incoming.IncomingObject, path: str) -> None:
        """List a stored object. It is durable under its name already: if listing fails,
        the file stays and the next start's reconciliation adds it."""
        values = obj.header.value_map()
        character_set = obj.header.character_set()

        def text(tag: int, vr: str) -> str:
            raw = values.get(tag)
            return "" if raw is None else pathtemplate.text_value(raw, vr, character_set)

        sop_class, sop_instance = obj.sop_uids
        fields = logfields.bound()
        entry = index.Entry(
            path=os.path.abspath(path),
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            study_instance_uid=text(STUDY_INSTANCE_UID, "UI"),
            series_instance_uid=text(SERIES_INSTANCE_UID, "UI"),
            patient_id=text(PATIENT_ID, "LO"),
            modality=text(MODALITY, "CS"),
            calling_ae=fields.get("DICOM_CALLING_AET", ""),
            called_ae=fields.get("DICOM_CALLED_AET", ""),
            peer_address=fields.get("PEER_ADDR", ""),
            transfer_syntax=str(obj.command.transfer_syntax or ""),
            size=obj.received,
            received_at=time.time(),
            association_id=fields.get("ASSOC_ID", ""),
        )
        events = self.settings.events
        event = None
        if events is not None:
            event = _instance_event(events, entry)
        try:
            listing.record(entry, track=events is not None, event=event)
        except index.IndexFailure as exc:
            LOG.error("cannot list the stored object in the index (the next start will): %s", exc)

    def _report(self, placed: placement.Placed, size: int) -> int | Dataset:
        """Log what placing the object did, as DCMTK words it where DCMTK does it."""
        outcome = placed.outcome
        if outcome is placement.Outcome.REPLACED:
            LOG.warning("file already exists, overwriting: %s", placed.path)
        elif outcome is placement.Outcome.KEPT_EXISTING:
            LOG.warning("file already exists, keeping the stored file: %s", placed.path)
            return SUCCESS
        elif outcome is placement.Outcome.REJECTED:
            LOG.warning("file already exists, rejecting the object: %s", placed.path)
            return _failure(DUPLICATE_SOP_INSTANCE, "duplicate SOP instance")
        elif outcome is placement.Outcome.STORED_AS_VARIANT:
            LOG.warning("file already exists, keeping both: %s", placed.clash)
        self.stats.instance(size)
        LOG.info(
            "Stored received object to file: %s",
            placed.path,
            extra={"PATH": placed.path, "BYTES": str(size)},
        )
        return SUCCESS

    def _name(self, directory: str, sop_class: str, sop_instance: str) -> str:
        return self.namer.name(
            sop_class,
            sop_instance,
            now=datetime.now(),
            exists=lambda candidate: _exists(Path(directory or "."), candidate),
        )

    def _templated(
        self, template: pathtemplate.Template, obj: incoming.IncomingObject
    ) -> tuple[str, str]:
        """The directory and file name that the path template makes for `obj`."""
        values: dict[int, bytes | None] = dict(obj.header.value_map())
        sop_class, sop_instance = obj.sop_uids
        # The request's UIDs name the file, as in every other scheme.
        values[header.SOP_CLASS_UID] = sop_class.encode("ascii", "replace")
        values[header.SOP_INSTANCE_UID] = sop_instance.encode("ascii", "replace")
        try:
            relative = pathtemplate.render(
                template,
                values,
                character_set=obj.header.character_set(),
                extension=self.settings.extension,
                prefix=naming.modality_prefix(sop_class) or naming.UNKNOWN_PREFIX,
            )
        except pathtemplate.RenderError as exc:
            raise naming.NamingError(f"{naming.COULD_NOT_GENERATE_FILENAME}: {exc}") from exc
        parent, _, name = relative.rpartition("/")
        directory = (
            join_path(self.settings.output_dir, parent) if parent else self.settings.output_dir
        )
        return directory, name

    def _directory(self, found: header.Header, bit_preserving: bool) -> str:
        """The directory an object goes to: the output directory or a series-date one."""
        subdir = naming.subdirectory(
            self.settings.subdir,
            found.series_date if found.series_date_vr else None,
            found.series_date_vr or None,
            datetime.now().date(),
            dataset_available=not bit_preserving,
        )
        return join_path(self.settings.output_dir, subdir) if subdir else self.settings.output_dir
