"""One C-STORE dataset on its way to disk: the sink that streaming.py feeds.

Normal mode keeps at most the first header.PREFIX_BYTES (plus one fragment) in memory,
until the elements for the File Meta header and the series-date directory are read;
then the meta header and that prefix go to a temporary file and the rest streams
straight after them. Bit-preserving mode names its meta header from the command, so it
writes from the first fragment. Nothing is decoded beyond those few elements, and what
arrived is what is stored.

Failures never raise: they are recorded in `failure` (the rest of the dataset is
then drained and dropped) for the C-STORE handler to answer.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from dcmrecvd import filemeta, header, storage
from dcmrecvd.freespace import Reserve
from dcmrecvd.streaming import StoreCommand

LOG = logging.getLogger("dcmrecv")

# How often, in dataset bytes written, a large object re-checks the free-space reserve.
SPACE_CHECK_INTERVAL = 16 * 1024 * 1024


class FailureKind(enum.Enum):
    EMPTY = "empty dataset"
    BAD_META = "no meta header can be made"
    NO_SPACE = "free space below the reserve"
    WRITE_ERROR = "write error"
    NO_CONTEXT = "presentation context not accepted"


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    detail: str


class IncomingObject:
    """Streams one dataset into a storage.TempFile in `spool`."""

    def __init__(
        self,
        command: StoreCommand,
        *,
        bit_preserving: bool,
        spool: Path,
        reserve: Reserve,
        space_directory: str,
    ) -> None:
        self.command = command
        self.header = header.Header()
        self.failure: Failure | None = None
        self.temp: storage.TempFile | None = None
        self.received = 0
        self._bit_preserving = bit_preserving
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

    def write(self, data: memoryview) -> None:
        with self._lock:
            self.received += len(data)
            if self.failure is not None or self._discarded:
                return
            if self.temp is None:
                if not self._prefix and (self._bit_preserving or len(data) >= header.PREFIX_BYTES):
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
            elif self.temp is None:
                self._open(self._take_prefix())

    def discard(self) -> None:
        """Remove the temporary file and drop whatever still arrives; idempotent."""
        with self._lock:
            self._discarded = True
            self._prefix = bytearray()
            if self.temp is not None:
                self.temp.discard()
                self.temp = None

    def _take_prefix(self) -> bytes:
        prefix, self._prefix = bytes(self._prefix), bytearray()
        return prefix

    def _open(self, prefix: bytes | memoryview) -> None:
        syntax = str(self.command.transfer_syntax)
        if self._bit_preserving:
            uids = self.sop_uids
            source_ae: str | None = self.command.calling_ae_title
        else:
            try:
                self.header = header.read(prefix, syntax)
            except header.HeaderError as exc:
                LOG.debug("cannot read the dataset's header elements: %s", exc)
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

    def _fail(self, exc: OSError) -> None:
        self.failure = Failure(FailureKind.WRITE_ERROR, storage.reason(exc))
        if self.temp is not None:
            self.temp.discard()
            self.temp = None
