"""One C-STORE dataset on its way to disk: the sink that streaming.py feeds.

Normal mode keeps at most the first header.PREFIX_BYTES (plus one fragment) in memory,
until the elements for the File Meta header and the series-date directory are read;
then the meta header and that prefix go to a temporary file and the rest streams
straight after them. Bit-preserving mode names its meta header from the command, so it
writes from the first fragment. Nothing is decoded beyond those few elements, and what
arrived is what is stored.

Every fragment also goes through a validation.StreamValidator, which walks the
dataset's structure as it streams: a dataset that is truncated, overruns its lengths or
does not inflate is refused (MALFORMED) however it was stored. With `check_sop_uids`
the dataset's SOP Class/Instance UIDs must be the request's (read from the same prefix
as the header elements, in bit-preserving mode too).

Failures never raise: they are recorded in `failure` (the rest of the dataset is
then drained and dropped) for the C-STORE handler to answer.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from dcmrecvd.sink import StoreCommand
from dcmrecvd.store import filemeta, header, storage, validation
from dcmrecvd.store.freespace import Reserve

LOG = logging.getLogger("dcmrecv")

# How often, in dataset bytes written, a large object re-checks the free-space reserve.
SPACE_CHECK_INTERVAL = 16 * 1024 * 1024
# How far into a stored dataset the elements a path template wants are looked for, when
# they were not in the prefix; what lies beyond counts as absent (the fallback names it).
MAX_TEMPLATE_SCAN = 4 * 1024 * 1024


class FailureKind(enum.Enum):
    EMPTY = "empty dataset"
    BAD_META = "no meta header can be made"
    NO_SPACE = "free space below the reserve"
    WRITE_ERROR = "write error"
    NO_CONTEXT = "presentation context not accepted"
    MALFORMED = "malformed dataset"
    NO_SOP_UIDS = "no SOP Class or Instance UID in the dataset"
    SOP_UIDS_DIFFER = "SOP Class or Instance UID differs from the request"


# The failures of an object that arrived whole but is refused: its bytes may be kept.
REFUSED = frozenset({FailureKind.MALFORMED, FailureKind.NO_SOP_UIDS, FailureKind.SOP_UIDS_DIFFER})


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    detail: str
    # The response's Error Comment (at most 64 characters), where the kind has one.
    comment: str = ""


def sop_uid_failure(command: StoreCommand, found: header.Header) -> Failure | None:
    """Why the dataset's SOP Class/Instance UIDs do not go with the request's, if they do not.

    As storescp: a dataset without them cannot be understood (0xC000); one naming another
    class or instance than the request does not match it (0xA900).
    """
    if not found.sop_class_uid or not found.sop_instance_uid:
        missing = "SOP Class UID" if not found.sop_class_uid else "SOP Instance UID"
        return Failure(
            FailureKind.NO_SOP_UIDS, f"the dataset has no {missing}", f"dataset has no {missing}"
        )
    for what, ours, theirs in (
        ("SOP Class UID", found.sop_class_uid, command.sop_class_uid),
        ("SOP Instance UID", found.sop_instance_uid, command.sop_instance_uid),
    ):
        if ours != theirs.rstrip("\x00 "):
            return Failure(
                FailureKind.SOP_UIDS_DIFFER,
                f"the dataset's {what} {ours} is not the request's {theirs}",
                f"dataset {what} differs from the request's",
            )
    return None


class IncomingObject:
    """Streams one dataset into a storage.TempFile in `spool`."""

    def __init__(
        self,
        command: StoreCommand,
        *,
        bit_preserving: bool,
        spool: storage.Spool,
        reserve: Reserve,
        space_directory: str,
        check_sop_uids: bool = False,
        keep_refused: bool = False,
        wanted: frozenset[int] = frozenset(),
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """`wanted`: the tags of the elements a path template names the file with;
        `progress` is told the bytes received so far, at each fragment."""
        self.command = command
        self.header = header.Header()
        self.failure: Failure | None = None
        self.temp: storage.TempFile | None = None
        self.received = 0
        # What the commit spent on durability (the temporary file's, kept past discard).
        self.fsync_seconds = 0.0
        self._progress = progress
        self._bit_preserving = bit_preserving
        self._check_sop_uids = check_sop_uids
        self._wanted = wanted
        # Where the dataset starts in the temporary file (after the meta header).
        self._dataset_offset = 0
        # Write a refused object to the end, for the quarantine, instead of dropping it.
        self._keep_refused = keep_refused
        self._validator = validation.StreamValidator(command.transfer_syntax or "")
        self._spool = spool
        self._reserve = reserve
        self._space_directory = space_directory
        self._prefix = bytearray()
        self._next_space_check = SPACE_CHECK_INTERVAL
        self._discarded = False
        # The DUL thread writes; the connection-close handler may discard meanwhile.
        self._lock = threading.Lock()
        if command.transfer_syntax is None:
            self.failure = Failure(FailureKind.NO_CONTEXT, f"context {command.context_id}")
            return
        shortfall = reserve.shortfall(space_directory)
        if shortfall is not None:
            self.failure = Failure(FailureKind.NO_SPACE, shortfall)

    @property
    def sop_uids(self) -> tuple[str, str]:
        """The SOP Class/Instance UIDs that name the file: the command's, else the dataset's.

        DCMTK strips the command values' blanks.
        """
        return (
            self.command.sop_class_uid.strip(" ") or self.header.sop_class_uid,
            self.command.sop_instance_uid.strip(" ") or self.header.sop_instance_uid,
        )

    def dataset_uids(self) -> tuple[str, str]:
        """The dataset's own SOP Class/Instance UIDs from its header, "" where it has none
        (sink.DatasetUids: the DIMSE path fills a request's missing ones with them)."""
        return self.header.sop_class_uid, self.header.sop_instance_uid

    def write(self, data: memoryview) -> None:
        with self._lock:
            self.received += len(data)
            if self._progress is not None:
                self._progress(self.received)
            if self.failure is not None or self._discarded:
                return
            self._validator.feed(data)
            if self._validator.error is not None and not self._keep_refused:
                self._refuse(self._validator.error)
                return
            if self.temp is None:
                # Bit-preserving mode needs no header elements, unless to check the UIDs
                # or to name the file by a template.
                direct = self._bit_preserving and not self._check_sop_uids and not self._wanted
                if not self._prefix and (direct or len(data) >= header.PREFIX_BYTES):
                    self._open(data)  # the usual first fragment: no copy to hold
                    return
                self._prefix += data
                if len(self._prefix) >= header.PREFIX_BYTES:
                    self._open(self._take_prefix())
                return
            self._append(data)

    def finish(self) -> None:
        with self._lock:
            if self.failure is not None or self._discarded:
                return
            if self.received == 0:
                self.failure = Failure(FailureKind.EMPTY, "")
                return
            if self.temp is None:
                self._open(self._take_prefix())
                if self.failure is not None:
                    return
            error = self._validator.finish()
            if error is not None:
                self._refuse(error)
                return
            if not self.header.complete:
                self._read_further()
            if self._check_sop_uids:
                self.failure = sop_uid_failure(self.command, self.header)

    def _read_further(self) -> None:
        """Read the header again from the whole dataset: an element a template wants
        came after the prefix (large elements before it). The file is complete now."""
        temp = self.temp
        assert temp is not None
        try:
            with open(temp.path, "rb") as stored:
                stored.seek(self._dataset_offset)
                data = stored.read(MAX_TEMPLATE_SCAN)
            self.header = header.read(data, str(self.command.transfer_syntax), self._wanted)
        except (OSError, header.HeaderError) as exc:
            LOG.debug("cannot read the elements the path template wants: %s", exc)

    def discard(self) -> None:
        """Remove the temporary file and drop whatever still arrives; idempotent."""
        with self._lock:
            self._discarded = True
            self._prefix = bytearray()
            if self.temp is not None:
                self.fsync_seconds = self.temp.fsync_seconds
                self.temp.discard()
                self.temp = None

    def _take_prefix(self) -> bytes:
        prefix, self._prefix = bytes(self._prefix), bytearray()
        return prefix

    def _open(self, prefix: bytes | memoryview) -> None:
        syntax = str(self.command.transfer_syntax)
        if not self._bit_preserving or self._check_sop_uids or self._wanted:
            try:
                self.header = header.read(prefix, syntax, self._wanted)
            except header.HeaderError as exc:
                LOG.debug("cannot read the dataset's header elements: %s", exc)
                # The prefix may end inside an element: the whole dataset may tell more.
                self.header = header.Header(complete=not self._wanted)
        if self._bit_preserving:
            uids = self.command.sop_class_uid.strip(" "), self.command.sop_instance_uid.strip(" ")
            source_ae: str | None = self.command.calling_ae_title
        else:
            # Normal mode's meta header names the dataset's own UIDs, as DCMTK's does.
            command_uids = self.sop_uids
            uids = (
                self.header.sop_class_uid or command_uids[0],
                self.header.sop_instance_uid or command_uids[1],
            )
            source_ae = None
        try:
            meta = filemeta.encode(*uids, syntax, source_ae)
        except ValueError as exc:
            self.failure = Failure(FailureKind.BAD_META, str(exc))
            return
        try:
            self.temp = storage.TempFile(self._spool)
            self.temp.write(meta)
            self._dataset_offset = len(meta)
        except OSError as exc:
            self._fail(exc)
            return
        self._append(prefix)

    def _append(self, data: bytes | memoryview) -> None:
        temp = self.temp
        assert temp is not None
        try:
            temp.write(data)
        except OSError as exc:
            self._fail(exc)
            return
        if self.received >= self._next_space_check:
            self._next_space_check = self.received + SPACE_CHECK_INTERVAL
            shortfall = self._reserve.shortfall(self._space_directory)
            if shortfall is not None:
                self.failure = Failure(FailureKind.NO_SPACE, shortfall)
                temp.discard()
                self.temp = None

    def _refuse(self, error: validation.ValidationError) -> None:
        self.failure = Failure(FailureKind.MALFORMED, str(error), error.comment())
        if self.temp is not None and not self._keep_refused:
            self.temp.discard()
            self.temp = None

    def _fail(self, exc: OSError) -> None:
        self.failure = Failure(FailureKind.WRITE_ERROR, storage.reason(exc))
        if self.temp is not None:
            self.temp.discard()
            self.temp = None
