"""Counters of what a receiver has done, for the daemon's STATUS= line."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Totals:
    associations: int = 0
    instances: int = 0
    bytes: int = 0


class Stats:
    """Thread-safe running totals; one object outlives the receivers that reloads replace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = Totals()

    def association(self) -> None:
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
