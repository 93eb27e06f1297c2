"""The receiver: a pynetdicom AE with DCMTK dcmrecv's association policy and services.

`Receiver` is shared by `dcmrecv` (cli.py) and, later, the daemon; `run` is dcmrecv's
life: load the profile, check the output directory, listen, serve until killed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom import AE, evt, register_uid
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    A_P_ABORT,
    SCP_SCU_RoleSelectionNegotiation,
    SOPClassExtendedNegotiation,
)
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from dcmrecvd import dumps, logfields
from dcmrecvd.config import access, asconfig, tls
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
    dispatch,
    fastpath,
    pdulimit,
    quietlog,
    reactor,
    responses,
    server,
    streaming,
)
from dcmrecvd.profiles import BUILTIN_VERIFICATION, Profile
from dcmrecvd.settings import NamingScheme, Settings, StorageMode
from dcmrecvd.stats import Stats
from dcmrecvd.store import filemeta, header, incoming, naming, placement, quarantine, storage
from dcmrecvd.store.freespace import Reserve

LOG = logging.getLogger("dcmrecv")

# Exit codes of DCMTK's dcmrecv.
EXIT_INVALID_OUTPUT_DIRECTORY = 45
EXIT_CANNOT_START_SCP_AND_LISTEN = 64
EXIT_INVALID_ASSOCIATION_CONFIG = 66
EXIT_CANNOT_CREATE_TRANSPORT_LAYER = 71

# DCMTK has no DIMSE timeout by default but sets 60 s socket timeouts, so an idle
# association is dropped after about a minute.
DEFAULT_NETWORK_TIMEOUT = 60

# A-ASSOCIATE-RJ (result, source, reason) that dcmrecv sends.
REJECT_BAD_APPLICATION_CONTEXT = (0x02, 0x01, 0x02)
REJECT_CALLED_AE_TITLE = (0x01, 0x01, 0x07)
REJECT_NO_ACCEPTABLE_CONTEXTS = (0x01, 0x01, 0x01)
REJECT_LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)  # transient: the free-space reserve

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

# DCMTK's conditions for a dataset it could not receive: the peer aborted or the
# connection closed; the DIMSE timeout (-td) passed.
PEER_ABORTED = "0006:0317 Peer aborted Association (or never connected)"
DIMSE_TIMEOUT = "0006:0207 DIMSE No data available (timeout in non-blocking mode)"
# DCMTK's ASC_MAXIMUMPDUSIZE: what it sends at most, and to a peer that sets no limit.
DCMTK_LARGEST_PDU = 131072
# PDU header (6 bytes), PDV item header (6): the rest of a P-DATA-TF is the PDV's value.
PDV_OVERHEAD = 12


class ConfigurationError(Exception):
    """The negotiation profile cannot be loaded; carries DCMTK's log texts."""

    def __init__(self, error: str | None, fatal: str) -> None:
        super().__init__(fatal)
        self.error = error
        self.fatal = fatal


def load_profile(settings: Settings) -> Profile:
    """The profile named by -xf, or the built-in Verification-only one."""
    if settings.config_file is None:
        LOG.warning(
            "no configuration file specified, SCP will only support the Verification SOP Class"
        )
        return BUILTIN_VERIFICATION
    path = str(settings.config_file)
    try:
        document = asconfig.load(path, context_list_limit=settings.context_list_limit)
        return asconfig.select_profile(document, settings.profile_name or "", path)
    except asconfig.AsConfigError as exc:
        raise ConfigurationError(exc.dcmtk_error, exc.dcmtk_fatal) from exc


def check_output_directory(directory: str) -> str | None:
    """DCMTK's reason why `directory` cannot take files, or None when it can."""
    path = Path(directory or ".")
    if not path.is_dir():
        return "Directory does not exist"
    if not os.access(path, os.W_OK | os.X_OK):
        return "Directory is not writable"
    return None


def join_path(directory: str, name: str) -> str:
    """DCMTK's combineDirAndFilename: relative stays relative, trailing '/' dropped."""
    if not directory:
        return name
    return f"{directory.rstrip('/')}/{name}"


def register_storage_classes(profile: Profile) -> None:
    """Make pynetdicom take every abstract syntax of the profile that it does not know
    (a private one) for a storage class, so that the fast path serves its C-STOREs.

    dispatch.py serves any C-STORE by its command, whatever class it names.
    """
    for context in profile.contexts:
        uid = context.abstract_syntax
        if uid_to_service_class(uid) is ServiceClass:
            register_uid(uid, "DcmrecvdPrivate_" + uid.replace(".", "_"), StorageServiceClass)


def max_send_pdv(peer_maximum: int) -> tuple[int, str | None]:
    """DCMTK's "Max Send PDV" for a peer's maximum PDU length, and its warning if any.

    DCMTK sends PDUs of at most 128 KiB (also to a peer with no limit, 0) and of an even
    length.
    """
    length = peer_maximum
    warning = None
    if length == 0 or length > DCMTK_LARGEST_PDU:
        length = DCMTK_LARGEST_PDU
    elif length % 2:
        warning = f"ASSOC: PDV send length {length} is odd (using {length - 1})"
        length -= 1
    return length - PDV_OVERHEAD, warning


