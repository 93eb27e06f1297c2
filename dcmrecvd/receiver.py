"""The receiver: DCMTK dcmrecv's association policy and the event wiring both programs share.

Like DcmSCP under dcmrecv.cc: a `Receiver` builds the pynetdicom AE, decides each
association (application context, called AE title, access rules, free-space reserve,
negotiation), installs the DIMSE path on the accepted ones and logs what DCMTK logs. The
objects themselves go to its ObjectStore (store/objectstore.py). dcmrecv's process life is
apps/dcmrecv_life.py; each of the daemon's workers builds one Receiver per configuration.
"""

from __future__ import annotations

import gc
import logging
import socket
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import cast

import pydicom.config
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    A_P_ABORT,
    SCP_SCU_RoleSelectionNegotiation,
    SOPClassExtendedNegotiation,
)

from dcmrecvd import dumps, logfields
from dcmrecvd.commitment import model as commitment_model
from dcmrecvd.commitment import scp as commitment
from dcmrecvd.config import access
from dcmrecvd.metrics.snapshot import OTHER_PEER
from dcmrecvd.negotiation import (
    APPLICATION_CONTEXT,
    Outcome,
    Proposed,
    Result,
    configured_role_name,
    negotiate,
    proposed_role_name,
    pynetdicom_contexts,
    representable,
)
from dcmrecvd.pnd import (
    association,
    dispatch,
    fastpath,
    streaming,
)
from dcmrecvd.profiles import Profile
from dcmrecvd.settings import MAX_PDU, Settings
from dcmrecvd.sink import Sink, StoreCommand
from dcmrecvd.stats import Identity, Live, Stats
from dcmrecvd.store import filemeta, objectstore
from dcmrecvd.store.incoming import IncomingObject

LOG = logging.getLogger("dcmrecv")

# DCMTK has no DIMSE timeout by default but sets 60 s socket timeouts, so an idle
# association is dropped after about a minute.
DEFAULT_NETWORK_TIMEOUT = 60

# A-ASSOCIATE-RJ (result, source, reason) that dcmrecv sends.
REJECT_BAD_APPLICATION_CONTEXT = (0x02, 0x01, 0x02)
REJECT_CALLED_AE_TITLE = (0x01, 0x01, 0x07)
REJECT_NO_ACCEPTABLE_CONTEXTS = (0x01, 0x01, 0x01)
REJECT_LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)  # transient: the free-space reserve
# The metrics' name of each refusal by access control.
_REJECT_METRICS = {
    access.Rejection.CALLING_AE_NOT_RECOGNIZED: "calling-aetitle",
    access.Rejection.CALLED_AE_NOT_RECOGNIZED: "called-aetitle",
    access.Rejection.LOCAL_LIMIT_EXCEEDED: "local-limit",
}

# DCMTK's conditions for a dataset it could not receive: the peer aborted or the
# connection closed; the DIMSE timeout (-td) passed.
PEER_ABORTED = "0006:0317 Peer aborted Association (or never connected)"
DIMSE_TIMEOUT = "0006:0207 DIMSE No data available (timeout in non-blocking mode)"
# PDU header (6 bytes), PDV item header (6): the rest of a P-DATA-TF is the PDV's value.
PDV_OVERHEAD = 12


def tune_process() -> None:
    """Process-wide settings for a process that serves associations, once its Receiver
    is built and before it serves.

    pydicom validates every UID it makes against a regular expression and warns on a
    bad one; pynetdicom makes hundreds per association (each proposed context's), and
    dcmrecvd reads no values with pydicom that such a warning would be about (DCMTK's
    dcmrecv warns of none either). Off, an association costs a quarter less CPU.

    What start-up made (pydicom's and pynetdicom's tables, the profiles' contexts) lives
    until the process ends, yet every full collection of the cyclic garbage collector
    walked it again, 8-12 ms each time; frozen, the collector skips it.
    """
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    gc.collect()
    gc.freeze()


