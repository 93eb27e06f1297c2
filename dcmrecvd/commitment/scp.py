"""A worker's side of Storage Commitment: the N-ACTION is answered at once, and the
report follows on the same association when the requester took the SCP role for it.

The request is recorded in the index before Success is answered, so the report is owed
even if the worker dies: the commitment process (service/commitproc.py) delivers what
the worker did not, on a new association to the [peer]'s report destination.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from pydicom.dataset import Dataset

from dcmrecvd.commitment import model, pending
from dcmrecvd.commitment.check import check
from dcmrecvd.profiles import AcceptedContext, Profile, Role
from dcmrecvd.settings import Settings
from dcmrecvd.stats import Stats
from dcmrecvd.store import index

LOG = logging.getLogger("dcmrecv.commitment")

# The syntaxes a Storage Commitment context is accepted with, most preferred first.
TRANSFER_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
# How long a request whose report goes on its own association waits before the
# commitment process may take it over (the worker checks and sends well within it; if the
# worker dies, the report still goes).
HANDOFF = 300.0

# Sends a report on the request's association (Event Information, Event Type ID): the
# status the requester answered, None when it did not answer.
ReportHere = Callable[[Dataset, int], int | None]
# What follows a Success answer on the request's association.
FollowUp = Callable[[ReportHere], None]


def serving(profile: Profile) -> Profile:
    """`profile` with the Storage Commitment SOP class, whose requester may take the SCP
    role too (to get the report on its association), unless it lists the class itself."""
    if any(c.abstract_syntax == model.SOP_CLASS for c in profile.contexts):
        return profile
    return replace(
        profile,
        contexts=(*profile.contexts, AcceptedContext(model.SOP_CLASS, TRANSFER_SYNTAXES)),
        roles=(*(profile.roles or ()), (model.SOP_CLASS, Role.BOTH)),
    )


@dataclass(frozen=True)
class Requester:
    """The association a request came on."""

    calling_ae: str
    called_ae: str
    address: str
    peer: str  # the [peer] rule that admitted it; "" for none
    # It negotiated the SCP role of Storage Commitment: the report may go back on it.
    report_here: bool


class CommitmentScp:
    """Answers N-ACTIONs of one receiver, whose index is `listing`."""

    def __init__(
        self,
        settings: Settings,
        listing: index.Index,
        stats: Stats,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.commitment is not None
        self.settings = settings
        self.commitment = settings.commitment
        self.listing = listing
        self.stats = stats
        self.clock = clock

    def on_action(
        self,
        requester: Requester,
        requested: tuple[str, str],
        action_type: int | None,
        information: Dataset | None,
    ) -> tuple[int, FollowUp | None]:
        """The N-ACTION's status, and what follows it on the association (None: nothing,
        the commitment process sends the report). `requested`: its Requested SOP Class
        and Instance UIDs."""
        sop_class, sop_instance = requested
        try:
            if sop_class != model.SOP_CLASS:
                raise model.Refused(0x0118, f"no N-ACTION for the SOP class {sop_class}")
            request = model.parse(sop_instance, action_type, information)
        except model.Refused as refused:
            return self._refuse(refused)
        destination = dict(self.commitment.destinations).get(requester.peer)
        if destination is None and not requester.report_here:
            return self._refuse(
                model.Refused(
                    model.NOT_AUTHORIZED,
                    "the report could go nowhere: no [peer] rule with commitment-host and"
                    " commitment-port matches the requester, and it did not take the SCP"
                    " role for the report on its association",
                )
            )
        now = self.clock()
        try:
            kept = pending.record(
                self.listing,
                request,
                received_at=now,
                who=(requester.calling_ae, requester.called_ae, requester.address),
                peer=requester.peer,
                destination=destination,
                due=now + HANDOFF if requester.report_here else now,
            )
        except index.IndexFailure as exc:
            return self._refuse(
                model.Refused(model.PROCESSING_FAILURE, f"cannot record the request: {exc}")
            )
        self.stats.commitment("requests")
        LOG.info(
            "Received Storage Commitment Request for %d instance(s), report %s",
            len(request.references),
            "on this association" if requester.report_here else "on a new association",
            extra=kept.fields,
        )
        if not requester.report_here:
            return model.SUCCESS, None
        return model.SUCCESS, lambda send: self._report_here(kept, send)

    def _refuse(self, refused: model.Refused) -> tuple[int, None]:
        self.stats.commitment("refused")
        LOG.warning("Refusing Storage Commitment Request (%s)", refused)
        return refused.status, None

    def _report_here(self, kept: pending.Pending, send: ReportHere) -> None:
        """Check now and send the report on the request's association; what it does not
        deliver stays pending for the commitment process."""
        try:
            made = check(self.listing, kept.request, verify=self.commitment.verify)
        except index.IndexFailure as exc:
            LOG.error("cannot check a Storage Commitment Request: %s", exc, extra=kept.fields)
            return  # due after HANDOFF: the commitment process will
        status = send(model.event_information(made, self.settings.aetitle), made.event_type)
        now = self.clock()
        try:
            if status == 0x0000:
                pending.delivered(self.listing, kept.id, now, "delivered on its association")
                count_report(self.stats, made, "same-association")
                log_report(made, "on its association", kept.fields)
                return
            self.stats.commitment("delivery_failures")
            route = model.address(self.commitment, kept.peer, kept.destination, kept.calling_ae)
            said = "no answer" if status is None else f"0x{status:04X}"
            if route is None:
                pending.given_up(self.listing, kept.id, now, f"on its association: {said}")
                self.stats.commitment("abandoned")
                LOG.error(
                    "Storage Commitment report not delivered (%s) and no other way to send"
                    " it: give the [peer] rule commitment-host and commitment-port",
                    said,
                    extra=kept.fields,
                )
                return
            pending.release(self.listing, kept.id, now)
            LOG.warning(
                "Storage Commitment report not delivered on its association (%s);"
                " it goes on a new association",
                said,
                extra=kept.fields,
            )
        except index.IndexFailure as exc:
            LOG.error("cannot record a Storage Commitment report: %s", exc, extra=kept.fields)


def count_report(stats: Stats, made: model.Report, route: str) -> None:
    stats.commitment(f"reports_{route.replace('-', '_')}")
    stats.commitment("instances_stored", len(made.stored))
    stats.commitment("instances_failed", len(made.failed))


def log_report(made: model.Report, where: str, fields: dict[str, str]) -> None:
    LOG.info(
        "Sent Storage Commitment Report %s: %d stored, %d failed%s",
        where,
        len(made.stored),
        len(made.failed),
        "".join(
            f"; {r.sop_instance_uid}: 0x{int(failure):04X} {failure.name.lower()}"
            for r, failure in made.failed[:MAX_FAILURES_LOGGED]
        ),
        extra={**fields, "EVENT_TYPE_ID": str(made.event_type)},
    )


# The failed instances a report's log line names at most (a large failed request would
# make one enormous line).
MAX_FAILURES_LOGGED = 10