def _exists(directory: Path, name: str) -> bool:
    try:
        (directory / name).lstat()
    except FileNotFoundError:
        return False
    return True


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
        self.ae.maximum_pdu_size = settings.max_pdu & ~1  # DCMTK sends odd sizes rounded down
        self.ae.acse_timeout = settings.acse_timeout
        self.ae.dimse_timeout = settings.dimse_timeout
        self.ae.network_timeout = settings.dimse_timeout or DEFAULT_NETWORK_TIMEOUT
        # Admission counts associations itself, across reloads (pynetdicom counts per AE).
        self.ae.maximum_associations = 2**31 - 1
        self.namer = naming.FileNamer(settings.naming, settings.extension, int(time.time()))
        self.spool = storage.spool_directory(settings.output_dir)
        self.reserve = Reserve(
            settings.free_space_reserve_bytes, settings.free_space_reserve_percent
        )
        for served in (profile, *self.peer_profiles.values()):
            register_storage_classes(served)
        self.quarantine = (
            quarantine.Quarantine(Path(settings.quarantine_dir), settings.quarantine_max_bytes)
            if settings.quarantine_dir is not None
            else None
        )

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

    def sweep_spool(self) -> None:
        """Remove the temporary files that a killed receiver left in the spool directory."""
        removed = storage.sweep(self.spool)
        if removed:
            LOG.warning(
                "removed %d temporary file(s) of an interrupted receiver from %s",
                len(removed),
                self.spool,
            )

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

    def _reject(self, event: Event, rsd: tuple[int, int, int], reason: str, why: str = "") -> None:
        LOG.info(
            "Refusing Association (%s)%s",
            reason,
            f": {why}" if why else "",
            extra={"REJECT_REASON": reason},
        )
        event.assoc.acse.send_reject(*rsd)
        # Without kill() the reactor closes the socket before the DUL thread has sent
        # the A-ASSOCIATE-RJ (pynetdicom 3.0).
        event.assoc.kill()

    def _on_connection_open(self, event: Event) -> None:
        reactor.install(event.assoc)
        quietlog.install(event.assoc)
        limit = pdulimit.limit_for(self.ae.maximum_pdu_size)
        if limit is not None:
            pdulimit.install(event.assoc, limit)

    def _on_requested(self, event: Event) -> None:
        """Apply DCMTK's association policy before pynetdicom negotiates."""
        rq = cast(A_ASSOCIATE, event.assoc.requestor.primitive)
        calling = rq.calling_ae_title
        called = rq.called_ae_title
        address = event.assoc.requestor.address
        logfields.bind(
            DICOM_CALLING_AET=calling,
            DICOM_CALLED_AET=called,
            PEER_ADDR=address,
            ASSOC_ID=logfields.new_association_id(),
        )
        info = self._associations[event.assoc] = _Association(time.monotonic())
        LOG.info("Association Received %s: %s -> %s", self._peer_name(address), calling, called)
        proposed, roles = _proposals(event)
        negotiation = self._negotiation(event, proposed, roles)
        self._dump("Incoming Association Request:\n" + dumps.dump(negotiation, dumps.Pdu.RQ))
        if str(rq.application_context_name) != APPLICATION_CONTEXT:
            self._reject(event, REJECT_BAD_APPLICATION_CONTEXT, "bad application context")
            return
        if self.settings.check_called_aetitle and called != self.settings.aetitle:
            LOG.error(
                "Called AE Title does not match configured AE Title: %s", self.settings.aetitle
            )
            self._reject(event, REJECT_CALLED_AE_TITLE, "called AE title not recognized")
            return
        decision = self.admission.admit(
            self.settings.access, self.settings.max_associations, (calling, called, address)
        )
        if decision.rejection is not None:
            rejection = decision.rejection
            self._reject(event, rejection.rsd, rejection.text, decision.why)
            return
        info.admitted = decision
        shortfall = self.reserve.shortfall(self.settings.output_dir)
        if shortfall is not None:
            LOG.warning("%s", shortfall)
            self._reject(event, REJECT_LOCAL_LIMIT_EXCEEDED, "local limit exceeded")
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
                event, REJECT_NO_ACCEPTABLE_CONTEXTS, "no acceptable presentation contexts"
            )
            return
        streaming.install(event.assoc, self._sink)
        dispatch.install(event.assoc, self._refuse_request)
        responses.install(event.assoc)
        fastpath.install(event.assoc, self._serve_store)
        self._apply(event, outcome, profile)

    def _on_closed(self, event: Event) -> None:
        info = self._associations.get(event.assoc)
        if info is not None and info.admitted is not None:
            self.admission.leave(info.admitted)
            info.admitted = None

    def _apply(self, event: Event, outcome: Outcome, profile: Profile) -> None:
        """Make pynetdicom's answer carry DCMTK's roles and extended negotiation."""
        acceptor = event.assoc.acceptor
        refused = frozenset(
            c.abstract_syntax
            for c in outcome.contexts
            if c.result is Result.ABSTRACT_SYNTAX_NOT_SUPPORTED
        )
        if refused or profile is not self.profile:
            # The server's contexts are self.profile's. A peer's own profile, and refusals
            # for roles (the abstract syntax left out), go in this association's copy.
            acceptor.supported_contexts = pynetdicom_contexts(profile, refused)
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
        self.stats.association()
        pdv, warning = max_send_pdv(event.assoc.requestor.maximum_length or 0)
        if warning is not None:
            LOG.warning("%s", warning)
        LOG.info("Association Acknowledged (Max Send PDV: %d)", pdv)
        info = self._associations.get(event.assoc)
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
        dimse = assoc.dimse
        streaming_dimse = dimse if isinstance(dimse, streaming.StreamingDIMSE) else None
        # pynetdicom limit: EVT_ABORTED tells neither who aborted nor why. Association
        # .abort sets _sent_abort (our refusals, the network timeout, shutdown); the
        # timeout leaves the DUL's idle timer expired.
        ours = bool(getattr(assoc, "_sent_abort", False)) or info.protocol_abort
        timed_out = ours and assoc.dul.idle_timer_expired()
        interrupted = streaming_dimse.interrupted() if streaming_dimse is not None else None
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
        return SUCCESS

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

    def _serve_store(
        self, request: fastpath.StoreRequest, sink: streaming.Sink | None
    ) -> int | Dataset:
        """Store one C-STORE request's dataset, now the caller's: the response status."""
        started = time.monotonic()
        instance = {
            "SOP_CLASS_UID": request.sop_class_uid,
            "SOP_INSTANCE_UID": request.sop_instance_uid,
        }
        response = self._store(sink)
        status = response if isinstance(response, int) else int(response.Status)
        LOG.info(
            "Sending C-STORE Response (%s)",
            STATUS_TEXT[status],
            extra={
                **instance,
                "DIMSE_STATUS": f"0x{status:04X}",
                "DURATION_MS": str(round((time.monotonic() - started) * 1000)),
            },
        )
        return response

    def _sink(self, command: streaming.StoreCommand) -> streaming.Sink:
        """A sink for the dataset of a C-STORE-RQ whose command has arrived."""
        self._announce_store(command.message_id, command.sop_class_uid, command.sop_instance_uid)
        if self.settings.storage is StorageMode.IGNORE:
            return streaming.Discarding()
        return incoming.IncomingObject(
            command,
            bit_preserving=self.settings.storage is StorageMode.BIT_PRESERVING,
            spool=self.spool,
            reserve=self.reserve,
            space_directory=self.settings.output_dir,
            check_sop_uids=self.settings.check_sop_uids,
            keep_refused=self.quarantine is not None,
        )

    def _store(self, sink: streaming.Sink | None) -> int | Dataset:
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
        return self._report(placed, obj.received)

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


