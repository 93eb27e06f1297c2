"""Serve a well-formed C-STORE in the DUL thread, its command read by hand.

Workaround for a pynetdicom 3.0 limit, kept in this one module: every DIMSE request
goes from the DUL thread to the association thread and its answer back (two queue
hand-offs and thread switches per instance), its command set is decoded into a pydicom
Dataset and a primitive whose UIDs are validated again on every read, and it reaches
the handler through the service class and event machinery. With this module (and
the read path of the same change) the receiver's user CPU for 1000 CT images went
from 1.01 to 0.38 s (docs/performance.md).

`FastStoreDIMSE` reads a C-STORE-RQ command set that comes in one fragment, holds only
the elements PS3.7 9.3.1.1 allows, each once and in order, with conformant UIDs, on an
accepted context of a storage SOP class that the command names. Its dataset streams
to a sink as in streaming.py; once the last fragment is in, the receiver's `serve`
stores it and the C-STORE-RSP is written to the socket from the same thread, as DT-1
would. Anything else (other commands, unusual or malformed command sets, pynetdicom's
DEBUG logging, handlers bound to the DIMSE or PDU events this path does not raise)
takes pynetdicom's path as before.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from dcmrecvd import logfields
from dcmrecvd.pnd import responses
from dcmrecvd.pnd.streaming import COMMAND, LAST
from dcmrecvd.sink import Sink, StoreCommand

# The name from before the move to packages: -lc files may name it.
LOG = logging.getLogger("dcmrecvd.fastpath")
# Where pynetdicom logs an exception in an EVT_C_STORE handler.
_SERVICE_LOG = logging.getLogger("pynetdicom.service_class")
_PYNETDICOM = logging.getLogger("pynetdicom")

_C_STORE_RQ = 0x0001
_NO_DATA_SET = 0x0101
_PROCESSING_FAILURE = 0xC211
# PS3.5 9.1: a UID of numeric components without leading zeros, at most 64 characters.
_UID = re.compile(rb"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_UID_MAX = 64
# (0000,eeee) elements of a C-STORE-RQ, in order: group length, Affected SOP Class
# UID, Command Field, Message ID, Priority, Command Data Set Type, Affected SOP
# Instance UID, Move Originator AE Title and Message ID.
_ALLOWED = (0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000, 0x1030, 0x1031)
_REQUIRED = frozenset((0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000))
_FIXED_LENGTH = {0x0000: 4, 0x0100: 2, 0x0110: 2, 0x0700: 2, 0x0800: 2, 0x1031: 2}
# Events pynetdicom raises on its path that this one does not.
_UNRAISED = (evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT, evt.EVT_PDU_SENT)


@dataclass(frozen=True)
class StoreRequest:
    """A C-STORE-RQ as the receiver needs it."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str


# Stores one request's dataset (None when it was not received) and gives the
# response status, with an Error Comment in a Dataset, as an EVT_C_STORE handler does.
Serve = Callable[[StoreRequest, Sink | None], int | Dataset]


def decode_store_request(command: bytes) -> StoreRequest | None:
    """The C-STORE-RQ in an Implicit VR Little Endian command set, or None if this is
    not one, or not one that this path takes (pynetdicom's decoder then decides)."""
    values: dict[int, bytes] = {}
    offset = 0
    last = -1
    while offset < len(command):
        if offset + 8 > len(command):
            return None
        group, element, length = struct.unpack_from("<HHL", command, offset)
        offset += 8
        if group != 0 or element <= last or element not in _ALLOWED:
            return None
        if offset + length > len(command) or _FIXED_LENGTH.get(element, length) != length:
            return None
        values[element] = command[offset : offset + length]
        offset += length
        last = element
    if not values.keys() >= _REQUIRED:
        return None
    field, message_id, priority, data_set = (
        int.from_bytes(values[element], "little") for element in (0x0100, 0x0110, 0x0700, 0x0800)
    )
    if field != _C_STORE_RQ or priority > 2 or data_set == _NO_DATA_SET:
        return None
    if 0x1030 in values and not _ae_title(values[0x1030]):
        return None
    sop_class, sop_instance = (_uid(values[element]) for element in (0x0002, 0x1000))
    if sop_class is None or sop_instance is None:
        return None
    return StoreRequest(message_id, sop_class, sop_instance)


def _ae_title(value: bytes) -> bool:
    """Whether pynetdicom would take `value` as an AE title (PS3.5 6.2: AE)."""
    text = value.decode("latin-1")
    return (
        0 < len(text.strip(" \x00")) <= len(text) <= 16
        and text.isascii()
        and text.rstrip("\x00").isprintable()
        and "\\" not in text
    )


def _uid(value: bytes) -> str | None:
    if value.endswith(b"\x00"):
        value = value[:-1]
    if len(value) > _UID_MAX or not _UID.fullmatch(value):
        return None
    return value.decode("ascii")


@dataclass(frozen=True)
class _Context:
    abstract_syntax: str
    transfer_syntax: str
    # pynetdicom would hand its requests to the storage service.
    storage: bool


