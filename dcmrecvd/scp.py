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
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import (
    SCP_SCU_RoleSelectionNegotiation,
    SOPClassExtendedNegotiation,
)

from dcmrecvd import asconfig
from dcmrecvd.negotiation import (
    APPLICATION_CONTEXT,
    Outcome,
    Proposed,
    Result,
    negotiate,
    pynetdicom_contexts,
)
from dcmrecvd.profiles import BUILTIN_VERIFICATION, Profile
from dcmrecvd.settings import Settings

LOG = logging.getLogger("dcmrecv")

# Exit codes of DCMTK's dcmrecv.
EXIT_INVALID_OUTPUT_DIRECTORY = 45
EXIT_CANNOT_START_SCP_AND_LISTEN = 64
EXIT_INVALID_ASSOCIATION_CONFIG = 66

# DCMTK has no DIMSE timeout by default but sets 60 s socket timeouts, so an idle
# association is dropped after about a minute.
DEFAULT_NETWORK_TIMEOUT = 60

# A-ASSOCIATE-RJ (result, source, reason) that dcmrecv sends.
REJECT_BAD_APPLICATION_CONTEXT = (0x02, 0x01, 0x02)
REJECT_CALLED_AE_TITLE = (0x01, 0x01, 0x07)
REJECT_NO_ACCEPTABLE_CONTEXTS = (0x01, 0x01, 0x01)


class ConfigurationError(Exception):
    """The negotiation profile cannot be loaded; carries DCMTK's log texts."""

    def __init__(self, error: str | None, fatal: str) -> None:
        super().__init__(fatal)
        self.error = error
        self.fatal = fatal


def load_profile(settings: Settings) -> Profile:
    """The profile named by -xf, or the built-in Verification-only one."""
    if settings.config_file is None:
        LOG.warning("no configuration file specified, SCP will only support the Verification SOP Class")
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


def _proposals(event: Event) -> tuple[list[Proposed], dict[str, tuple[bool, bool]]]:
    rq = event.assoc.requestor.primitive
    proposed = [
        Proposed(cx.context_id, str(cx.abstract_syntax), tuple(str(ts) for ts in cx.transfer_syntax))
        for cx in rq.presentation_context_definition_list
    ]
    roles = {
        str(uid): (bool(item.scu_role), bool(item.scp_role))
        for uid, item in event.assoc.requestor.role_selection.items()
    }
    return proposed, roles


class Receiver:
    """One storage SCP: its AE, its profile and its event handlers."""

    def __init__(self, settings: Settings, profile: Profile) -> None:
        self.settings = settings
        self.profile = profile
        self.ae = AE(ae_title=settings.aetitle)
        self.ae.maximum_pdu_size = settings.max_pdu & ~1  # DCMTK sends odd sizes rounded down
        self.ae.acse_timeout = settings.acse_timeout
        self.ae.dimse_timeout = settings.dimse_timeout
        self.ae.network_timeout = settings.dimse_timeout or DEFAULT_NETWORK_TIMEOUT
        self.ae.maximum_associations = settings.max_associations

    def handlers(self) -> list[tuple[evt.EventType, Any]]:
        return [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_ECHO, self._on_echo),
        ]

    def start(self, sock_address: tuple[str, int]) -> Any:
        """Bind, listen and serve in background threads; returns the pynetdicom server."""
        return self.ae.start_server(
            sock_address,
            block=False,
            evt_handlers=self.handlers(),
            contexts=pynetdicom_contexts(self.profile),
        )

    def stop(self) -> None:
        self.ae.shutdown()

    def _peer_name(self, address: str) -> str:
        if not self.settings.host_lookup:
            return address
        try:
            return socket.gethostbyaddr(address)[0]
        except OSError:
            return address

    def _reject(self, event: Event, rsd: tuple[int, int, int], reason: str) -> None:
        LOG.info("Refusing Association (%s)", reason)
        event.assoc.acse.send_reject(*rsd)
        # Without kill() the reactor closes the socket before the DUL thread has sent
        # the A-ASSOCIATE-RJ (pynetdicom 3.0).
        event.assoc.kill()

    def _on_requested(self, event: Event) -> None:
        """Apply DCMTK's association policy before pynetdicom negotiates."""
        rq = event.assoc.requestor.primitive
        calling = rq.calling_ae_title
        called = rq.called_ae_title
        peer = self._peer_name(event.assoc.requestor.address)
        LOG.info("Association Received %s: %s -> %s", peer, calling, called)
        if str(rq.application_context_name) != APPLICATION_CONTEXT:
            self._reject(event, REJECT_BAD_APPLICATION_CONTEXT, "bad application context")
            return
        if self.settings.check_called_aetitle and called != self.settings.aetitle:
            LOG.error("Called AE Title does not match configured AE Title: %s", self.settings.aetitle)
            self._reject(event, REJECT_CALLED_AE_TITLE, "called AE title not recognized")
            return
        proposed, roles = _proposals(event)
        outcome = negotiate(self.profile, proposed, roles)
        if not outcome.accepted:
            LOG.info("No Acceptable Presentation Contexts")
            self._reject(event, REJECT_NO_ACCEPTABLE_CONTEXTS, "no acceptable presentation contexts")
            return
        self._apply(event, outcome)

    def _apply(self, event: Event, outcome: Outcome) -> None:
        """Make pynetdicom's answer carry DCMTK's roles and extended negotiation."""
        acceptor = event.assoc.acceptor
        refused = frozenset(c.abstract_syntax for c in outcome.contexts if c.result is Result.NO_REASON)
        if refused:
            # pynetdicom cannot refuse a context for its role; leaving the abstract syntax
            # out refuses it (with result 3 where DCMTK says 2).
            acceptor.supported_contexts = pynetdicom_contexts(self.profile, refused)
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

    def _on_accepted(self, event: Event) -> None:
        LOG.info("Association Acknowledged (Max Send PDV: %d)", event.assoc.requestor.maximum_length - 12)

    def _on_released(self, event: Event) -> None:
        LOG.info("Received Association Release Request")

    def _on_aborted(self, event: Event) -> None:
        LOG.info("Received Association Abort Request")

    def _on_echo(self, event: Event) -> int:
        LOG.info("Received C-ECHO Request (MsgID %d)", event.request.MessageID)
        LOG.info("Sending C-ECHO Response (Success)")
        return 0x0000


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
    receiver = Receiver(settings, profile)
    try:
        receiver.start((settings.bind_address, settings.port))
    except OSError as exc:
        LOG.critical(
            "cannot start SCP and listen on port %d: TCP Initialization Error: %s",
            settings.port,
            exc.strerror or exc,
        )
        return EXIT_CANNOT_START_SCP_AND_LISTEN
    try:
        signum = _wait_for_termination()
    finally:
        receiver.stop()
    _die_by(signum)
    return 128 + signum
