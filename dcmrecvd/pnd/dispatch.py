"""Serve DIMSE requests by their command, and end an association for no request that
can be answered.

Workaround for a pynetdicom 3.0 limit, kept in this one module: Association's
_serve_request picks the service class for a request from the SOP Class UID the request
names, not from its command, and aborts the association whenever that goes wrong: a
C-STORE naming a class it does not know (`31`, from a sender that misread a file) or a
query model (its Q/R service raises), a C-FIND naming a storage class (our C-STORE
handler raises). N-EVENT-REPORT requests reach _serve_request from a thread of their
own, not through the request queue. `install` replaces the association's _serve_request,
the one method both paths call, with `StorageOnlyDIMSE.serve_request`, which decides by
command, with DCMTK's dcmrecv as the reference:

- C-ECHO is answered on any accepted context, as dcmrecv does.
- C-STORE is stored whatever SOP class it names, as dcmrecv stores it (an unknown class
  is named `UNKNOWN.<uid>` by its prefix table). A command without Affected SOP
  Instance (or Class) UID takes them from the dataset's header, which normal mode has
  read by then; without one, naming fails and the answer is 0xC000.
- N-ACTION goes to the receiver's `Action` when it has one (Storage Commitment, which
  DCMTK's dcmrecv does not serve): the response carries the status it gives, then what
  it asks to follow runs on the association (the report on the same association).
- Any other request gets dcmrecv's error line, then a failure response (0x0211,
  Unrecognized Operation) and the association goes on; dcmrecv aborts.
- A response sent to us gets dcmrecv's error line and nothing else (a response is not
  answered); dcmrecv aborts.
- A request on a context that was not accepted, or without a Message ID, aborts the
  association, as in dcmrecv: there is no context to answer on, or no request to name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import (
    C_ECHO,
    C_STORE,
    N_ACTION,
    DIMSEPrimitive,
    DimsePrimitiveType,
    DimseServiceType,
)
from pynetdicom.dsutils import decode
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass, VerificationServiceClass

from dcmrecvd.pnd.streaming import StreamedDataSet, StreamingDIMSE
from dcmrecvd.sink import DatasetUids

LOG = logging.getLogger("dcmrecv")

# PS3.7 C.5: the operation is not one of those agreed between the service users.
UNRECOGNIZED_OPERATION = 0x0211
# PS3.7 E.1: a response's command field is its request's with this bit set.
RESPONSE_BIT = 0x8000

# PS3.7 10.1.4.1.10: N-ACTION statuses this module gives itself.
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_CLASS = 0x0118
# How long a report on the request's association waits for its answer when the
# association has no DIMSE timeout (DCMTK's socket timeout).
REPORT_ANSWER_TIMEOUT = 60.0

# Called with the command field of a request that is refused, or of a response that
# arrives, to log it.
Refusal = Callable[[int], None]


@dataclass(frozen=True)
class ActionRequest:
    """An N-ACTION request as the receiver needs it."""

    sop_class_uid: str  # Requested SOP Class UID
    sop_instance_uid: str  # Requested SOP Instance UID
    action_type: int | None
    information: Dataset | None  # None: none sent, or it cannot be decoded


# Sends an N-EVENT-REPORT (its Event Information, its Event Type ID) on the association
# of the N-ACTION, naming the N-ACTION's SOP class and instance: the status the peer
# answered, None when it did not answer.
ReportHere = Callable[[Dataset, int], int | None]
# What runs on the association after the N-ACTION response.
FollowUp = Callable[[ReportHere], None]
# The N-ACTION's response status, and what follows it (None: nothing).
Action = Callable[[ActionRequest], tuple[int, FollowUp | None]]


class StorageOnlyDIMSE(StreamingDIMSE):
    """A streaming DIMSE provider whose association serves C-ECHO and C-STORE only."""

    _refusal: Refusal
    _action: Action | None
    _reports: int  # N-EVENT-REPORTs sent, for their Message IDs

    def serve_request(self, msg: DimseServiceType, context_id: int) -> None:
        """Serve one request or response from the peer: the association's _serve_request."""
        self.bind_log_fields()  # N-EVENT-REPORT comes in a thread of its own
        request = cast(DIMSEPrimitive, msg)
        field = command_field(request)
        if request.MessageID is None and request.MessageIDBeingRespondedTo is not None:
            self._refusal(field | RESPONSE_BIT)
            return
        context = next(
            (cx for cx in self.assoc.accepted_contexts if cx.context_id == context_id), None
        )
        if context is None or request.MessageID is None:
            LOG.error(
                "cannot handle a DIMSE command (0x%04x) %s; aborting the association",
                field,
                (
                    f"on presentation context {context_id}, which was not accepted"
                    if context is None
                    else "without a Message ID"
                ),
            )
            self.assoc.abort()
            return
        if isinstance(msg, C_STORE):
            _uids_from_dataset(msg)
            self._serve_by(StorageServiceClass(self.assoc), msg, context)
        elif isinstance(msg, C_ECHO):
            self._serve_by(VerificationServiceClass(self.assoc), msg, context)
        elif isinstance(msg, N_ACTION) and self._action is not None:
            self._serve_action(self._action, msg, context)
        else:
            self._refusal(field)
            self.send_msg(cast(DimsePrimitiveType, refusal_response(request)), context_id)

    def _serve_by(
        self,
        service: StorageServiceClass | VerificationServiceClass,
        msg: C_STORE | C_ECHO,
        context: PresentationContext,
    ) -> None:
        try:
            service.SCP(msg, context)  # type: ignore[arg-type]
        except Exception:  # the services answer for their handlers; this is a bug
            LOG.exception("cannot serve a DIMSE request; aborting the association")
            self.assoc.abort()

    def _serve_action(self, action: Action, msg: N_ACTION, context: PresentationContext) -> None:
        request = ActionRequest(
            sop_class_uid=str(msg.RequestedSOPClassUID or ""),
            sop_instance_uid=str(msg.RequestedSOPInstanceUID or ""),
            action_type=msg.ActionTypeID,
            information=_decoded(msg.ActionInformation, context),
        )
        follow_up: FollowUp | None = None
        if request.sop_class_uid != context.abstract_syntax:
            status = NO_SUCH_SOP_CLASS
        else:
            try:
                status, follow_up = action(request)
            except Exception:  # the action answers for its failures; this is a bug
                LOG.exception("cannot serve an N-ACTION request")
                status = PROCESSING_FAILURE
        response = N_ACTION()
        response.MessageIDBeingRespondedTo = msg.MessageID
        response.AffectedSOPClassUID = msg.RequestedSOPClassUID
        response.AffectedSOPInstanceUID = msg.RequestedSOPInstanceUID
        if status == 0x0000:
            response.ActionTypeID = msg.ActionTypeID
        response.Status = status
        self.send_msg(cast(DimsePrimitiveType, response), int(context.context_id or 0))
        if follow_up is None:
            return
        # pynetdicom limit: its send_*() methods wait until the association thread pauses
        # (_is_paused), and this is that thread, serving a request; its own _serve_request
        # sets the flag around a service for the same reason.
        self.assoc._is_paused = True
        try:
            follow_up(lambda information, kind: self._report_here(request, information, kind))
        except Exception:
            LOG.exception("cannot finish serving an N-ACTION request")
        finally:
            self.assoc._is_paused = False

    def _report_here(self, request: ActionRequest, information: Dataset, kind: int) -> int | None:
        """Send an N-EVENT-REPORT on this association and wait for its answer, at most
        the DIMSE timeout (REPORT_ANSWER_TIMEOUT without one)."""
        assoc = self.assoc
        if not assoc.is_established:
            return None
        self._reports += 1
        previous = assoc.dimse_timeout
        assoc.dimse_timeout = previous or REPORT_ANSWER_TIMEOUT
        try:
            status, _ = assoc.send_n_event_report(
                information,
                kind,
                request.sop_class_uid,
                request.sop_instance_uid,
                msg_id=self._reports % 0x10000,
            )
        except (RuntimeError, ValueError) as exc:  # no longer established; cannot encode
            LOG.warning("cannot send an N-EVENT-REPORT: %s", exc)
            return None
        finally:
            assoc.dimse_timeout = previous
        code = status.get("Status")
        return None if code is None else int(code)