def max_send_pdv(peer_maximum: int) -> tuple[int, str | None]:
    """DCMTK's "Max Send PDV" for a peer's maximum PDU length, and its warning if any.

    DCMTK sends PDUs of at most 128 KiB (also to a peer with no limit, 0) and of an even
    length.
    """
    length = peer_maximum
    warning = None
    if length == 0 or length > MAX_PDU:
        length = MAX_PDU
    elif length % 2:
        warning = f"ASSOC: PDV send length {length} is odd (using {length - 1})"
        length -= 1
    return length - PDV_OVERHEAD, warning


def _proposals(event: Event) -> tuple[list[Proposed], dict[str, tuple[bool, bool]]]:
    rq = cast(A_ASSOCIATE, event.assoc.requestor.primitive)
    proposed = [
        Proposed(
            cx.context_id or 0, str(cx.abstract_syntax), tuple(str(ts) for ts in cx.transfer_syntax)
        )
        for cx in rq.presentation_context_definition_list
    ]
    roles = {
        str(uid): (bool(item.scu_role), bool(item.scp_role))
        for uid, item in event.assoc.requestor.role_selection.items()
    }
    return proposed, roles


@dataclass
class _Association:
    """What the receiver keeps about one association while it runs."""

    started: float
    negotiation: dumps.Negotiation | None = None
    # Set when the abort is ours or has been logged: DCMTK logs only a peer's abort, once.
    abort_said: bool = False
    # The DUL aborted for a protocol error: A-ABORT sent, A-P-ABORT indicated.
    protocol_abort: bool = False
    # The admission to give back when the connection closes.
    admitted: access.Decision | None = None
    # Its ASSOC_ID, the [peer] rule's name that admitted it (the metrics' label), and
    # its live entry.
    identity: str = ""
    peer: str = OTHER_PEER
    live: Live = field(default_factory=Live)
    # A balancer's health check (PROXY v2 LOCAL): not admitted by rules, not counted.
    check: bool = False
    # Who asks for Storage Commitment on it, and whether its report may come back on it.
    requester: commitment.Requester | None = None


# The association of a request whose association is not known (never in practice).
_NOBODY = _Association(0.0)


