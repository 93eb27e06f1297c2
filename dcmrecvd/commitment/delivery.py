"""Delivering the pending reports on new associations, with retries: the commitment
process's work, one request at a time.

Each attempt checks the instances again, so a report never says stored for an instance
that is not stored at that moment. A report the requester did not take is tried again
after a wait that doubles at each failure; one older than give-up-after is given up.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable

from dcmrecvd.commitment import model, pending, sender
from dcmrecvd.commitment.check import check
from dcmrecvd.commitment.scp import count_report, log_report
from dcmrecvd.config import tls
from dcmrecvd.settings import Settings
from dcmrecvd.stats import Stats
from dcmrecvd.store import index

LOG = logging.getLogger("dcmrecv.commitment")

# Reports taken from the index at once (the rest at the next turn).
BATCH = 20
# The report's answer timeout when the receiver has no DIMSE timeout.
DIMSE_TIMEOUT = 60.0

Send = Callable[..., sender.Outcome]


class Deliverer:
    """Delivers what is due in `listing` as `settings` says; `send` is sender.deliver
    (tests give their own), `clock` epoch seconds."""

    def __init__(
        self,
        settings: Settings,
        listing: index.Index,
        stats: Stats,
        send: Send = sender.deliver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.listing = listing
        self.stats = stats
        self.send = send
        self.clock = clock

    def due(self) -> list[pending.Pending]:
        """The requests whose report is due now. Raises IndexFailure."""
        return pending.due(self.listing, self.clock(), BATCH)

    def deliver(self, kept: pending.Pending) -> bool:
        """Try once to deliver the report of `kept`; whether it was. Raises IndexFailure."""
        commitment = self.settings.commitment
        assert commitment is not None
        to = model.address(commitment, kept.peer, kept.destination, kept.calling_ae)
        if to is None:
            self._give_up(kept, "no report destination: the [peer] rule has none (any more)")
            return False
        made = check(self.listing, kept.request, verify=commitment.verify)
        if kept.attempts:
            self.stats.commitment("retries")
        try:
            context = self._context(to)
        except tls.TlsError as exc:
            outcome = sender.Outcome(False, f"cannot set up TLS: {exc}")
        else:
            timeouts = sender.Timeouts(
                connect=self.settings.acse_timeout,
                acse=self.settings.acse_timeout,
                dimse=self.settings.dimse_timeout or DIMSE_TIMEOUT,
            )
            outcome = self.send(
                made, to, aetitle=self.settings.aetitle, timeouts=timeouts, context=context
            )
        now = self.clock()
        if outcome.delivered:
            pending.delivered(self.listing, kept.id, now, outcome.detail)
            count_report(self.stats, made, "new-association")
            log_report(made, f"to {to.aetitle}@{to.host}:{to.port}", kept.fields)
            return True
        self.stats.commitment("delivery_failures")
        attempts = kept.attempts + 1
        at = model.next_try(commitment, kept.received_at, attempts, now)
        if at is None:
            self._give_up(kept, f"{outcome.detail}; tried {attempts} time(s)")
            return False
        pending.retry(self.listing, kept.id, at, outcome.detail)
        LOG.warning(
            "Storage Commitment report not delivered: %s; next try in %.0f s",
            outcome.detail,
            at - now,
            extra={**kept.fields, "ATTEMPTS": str(attempts)},
        )
        return False

    def _context(self, to: model.Address) -> ssl.SSLContext | None:
        if not to.tls:
            return None
        if self.settings.tls is None:
            raise tls.TlsError("commitment-tls is set and [tls] is gone")
        return tls.client_context(self.settings.tls)

    def _give_up(self, kept: pending.Pending, why: str) -> None:
        pending.given_up(self.listing, kept.id, self.clock(), why)
        self.stats.commitment("abandoned")
        LOG.error("Storage Commitment report given up: %s", why, extra=kept.fields)
