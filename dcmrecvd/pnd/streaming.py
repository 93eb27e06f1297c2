"""Stream C-STORE datasets to a sink as their P-DATA fragments arrive.

Workaround for a pynetdicom 3.0 limit, kept in this one module: DIMSEMessage.decode_msg
appends every dataset fragment of a C-STORE-RQ to an in-memory BytesIO, so the whole
dataset is held in memory; its STORE_RECV_CHUNKED_DATASET mode instead writes its own
File Meta (pynetdicom's implementation UID) to tempfile.gettempdir(), a process-global
place with no per-association control, and leaks the file when the association aborts
or the handler raises.

`install` gives an association's DIMSE provider a subclass that takes the dataset
fragments of each C-STORE-RQ away from decode_msg and hands them to a sink made for
that request; pynetdicom still decodes the command and dispatches the request, whose
DataSet is then an empty `StreamedDataSet` carrying the sink (`claim` returns it).
`on_connection_closed` discards every sink no handler has claimed, so an abort, a
disconnect or a timeout leaves nothing behind. STORE_RECV_CHUNKED_DATASET must stay off.
The provider also remembers the request whose dataset an abort interrupted, for the
receiver's log lines.
"""

from __future__ import annotations

import logging
import struct
import threading
from io import BytesIO
from typing import cast

from pydicom.multival import MultiValue
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import P_DATA

from dcmrecvd import logfields
from dcmrecvd.sink import Discarding, Sink, SinkFactory, StoreCommand

# The name from before the move to packages: -lc files may name it.
LOG = logging.getLogger("dcmrecvd.streaming")

# PS3.8 E.2 message control header bits (fastpath.py and reactor.py read them too).
COMMAND = 0x01
LAST = 0x02