# The command field of each request primitive (PS3.7 E.1); C-CANCEL never comes here.
_FIELDS = {
    "C_STORE": 0x0001,
    "C_GET": 0x0010,
    "C_FIND": 0x0020,
    "C_MOVE": 0x0021,
    "C_ECHO": 0x0030,
    "N_EVENT_REPORT": 0x0100,
    "N_GET": 0x0110,
    "N_SET": 0x0120,
    "N_ACTION": 0x0130,
    "N_CREATE": 0x0140,
    "N_DELETE": 0x0150,
}


def _decoded(information: BytesIO | None, context: PresentationContext) -> Dataset | None:
    """The dataset of an N-ACTION's Action Information in the context's syntax, or None."""
    if information is None or not information.getvalue():
        return None
    syntax = context.transfer_syntax[0]
    try:
        return decode(
            information, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
        )
    except Exception:  # pydicom raises many types on bytes that are not a dataset
        return None


def command_field(request: DIMSEPrimitive) -> int:
    """The request command field of `request`'s kind of message."""
    return _FIELDS[type(request).__name__]


def refusal_response(request: DIMSEPrimitive) -> DIMSEPrimitive:
    """The failure response to a request we do not serve: its kind, its Message ID and
    its SOP class and instance where the response has them (PS3.7 9.3, 10.3)."""
    response = type(request)()
    response.MessageIDBeingRespondedTo = request.MessageID
    response.Status = UNRECOGNIZED_OPERATION
    for affected, requested in (
        ("AffectedSOPClassUID", "RequestedSOPClassUID"),
        ("AffectedSOPInstanceUID", "RequestedSOPInstanceUID"),
    ):
        value = getattr(request, affected, None) or getattr(request, requested, None)
        if value and hasattr(response, affected):
            setattr(response, affected, value)
    return response


def _uids_from_dataset(request: C_STORE) -> None:
    dataset = request.DataSet
    sink = dataset.sink if isinstance(dataset, StreamedDataSet) else None
    if not isinstance(sink, DatasetUids):
        return
    sop_class_uid, sop_instance_uid = sink.dataset_uids()
    try:
        if not request.AffectedSOPClassUID and sop_class_uid:
            request.AffectedSOPClassUID = sop_class_uid
        if not request.AffectedSOPInstanceUID and sop_instance_uid:
            request.AffectedSOPInstanceUID = sop_instance_uid
    except ValueError:  # pynetdicom refuses a malformed UID; naming will fail on it
        return


def prepare(dimse: DIMSEServiceProvider, refusal: Refusal, action: Action | None) -> None:
    """Give `dimse` the state StorageOnlyDIMSE needs: `refusal` logs what it refuses,
    `action` serves N-ACTION requests (None: they are refused)."""
    storage_only = cast(StorageOnlyDIMSE, dimse)
    storage_only._refusal = refusal
    storage_only._action = action
    storage_only._reports = 0