class Receiver:
    """One storage SCP: its AE, its profile and its event handlers."""

    def __init__(
        self,
        settings: Settings,
        profile: Profile,
        *,
        peer_profiles: Mapping[str, Profile] | None = None,
        stats: Stats | None = None,
        admission: access.Admission | None = None,
    ) -> None:
        """`peer_profiles` are the profiles that [peer] rules name; `stats` and
        `admission` outlive a receiver when a reload replaces it."""
        self.settings = settings
        self.profile = profile
        self.peer_profiles = dict(peer_profiles or {})
        self.stats = stats or Stats()
        self.admission = admission or access.Admission()
        self.ae = AE(ae_title=settings.aetitle)
        self.ae.implementation_class_uid = filemeta.IMPLEMENTATION_CLASS_UID
        self.ae.implementation_version_name = filemeta.IMPLEMENTATION_VERSION_NAME
        self._associations: weakref.WeakKeyDictionary[Association, _Association] = (
            weakref.WeakKeyDictionary()
        )
        # The same, by ASSOC_ID: the DIMSE path knows its association by its log fields.
        self._by_id: dict[str, _Association] = {}
        self.ae.maximum_pdu_size = settings.max_pdu & ~1  # DCMTK sends odd sizes rounded down
        self.ae.acse_timeout = settings.acse_timeout
        self.ae.dimse_timeout = settings.dimse_timeout
        self.ae.network_timeout = settings.dimse_timeout or DEFAULT_NETWORK_TIMEOUT
        # Admission counts associations itself, across reloads (pynetdicom counts per AE).
        self.ae.maximum_associations = association.UNLIMITED_ASSOCIATIONS
        self.store = objectstore.ObjectStore(settings, self.stats)
        self.commitment: commitment.CommitmentScp | None = None
        if settings.commitment is not None:
            assert self.store.index is not None  # the configuration requires it
            self.commitment = commitment.CommitmentScp(settings, self.store.index, self.stats)
            self.profile = profile = commitment.serving(profile)
            self.peer_profiles = {
                name: commitment.serving(served) for name, served in self.peer_profiles.items()
            }
        for served in (profile, *self.peer_profiles.values()):
            association.register_storage_classes(served)
        # Built once and given to every association: pynetdicom only reads an acceptor's
        # contexts (a contract test holds it to that).
        self._acceptor_contexts = {
            id(served): pynetdicom_contexts(served)
            for served in (profile, *self.peer_profiles.values())
        }

    def handlers(self) -> list[EventHandlerType]:
        return [
            (evt.EVT_CONN_OPEN, self._on_connection_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ACSE_RECV, self._on_acse_received),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, streaming.on_connection_closed),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]

    def stop(self) -> None:
        """Abort every association still running."""
        self.ae.shutdown()

    def _peer_name(self, address: str) -> str:
        if not self.settings.host_lookup:
            return address
        try:
            return socket.gethostbyaddr(address)[0]
        except OSError:
            return address

    def _reject(
        self, event: Event, rsd: tuple[int, int, int], reason: str, metric: str, why: str = ""
    ) -> None:
        """Refuse the association; `metric`: the reason's name in the metrics."""
        self.stats.rejected(metric)
        LOG.info(
            "Refusing Association (%s)%s",
            reason,
            f": {why}" if why else "",
            extra={"REJECT_REASON": reason},
        )
        association.reject(event.assoc, rsd)

    def _on_connection_open(self, event: Event) -> None:
        association.on_connection_open(event.assoc, self.ae.maximum_pdu_size)

    def _on_requested(self, event: Event) -> None:
        """Apply DCMTK's association policy before pynetdicom negotiates."""
        rq = cast(A_ASSOCIATE, event.assoc.requestor.primitive)
        calling = rq.calling_ae_title
        called = rq.called_ae_title
        address = event.assoc.requestor.address
        relay = association.relay(event.assoc)
        logfields.bind(
            DICOM_CALLING_AET=calling,
            DICOM_CALLED_AET=called,
            PEER_ADDR=address,
            **({"PROXY_ADDR": relay.proxy} if relay is not None else {}),
            ASSOC_ID=logfields.new_association_id(),
        )
        info = self._associations[event.assoc] = _Association(time.monotonic())
        info.check = relay is not None and relay.check
        if LOG.isEnabledFor(logging.INFO):  # the host lookup is for this line alone
            LOG.info(
                "Association Received %s%s: %s -> %s",
                self._peer_name(address),
                f" (via {relay.proxy})" if relay is not None and not info.check else "",
                calling,
                called,
            )
        proposed, roles = _proposals(event)
        negotiation = self._negotiation(event, proposed, roles)
        self._dump("Incoming Association Request:\n" + dumps.dump(negotiation, dumps.Pdu.RQ))
        if str(rq.application_context_name) != APPLICATION_CONTEXT:
            self._reject(
                event,
                REJECT_BAD_APPLICATION_CONTEXT,
                "bad application context",
                "application-context",
            )
            return
        if self.settings.check_called_aetitle and called != self.settings.aetitle:
            LOG.error(
                "Called AE Title does not match configured AE Title: %s", self.settings.aetitle
            )
            self._reject(
                event, REJECT_CALLED_AE_TITLE, "called AE title not recognized", "called-aetitle"
            )
            return
        if info.check:
            # The balancer asks whether this node serves: no [peer] rule is about it, and
            # a node busy up to its limits still serves.
            self.stats.proxy_check()
            decision = access.Decision()
        else:
            decision = self.admission.admit(
                self.settings.access, self.settings.max_associations, (calling, called, address)
            )
            if decision.rejection is not None:
                rejection = decision.rejection
                self._reject(
                    event, rejection.rsd, rejection.text, _REJECT_METRICS[rejection], decision.why
                )
                return
            info.admitted = decision
        shortfall = self.store.reserve.shortfall(self.settings.output_dir)
        if shortfall is not None:
            LOG.warning("%s", shortfall)
            self._reject(event, REJECT_LOCAL_LIMIT_EXCEEDED, "local limit exceeded", "free-space")
            return
        profile = self.profile
        if decision.rule is not None and decision.rule.profile is not None:
            profile = self.peer_profiles[decision.rule.profile]
        outcome = representable(negotiate(profile, proposed, roles))
        info.negotiation = _answered(negotiation, outcome, profile)
        if not outcome.accepted:
            LOG.info("No Acceptable Presentation Contexts")
            self._dump(dumps.dump(info.negotiation, dumps.Pdu.RJ))
            self._reject(
                event,
                REJECT_NO_ACCEPTABLE_CONTEXTS,
                "no acceptable presentation contexts",
                "no-contexts",
            )
            return
        if decision.rule is not None:
            info.peer = decision.rule.name
        info.identity = logfields.bound().get("ASSOC_ID", "")
        if not info.check:  # a health check is no peer's association
            info.live = self.stats.live(
                Identity(
                    info.identity,
                    calling,
                    called,
                    address,
                    info.peer,
                    association.over_tls(event.assoc),
                )
            )
        self._by_id[info.identity] = info
        info.requester = _requester(event, info, outcome)
        association.on_accept(
            event.assoc,
            self._sink,
            self._refuse_request,
            self._serve_store,
            self._on_action if self.commitment is not None else None,
        )
        self._apply(event, outcome, profile)

    def _on_closed(self, event: Event) -> None:
        info = self._associations.get(event.assoc)
        if info is not None and info.admitted is not None:
            self.admission.leave(info.admitted)
            info.admitted = None
        if info is not None:
            info.live.close()
            info.live = Live()
            self._by_id.pop(info.identity, None)

    def _apply(self, event: Event, outcome: Outcome, profile: Profile) -> None:
        """Make pynetdicom's answer carry DCMTK's roles and extended negotiation."""
        acceptor = event.assoc.acceptor
        refused = frozenset(
            c.abstract_syntax
            for c in outcome.contexts
            if c.result is Result.ABSTRACT_SYNTAX_NOT_SUPPORTED
        )
        # The server has no contexts of its own (server.Serving): they are set here.
        if refused:
            # Refusals for roles leave the abstract syntax out, in this association's list.
            acceptor.supported_contexts = pynetdicom_contexts(profile, refused)
        else:
            acceptor.supported_contexts = self._acceptor_contexts[id(profile)]
        for reply in outcome.role_replies:
            item = SCP_SCU_RoleSelectionNegotiation()
            item.sop_class_uid = reply.sop_class_uid
            item.scu_role = reply.scu_role
            item.scp_role = reply.scp_role
            acceptor.add_negotiation_item(item)
        for uid, data in outcome.extended_negotiation:
            ext = SOPClassExtendedNegotiation()
            ext.sop_class_uid = uid
            ext.service_class_application_information = data
            acceptor.add_negotiation_item(ext)

    def _negotiation(
        self, event: Event, proposed: list[Proposed], roles: dict[str, tuple[bool, bool]]
    ) -> dumps.Negotiation:
        """The request as DCMTK dumps it (the answer is filled in by `_answered`)."""
        rq = cast(A_ASSOCIATE, event.assoc.requestor.primitive)
        requestor = event.assoc.requestor
        return dumps.Negotiation(
            our_class_uid=filemeta.IMPLEMENTATION_CLASS_UID,
            our_version=filemeta.IMPLEMENTATION_VERSION_NAME,
            their_class_uid=str(requestor.implementation_class_uid or ""),
            their_version=str(requestor.implementation_version_name or ""),
            application_context=str(rq.application_context_name),
            calling=rq.calling_ae_title,
            called=rq.called_ae_title,
            our_max_pdu=self.ae.maximum_pdu_size,
            their_max_pdu=requestor.maximum_length or 0,
            contexts=tuple(
                dumps.ContextDump(
                    pc.context_id,
                    pc.abstract_syntax,
                    proposed_role_name(roles, pc.abstract_syntax),
                    pc.transfer_syntaxes,
                )
                for pc in proposed
            ),
            requested_extended=tuple(
                (str(uid), bytes(data or b"")) for uid, data in requestor.sop_class_extended.items()
            ),
        )

    def _dump(self, text: str) -> None:
        # +v shows the dumps at INFO; otherwise DCMTK logs them at DEBUG.
        LOG.log(logging.INFO if self.settings.verbose_pc else logging.DEBUG, "%s", text)

    def _on_accepted(self, event: Event) -> None:
        info = self._associations.get(event.assoc)
        if info is None or not info.check:
            self.stats.association()
        pdv, warning = max_send_pdv(event.assoc.requestor.maximum_length or 0)
        if warning is not None:
            LOG.warning("%s", warning)
        LOG.info("Association Acknowledged (Max Send PDV: %d)", pdv)
        if info is not None and info.negotiation is not None:
            self._dump(dumps.dump(info.negotiation, dumps.Pdu.AC))

    def _duration(self, event: Event) -> dict[str, str]:
        info = self._associations.get(event.assoc)
        if info is None:
            return {}
        return {"DURATION_MS": str(round((time.monotonic() - info.started) * 1000))}

    def _on_released(self, event: Event) -> None:
        LOG.info("Received Association Release Request", extra=self._duration(event))

    def _on_acse_received(self, event: Event) -> None:
        # A-P-ABORT's provider reason 0 is a closed connection; any other is the DUL's
        # own A-ABORT for a protocol error (PS3.8 9.3.8, pynetdicom's AA-7 and AA-8).
        primitive = event.primitive  # type: ignore[attr-defined]
        info = self._associations.get(event.assoc)
        if info is not None and isinstance(primitive, A_P_ABORT) and primitive.provider_reason:
            info.protocol_abort = True

    def _on_aborted(self, event: Event) -> None:
        """Log what DCMTK logs when an association ends by an abort.

        dcmrecv says "Received Association Abort Request" when the peer aborts, when the
        connection closes and when its default 60 s socket timeout passes, but not when
        it aborts itself (a protocol violation, -td); a dataset cut short gets two error
        lines first.
        """
        info = self._associations.get(event.assoc)
        # No request yet: a connection that closed before asking for an association.
        if info is None or info.abort_said:
            return
        info.abort_said = True
        assoc = event.assoc
        # The timeout leaves the DUL's idle timer expired.
        ours = association.aborted_by_us(assoc) or info.protocol_abort
        timed_out = ours and association.idle_timed_out(assoc)
        interrupted = association.interrupted(assoc)
        if interrupted is not None and (timed_out or not ours):
            LOG.error(
                "Unable to receive dataset on presentation context 0: %s",
                DIMSE_TIMEOUT if timed_out and self.settings.dimse_timeout else PEER_ABORTED,
            )
            LOG.error(
                "Unable to receive C-STORE dataset on presentation context %d",
                interrupted.context_id,
            )
        if not ours or (timed_out and not self.settings.dimse_timeout):
            LOG.info("Received Association Abort Request", extra=self._duration(event))

    def _on_echo(self, event: Event) -> int:
        LOG.info("Received C-ECHO Request (MsgID %d)", event.request.MessageID)
        LOG.info("Sending C-ECHO Response (Success)")
        return objectstore.SUCCESS

    def _on_action(self, request: dispatch.ActionRequest) -> tuple[int, dispatch.FollowUp | None]:
        """An N-ACTION: Storage Commitment's, answered by the commitment SCP."""
        requester = self._current().requester
        assert self.commitment is not None and requester is not None
        LOG.info("Received N-ACTION Request (Action Type ID %s)", request.action_type)
        return self.commitment.on_action(
            requester,
            (request.sop_class_uid, request.sop_instance_uid),
            request.action_type,
            request.information,
        )

    def _refuse_request(self, field: int) -> None:
        LOG.error(
            "cannot handle this kind of DIMSE command (0x%04x), we are a Storage SCP only", field
        )

    def _on_store(self, event: Event) -> int | Dataset:
        request = cast(C_STORE, event.request)
        served = fastpath.StoreRequest(
            message_id=int(request.MessageID or 0),
            sop_class_uid=str(request.AffectedSOPClassUID or ""),
            sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
        )
        if not isinstance(request.DataSet, streaming.StreamedDataSet):
            # No dataset was announced, so no sink announced the request.
            self._announce_store(served.message_id, served.sop_class_uid, served.sop_instance_uid)
        return self._serve_store(served, streaming.claim(event))

    def _announce_store(self, message_id: int, sop_class_uid: str, sop_instance_uid: str) -> None:
        """DCMTK's line for a C-STORE request, logged when its command has arrived."""
        LOG.info(
            "Received C-STORE Request (MsgID %d)",
            message_id,
            extra={"SOP_CLASS_UID": sop_class_uid, "SOP_INSTANCE_UID": sop_instance_uid},
        )

    def _current(self) -> _Association:
        """The association of the calling thread (by its log fields)."""
        return self._by_id.get(logfields.bound().get("ASSOC_ID", ""), _NOBODY)

    def _serve_store(self, request: fastpath.StoreRequest, sink: Sink | None) -> int | Dataset:
        """Store one C-STORE request's dataset, now the caller's: the response status."""
        started = time.monotonic()
        instance = {
            "SOP_CLASS_UID": request.sop_class_uid,
            "SOP_INSTANCE_UID": request.sop_instance_uid,
        }
        response = self.store.store(sink)
        status = response if isinstance(response, int) else int(response.Status)
        elapsed = time.monotonic() - started
        stored = sink.received if isinstance(sink, IncomingObject) and status == 0 else None
        fsync = sink.fsync_seconds if isinstance(sink, IncomingObject) else 0.0
        self.stats.timings(elapsed, fsync)
        current = self._current()
        self.stats.response(current.peer, status, stored)
        current.live.end(stored)
        LOG.info(
            "Sending C-STORE Response (%s)",
            objectstore.STATUS_TEXT[status],
            extra={
                **instance,
                "DIMSE_STATUS": f"0x{status:04X}",
                "DURATION_MS": str(round(elapsed * 1000)),
            },
        )
        return response

    def _sink(self, command: StoreCommand) -> Sink:
        """A sink for the dataset of a C-STORE-RQ whose command has arrived."""
        self._announce_store(command.message_id, command.sop_class_uid, command.sop_instance_uid)
        live = self._current().live
        live.begin(command.sop_instance_uid)
        return self.store.sink(command, live.progress)

    def tls_failed(self) -> None:
        """A TLS handshake on a listener of this receiver failed."""
        self.stats.tls_failure()

    def proxy_refused(self, reason: str) -> None:
        """A listener of this receiver closed a connection for its PROXY header."""
        self.stats.proxy_refused(reason)


