"""What a receiver counts: totals for the daemon's STATUS= line, and the daemon's metrics.

The receive path reports to a Stats; this base class keeps the totals and drops the rest,
which is what dcmrecv needs. The daemon's workers report to the board instead
(service/board.py SharedStats), which the metrics endpoint and `dcmrecvd status` read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Totals:
    associations: int = 0
    instances: int = 0
    bytes: int = 0


class Live:
    """An association's entry in the live status; this one keeps nothing."""

    def begin(self, sop_instance_uid: str) -> None:
        """A dataset starts arriving."""

    def progress(self, received: int) -> None:
        """`received` bytes of the dataset have arrived so far."""

    def end(self, stored: int | None) -> None:
        """The dataset was answered: stored (its bytes) or not (None)."""

    def close(self) -> None:
        """The association ended."""


@dataclass(frozen=True)
class Identity:
    """Who an association is, for its live entry."""

    id: str
    calling: str
    called: str
    address: str
    peer: str  # the [peer] rule's name, or "other"
    tls: bool


class Stats:
    """Thread-safe running totals; one object outlives the receivers that reloads replace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = Totals()

    def association(self) -> None:
        """An association was accepted."""
        with self._lock:
            t = self._totals
            self._totals = Totals(t.associations + 1, t.instances, t.bytes)

    def instance(self, size: int) -> None:
        with self._lock:
            t = self._totals
            self._totals = Totals(t.associations, t.instances + 1, t.bytes + size)

    def totals(self) -> Totals:
        with self._lock:
            return self._totals

    def rejected(self, reason: str) -> None:
        """An association was refused; `reason` is one of metrics.snapshot.REJECT_REASONS."""

    def response(self, peer: str, status: int, stored: int | None) -> None:
        """A C-STORE response with `status` went to an association of `peer`; `stored`:
        the bytes of the object if it was stored."""

    def timings(self, commit: float, fsync: float) -> None:
        """Seconds from a dataset's end to its answer, and the fsyncs among them."""

    def tls_failure(self) -> None:
        """A TLS handshake failed."""

    def proxy_refused(self, reason: str) -> None:
        """A connection was closed for its PROXY header; `reason`: snapshot.PROXY_ERRORS."""

    def proxy_check(self) -> None:
        """A balancer's health check (a PROXY v2 LOCAL connection) asked for an association."""

    def live(self, association: Identity) -> Live:
        """The live entry of an association just accepted."""
        return Live()

    def commitment(self, counter: str, count: int = 1) -> None:
        """Storage Commitment counted `count` more of `counter` (one of
        metrics.snapshot.COMMITMENT_COUNTERS)."""