def _failure(status: int, comment: str) -> Dataset:
    """A failure response with an Error Comment (LO: at most 64 characters)."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment[:64]
    return response


def _wait_for_termination() -> int:
    """Block until SIGTERM or SIGINT (the servers run in their own threads); the signal."""
    received: list[int] = []
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)
    stop.wait()
    return received[0]


def _die_by(signum: int) -> None:
    """End the process by `signum`, as DCMTK's dcmrecv does (shell status 128+signum)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def run(settings: Settings) -> int:
    """dcmrecv's startup order (config 66, output directory 45, listen 64), then serve."""
    LOG.info("configuring service class provider ...")
    try:
        profile = load_profile(settings)
    except ConfigurationError as exc:
        if exc.error:
            LOG.error("%s", exc.error)
        LOG.critical("%s", exc.fatal)
        return EXIT_INVALID_ASSOCIATION_CONFIG
    reason = check_output_directory(settings.output_dir)
    if reason:
        LOG.critical("cannot specify output directory: %s", reason)
        return EXIT_INVALID_OUTPUT_DIRECTORY
    LOG.info("starting service class provider and listening ...")
    try:
        ssl_context = None if settings.tls is None else tls.server_context(settings.tls)
    except tls.TlsError as exc:
        LOG.critical("%s", exc)
        return EXIT_CANNOT_CREATE_TRANSPORT_LAYER
    try:
        listener = server.Listener.bind(settings.bind_address, settings.port)
    except OSError as exc:
        LOG.critical(
            "cannot start SCP and listen on port %d: TCP Initialization Error: %s",
            settings.port,
            exc.strerror or exc,
        )
        return EXIT_CANNOT_START_SCP_AND_LISTEN
    receiver = Receiver(settings, profile)
    receiver.sweep_spool()
    serving = server.Serving(receiver, listener, ssl_context)
    try:
        signum = _wait_for_termination()
    finally:
        serving.stop_accepting()
        listener.close()
        receiver.stop()
    _die_by(signum)
    return 128 + signum