class FastStoreDIMSE(responses.QuickResponseDIMSE):
    """The storage DIMSE provider, serving plain C-STOREs itself (installed by class swap)."""

    _serve: Serve
    # The association thread's log fields, bound to the DUL thread when it first serves.
    _fields: dict[str, str]
    _fields_bound: bool
    _contexts: dict[int, _Context] | None
    _request: StoreRequest | None
    _request_context: int
    # The peer's maximum PDU length, fixed once the association is accepted.
    _peer_maximum: int | None

    def receive_primitive(self, primitive: P_DATA) -> None:
        for context_id, data in primitive.presentation_data_value_list:
            if self._request is not None:
                if not self._dataset_fragment(context_id, data):
                    return
                continue
            if (
                data[0] == COMMAND | LAST
                and self.message is None
                and self._stream is None
                and self._start_fast(context_id, data)
            ):
                continue
            single = P_DATA()
            # Filled in place: the setter takes bytes only, a dataset fragment is a view.
            single.presentation_data_value_list = []
            single.presentation_data_value_list.append((context_id, data))
            super().receive_primitive(single)

    def _start_fast(self, context_id: int, data: bytes) -> bool:
        """Take the C-STORE-RQ command in `data` on this path; False to leave it to pynetdicom."""
        contexts = self._fast_contexts()
        context = contexts.get(context_id) if contexts is not None else None
        if context is None or not context.storage:
            return False
        request = decode_store_request(bytes(data[1:]))
        if request is None or request.sop_class_uid != context.abstract_syntax:
            return False
        command = StoreCommand(
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
            context_id=context_id,
            transfer_syntax=context.transfer_syntax,
            calling_ae_title=str(self.assoc.requestor.ae_title or ""),
            message_id=request.message_id,
        )
        if not self._fields_bound:
            logfields.bind(**self._fields)
            self._fields_bound = True
        self._open_stream(command)
        self._request = request
        self._request_context = context_id
        return True

    def _fast_contexts(self) -> dict[int, _Context] | None:
        """The accepted contexts this path serves, or None when it serves none."""
        if self._contexts is None:
            assoc = self.assoc
            usable = not (
                _PYNETDICOM.isEnabledFor(logging.DEBUG)
                or assoc.acceptor.accepted_common_extended
                or any(assoc.get_handlers(event) for event in _UNRAISED)
            )
            self._contexts = {}
            self._peer_maximum = self.maximum_pdu_size
            if usable:
                for cx in assoc.accepted_contexts:
                    uid = str(cx.abstract_syntax)
                    self._contexts[int(cx.context_id or 0)] = _Context(
                        abstract_syntax=uid,
                        transfer_syntax=str(cx.transfer_syntax[0]),
                        storage=issubclass(uid_to_service_class(uid), StorageServiceClass),
                    )
        return self._contexts or None

    def _dataset_fragment(self, context_id: int, data: bytes | memoryview) -> bool:
        """One fragment of the dataset being received; False if the association aborts."""
        control = data[0]
        if not self._in_dataset(context_id, control):
            return False
        self._write(memoryview(data)[1:])
        if control & LAST:
            self._finish()
        return True

    def _finish(self) -> None:
        request = cast(StoreRequest, self._request)
        self._request = None
        sink = self._close_stream()
        claimed = sink if self.claim(sink) else None
        try:
            result = self._serve(request, claimed)
        except Exception as exc:
            # What pynetdicom answers when an EVT_C_STORE handler raises.
            _SERVICE_LOG.error("Exception in handler bound to 'evt.EVT_C_STORE'")
            _SERVICE_LOG.exception(exc)
            result = _PROCESSING_FAILURE
            if claimed is not None:
                claimed.discard()  # it may not have got as far as its own clean-up
        # Whatever is_established says: pynetdicom 3.0's association thread sets it only
        # after EVT_ACCEPTED, once the DUL thread may have sent the A-ASSOCIATE-AC and
        # served the peer's first C-STORE here, whose response was then never sent. This
        # thread sends any A-ABORT itself, so a response never follows one.
        self._respond(request, result)

    def _respond(self, request: StoreRequest, result: int | Dataset) -> None:
        status, comment = (
            (result, "")
            if isinstance(result, int)
            else (int(result.Status), str(result.get("ErrorComment", "")))
        )
        command = responses.sendable(
            lambda: responses.store_response_command(
                message_id=request.message_id,
                sop_class_uid=request.sop_class_uid,
                sop_instance_uid=request.sop_instance_uid,
                status=status,
                comment=comment,
            ),
            self._peer_maximum,
        )
        if command is None:  # pynetdicom's encoder decides
            rsp = C_STORE()
            rsp.MessageIDBeingRespondedTo = request.message_id
            rsp.AffectedSOPClassUID = request.sop_class_uid
            rsp.AffectedSOPInstanceUID = request.sop_instance_uid
            rsp.Status = status
            if comment:
                # pynetdicom annotates the attribute as None; its setter takes a str.
                cast(Any, rsp).ErrorComment = comment
            super().send_msg(rsp, self._request_context)
            return
        socket = self.dul.socket
        if socket is None:
            LOG.warning("cannot send the C-STORE response: the connection is closed")
            return
        # In the DUL thread in Sta6: what DT-1 does with a P-DATA request.
        socket.send(responses.p_data_tf(self._request_context, command))

    def discard_unclaimed(self) -> None:
        self._request = None
        super().discard_unclaimed()


def prepare(dimse: DIMSEServiceProvider, serve: Serve) -> None:
    """Give `dimse` the state FastStoreDIMSE needs to serve plain C-STOREs with `serve`;
    from the association thread once its log fields are bound (EVT_REQUESTED)."""
    fast = cast(FastStoreDIMSE, dimse)
    fast._serve = serve
    fast._fields = dict(logfields.bound())
    fast._fields_bound = False
    fast._contexts = None
    fast._request = None
    fast._request_context = 0
    fast._peer_maximum = None
