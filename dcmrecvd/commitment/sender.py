"""Deliver a report on an association of its own, opened to the requester.

PS3.4 J.3.3 and PS3.7 D.3.3.4: the receiver, Storage Commitment SCP, becomes the
association requestor; it proposes the SOP class with SCP/SCU Role Selection (SCU role
0, SCP role 1) so that it stays the SCP of Storage Commitment while the requester
accepts the association.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role

from dcmrecvd.commitment.model import SOP_CLASS, SOP_INSTANCE, Address, Report, event_information
from dcmrecvd.store import filemeta


@dataclass(frozen=True)
class Timeouts:
    """Seconds for the TCP connection and the A-ASSOCIATE answer, and for the report's
    answer (N-EVENT-REPORT-RSP)."""

    connect: float
    acse: float
    dimse: float


@dataclass(frozen=True)
class Outcome:
    """How one delivery went: whether the requester took the report, and what it said."""

    delivered: bool
    detail: str


class _Said(logging.Handler):
    """Keeps the text of what pynetdicom warns of or reports as an error."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def _pynetdicom_said() -> Iterator[list[str]]:
    """What pynetdicom warns of while delivering, kept for the outcome instead of logged:
    a modality down for hours would otherwise log its errors at every attempt, beside
    the one line that says what failed and when it is tried again."""
    library = logging.getLogger("pynetdicom")
    said = _Said()
    propagate = library.propagate
    library.addHandler(said)
    library.propagate = False
    try:
        yield said.lines
    finally:
        library.removeHandler(said)
        library.propagate = propagate


def deliver(
    made: Report,
    to: Address,
    *,
    aetitle: str,
    timeouts: Timeouts,
    context: ssl.SSLContext | None,
) -> Outcome:
    """Send `made` to `to` as `aetitle` over a new association (over TLS with `context`)."""
    ae = AE(ae_title=aetitle)
    ae.implementation_class_uid = filemeta.IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = filemeta.IMPLEMENTATION_VERSION_NAME
    ae.connection_timeout = timeouts.connect
    ae.acse_timeout = timeouts.acse
    ae.dimse_timeout = timeouts.dimse
    ae.network_timeout = timeouts.dimse
    ae.add_requested_context(SOP_CLASS, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    where = f"{to.aetitle}@{to.host}:{to.port}{' (TLS)' if context else ''}"
    with _pynetdicom_said() as said:
        outcome = _deliver(ae, made, to=to, where=where, aetitle=aetitle, context=context)
    if said and not outcome.delivered:
        return Outcome(False, f"{outcome.detail} ({'; '.join(said)})")
    return outcome


def _deliver(
    ae: AE,
    made: Report,
    *,
    to: Address,
    where: str,
    aetitle: str,
    context: ssl.SSLContext | None,
) -> Outcome:
    try:
        assoc = ae.associate(
            to.host,
            to.port,
            ae_title=to.aetitle,
            ext_neg=[build_role(SOP_CLASS, scp_role=True)],
            tls_args=(context, to.host) if context is not None else None,
        )
    except (OSError, ValueError) as exc:
        return Outcome(False, f"cannot associate with {where}: {exc}")
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted or unreachable"
        return Outcome(False, f"association with {where} {why}")
    try:
        accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == SOP_CLASS]
        if not accepted:
            return Outcome(False, f"{where} did not accept the Storage Commitment SOP class")
        status, _ = assoc.send_n_event_report(
            event_information(made, aetitle), made.event_type, SOP_CLASS, SOP_INSTANCE
        )
    finally:
        if assoc.is_established:
            assoc.release()
    code = status.get("Status")
    if code is None:
        return Outcome(False, f"no answer to the N-EVENT-REPORT from {where}")
    if code != 0x0000:
        return Outcome(False, f"{where} answered the N-EVENT-REPORT with 0x{int(code):04X}")
    return Outcome(True, f"delivered to {where}")