class StreamedDataSet(BytesIO):
    """The empty stand-in for a streamed dataset, carrying its sink."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self.sink = sink


class StreamingDIMSE(DIMSEServiceProvider):
    """A DIMSE provider that streams C-STORE datasets (installed by class swap)."""

    _sink_factory: SinkFactory
    _stream: Sink | None
    _unclaimed: list[Sink]
    _sinks_lock: threading.Lock
    # The association thread's log fields, bound to the DUL thread when it first logs.
    _log_fields: dict[str, str]
    # The request whose dataset is being received; it stays set when the connection ends.
    _receiving: StoreCommand | None

    def receive_primitive(self, primitive: P_DATA) -> None:
        # One PDV at a time, so a P-DATA that ends the command and starts the dataset
        # is split between pynetdicom and the sink.
        for context_id, data in primitive.presentation_data_value_list:
            if self._stream is not None:
                if not self._in_dataset(context_id, data[0]):
                    return
                self._write(memoryview(data)[1:])
                if data[0] & LAST:
                    self._complete(context_id, data[0])
                continue
            value = bytes(data)  # reactor.py passes views; pynetdicom takes bytes only
            if self.message is None and data[0] == COMMAND | LAST:
                value = value[:1] + medium_priority(value[1:])
            single = P_DATA()
            single.presentation_data_value_list = [[context_id, value]]  # type: ignore[list-item]
            try:
                super().receive_primitive(single)
            except Exception:  # decode_msg raises whatever a malformed command makes
                # pynetdicom limit: the error would leave the DUL's state machine and end
                # its thread, so the association would neither abort nor close.
                LOG.exception("cannot decode a DIMSE command set; aborting the association")
                self.message = None
                self.abort_for_violation()
                return
            if isinstance(self.message, C_STORE_RQ):
                # The command is complete and announces a dataset (one without a
                # dataset would have been dispatched already).
                self._start(self.message)

    def _start(self, message: C_STORE_RQ) -> None:
        cs = message.command_set
        context_id = int(message.context_id or 0)
        syntax = next(
            (
                str(cx.transfer_syntax[0])
                for cx in self.assoc.accepted_contexts
                if cx.context_id == context_id
            ),
            None,
        )
        command = StoreCommand(
            sop_class_uid=_uid_text(cs.get("AffectedSOPClassUID")),
            sop_instance_uid=_uid_text(cs.get("AffectedSOPInstanceUID")),
            context_id=context_id,
            transfer_syntax=syntax,
            calling_ae_title=str(self.assoc.requestor.ae_title or ""),
            message_id=int(cs.get("MessageID") or 0),  # absent: dispatch aborts
        )
        self._open_stream(command)

    def _in_dataset(self, context_id: int, control: int) -> bool:
        """Whether a fragment belongs to the dataset being received; if not, the
        association is aborted (PS3.7 9.3.1.1 / PS3.8 9.3.5.1: the dataset follows its
        command, whole and on the command's context, before anything else)."""
        receiving = cast(StoreCommand, self._receiving)
        if control & COMMAND:
            LOG.error("a command in the middle of a dataset; aborting the association")
        elif context_id != receiving.context_id:
            LOG.error(  # dcmrecv's words
                "Presentation Context ID of command (%d) and data set (%d) differs",
                receiving.context_id,
                context_id,
            )
        else:
            return True
        self.abort_for_violation()
        return False

    def abort_for_violation(self) -> None:
        """Abort the association for what the peer sent: A-ABORT, then close."""
        self.discard_unclaimed()
        self.dul.event_queue.put("Evt19")  # an invalid PDU

    def bind_log_fields(self) -> None:
        """Attach the association's log fields to the calling thread, if it has none."""
        if not logfields.bound():
            logfields.bind(**self._log_fields)

    def _open_stream(self, command: StoreCommand) -> None:
        """Stream the dataset that follows `command` to a new sink."""
        self.bind_log_fields()  # the sink factory logs from the DUL thread
        self._receiving = command
        sink = self._sink_factory(command)
        with self._sinks_lock:
            self._stream = sink
            self._unclaimed.append(sink)

    def _write(self, data: memoryview) -> None:
        sink = cast(Sink, self._stream)
        try:
            sink.write(data)
        except Exception:
            LOG.exception("dataset sink failed; dropping the rest of the dataset")
            self._drop(sink)

    def _drop(self, sink: Sink) -> None:
        with self._sinks_lock:
            if sink in self._unclaimed:
                self._unclaimed.remove(sink)
            self._stream = Discarding()
        sink.discard()

    def _close_stream(self) -> Sink:
        """The last fragment is in: finish the sink and stop streaming; the sink (a
        Discarding one if it failed)."""
        sink = cast(Sink, self._stream)
        try:
            sink.finish()
        except Exception:
            LOG.exception("dataset sink failed at the end of the dataset")
            self._drop(sink)
        sink = cast(Sink, self._stream)
        self._stream = None
        self._receiving = None
        return sink

    def _complete(self, context_id: int, control: int) -> None:
        sink = self._close_stream()
        message = cast(C_STORE_RQ, self.message)
        message.data_set = StreamedDataSet(sink)
        # An empty last fragment lets pynetdicom finish and dispatch the message.
        end = P_DATA()
        end.presentation_data_value_list = [[context_id, bytes([control])]]  # type: ignore[list-item]
        super().receive_primitive(end)

    def interrupted(self) -> StoreCommand | None:
        """The request whose dataset was being received when the connection ended."""
        return self._receiving

    def claim(self, sink: Sink) -> bool:
        """Take `sink` over from the connection; False if it was discarded already."""
        with self._sinks_lock:
            if sink not in self._unclaimed:
                return False
            self._unclaimed.remove(sink)
            return True

    def discard_unclaimed(self) -> None:
        with self._sinks_lock:
            sinks, self._unclaimed = self._unclaimed, []
            self._stream = None
        for sink in sinks:
            sink.discard()


def medium_priority(command: bytes) -> bytes:
    """`command` (a whole command set) with a Priority outside PS3.7's 0-2 made MEDIUM (0).

    pynetdicom limit: its C-STORE-RQ primitive refuses any other Priority, and the
    message is then dropped and the association aborted; dcmrecv stores the object.
    A storage SCP does nothing with the priority, and no response carries it.
    """
    offset = 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHL", command, offset)
        if (group, element, length) == (0x0000, 0x0700, 2) and offset + 10 <= len(command):
            (priority,) = struct.unpack_from("<H", command, offset + 8)
            if priority > 2:
                return command[: offset + 8] + b"\x00\x00" + command[offset + 10 :]
            return command
        offset += 8 + length
    return command


def _uid_text(value: object) -> str:
    """A command UID as sent: absent is empty, and a backslash (which pydicom reads as a
    value separator) stays a backslash, to be sanitised like any other byte."""
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(part) for part in value)
    return str(value)


def prepare(dimse: DIMSEServiceProvider, factory: SinkFactory) -> None:
    """Give `dimse` the state StreamingDIMSE needs to stream datasets to sinks from
    `factory`; pnd.association swaps the class in, before the association is accepted
    (EVT_REQUESTED, whose thread has the association's log fields bound)."""
    streaming = cast(StreamingDIMSE, dimse)
    streaming._sink_factory = factory
    streaming._stream = None
    streaming._unclaimed = []
    streaming._sinks_lock = threading.Lock()
    streaming._log_fields = dict(logfields.bound())
    streaming._receiving = None


def claim(event: Event) -> Sink | None:
    """The sink of the C-STORE request in `event`, now the handler's to finish or discard.

    None if the dataset was not streamed or the connection is gone (already discarded).
    """
    dataset = cast(C_STORE, event.request).DataSet
    dimse = event.assoc.dimse
    if not isinstance(dataset, StreamedDataSet) or not isinstance(dimse, StreamingDIMSE):
        return None
    return dataset.sink if dimse.claim(dataset.sink) else None


def on_connection_closed(event: Event) -> None:
    """EVT_CONN_CLOSE: discard what was being received and what no handler took."""
    dimse = event.assoc.dimse
    if isinstance(dimse, StreamingDIMSE):
        dimse.discard_unclaimed()