def _requester(event: Event, info: _Association, outcome: Outcome) -> commitment.Requester:
    """Who the association is for Storage Commitment: its report may come back on it
    when its requestor took the SCP role of the SOP class too."""
    rq = cast(A_ASSOCIATE, event.assoc.requestor.primitive)
    return commitment.Requester(
        calling_ae=rq.calling_ae_title,
        called_ae=rq.called_ae_title,
        address=event.assoc.requestor.address,
        peer="" if info.peer == OTHER_PEER else info.peer,
        report_here=any(
            reply.sop_class_uid == commitment_model.SOP_CLASS and reply.scp_role
            for reply in outcome.role_replies
        ),
    )


def _answered(
    negotiation: dumps.Negotiation, outcome: Outcome, profile: Profile
) -> dumps.Negotiation:
    """`negotiation` with the answer: each context's result, role and syntax."""
    results = {c.context_id: c for c in outcome.contexts}
    contexts = []
    for context in negotiation.contexts:
        answer = results[context.context_id]
        accepted = answer.result is Result.ACCEPTANCE
        contexts.append(
            replace(
                context,
                result=answer.result,
                accepted_role=(
                    configured_role_name(profile, context.abstract_syntax)
                    if accepted
                    else "Default"
                ),
                accepted_syntax=answer.transfer_syntax,
            )
        )
    return replace(
        negotiation, contexts=tuple(contexts), accepted_extended=outcome.extended_negotiation
    )
