"""The board: what the daemon's processes share across workers and generations.

What STATUS= counts and what access control limits must hold across all workers and
generations, so it lives on a Board: one shared memory page, changed under a lock, in
which every worker has a slot of its own that the parent clears when the worker is
reaped, so that a killed worker's associations stop counting against the limits
(what it served is added to the board's totals first).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import mmap
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from dcmrecvd.config import access, inifile
from dcmrecvd.stats import Stats, Totals

LOG = logging.getLogger("dcmrecv.daemon")

# Processes that may hold a slot at once: the workers of the current generation (at
# most inifile.MAX_WORKERS), and retired ones still finishing their associations.
MAX_SLOTS = 4 * inifile.MAX_WORKERS
# Access rules with associations running in one worker at once.
_MAX_RULES = 32
_DIGEST = 16


class _Rule(ctypes.Structure):
    _fields_ = [("digest", ctypes.c_char * _DIGEST), ("count", ctypes.c_int64)]


class _Slot(ctypes.Structure):
    _fields_ = [
        ("pid", ctypes.c_int64),
        ("active", ctypes.c_int64),  # associations connected, admitted or not
        ("beat", ctypes.c_double),  # CLOCK_MONOTONIC of the last beat, 0 before the first
        ("accepting", ctypes.c_int64),  # 1 from its first accept loop until it stops accepting
        ("running", ctypes.c_int64),  # associations admitted by access control
        ("rules", _Rule * _MAX_RULES),
        # What this worker has served, until it is reaped (then the board's totals hold it).
        ("associations", ctypes.c_int64),
        ("instances", ctypes.c_int64),
        ("bytes", ctypes.c_int64),
    ]


class _Layout(ctypes.Structure):
    _fields_ = [
        ("associations", ctypes.c_int64),
        ("instances", ctypes.c_int64),
        ("bytes", ctypes.c_int64),
        ("slots", _Slot * MAX_SLOTS),
    ]


def _digest(rule_name: str) -> bytes:
    return hashlib.blake2b(rule_name.encode(), digest_size=_DIGEST).digest()


@dataclass(frozen=True)
class Snapshot:
    """The board's totals at one moment."""

    totals: Totals
    active: int


class Board:
    """Counters shared by the parent and every worker it forks (build before the first fork)."""

    def __init__(self) -> None:
        size = ctypes.sizeof(_Layout)
        self._fd = os.memfd_create("dcmrecvd-board", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)
        self._data = _Layout.from_buffer(self._map)
        # lockf() excludes other processes, and a dead holder's lock is released by the
        # kernel; it does not exclude the threads of one process, hence the second lock.
        self._threads = threading.Lock()
        self.slot = -1  # this process's slot, in a worker

    @contextmanager
    def _locked(self) -> Iterator[_Layout]:
        with self._threads:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                yield self._data
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    # --- the parent's side

    def claim(self) -> int:
        """A free slot for a worker about to be forked; RuntimeError if none is free."""
        with self._locked() as data:
            for index, slot in enumerate(data.slots):
                if slot.pid == 0:
                    ctypes.memset(ctypes.addressof(slot), 0, ctypes.sizeof(slot))
                    slot.pid = -1  # taken; the pid follows the fork
                    return index
        raise RuntimeError(f"all {MAX_SLOTS} worker slots are taken")

    def assign(self, index: int, pid: int) -> None:
        with self._locked() as data:
            data.slots[index].pid = pid

    def release(self, index: int) -> None:
        """Forget a reaped worker: its associations no longer run, its counts are kept."""
        with self._locked() as data:
            slot = data.slots[index]
            data.associations += slot.associations
            data.instances += slot.instances
            data.bytes += slot.bytes
            ctypes.memset(ctypes.addressof(slot), 0, ctypes.sizeof(slot))

    def beat_of(self, index: int) -> float:
        with self._locked() as data:
            return float(data.slots[index].beat)

    def accepting(self, index: int) -> bool:
        with self._locked() as data:
            return bool(data.slots[index].accepting)

    def snapshot(self) -> Snapshot:
        with self._locked() as data:
            live = [slot for slot in data.slots if slot.pid]
            totals = Totals(
                int(data.associations) + sum(int(slot.associations) for slot in live),
                int(data.instances) + sum(int(slot.instances) for slot in live),
                int(data.bytes) + sum(int(slot.bytes) for slot in live),
            )
            return Snapshot(totals, sum(int(slot.active) for slot in data.slots if slot.pid))

    # --- a worker's side

    def beat(self, active: int, *, accepting: bool) -> None:
        """Report `active` associations; and, if `accepting`, that this worker is healthy."""
        with self._locked() as data:
            slot = data.slots[self.slot]
            slot.active = active
            if accepting:
                slot.beat = time.monotonic()

    def set_accepting(self, accepting: bool) -> None:
        with self._locked() as data:
            data.slots[self.slot].accepting = int(accepting)

    def count(self, *, associations: int = 0, instances: int = 0, size: int = 0) -> None:
        # Once per instance: only this worker writes its slot's counters, so its threads'
        # lock is enough, without lockf()'s two system calls; the parent's reads of
        # aligned 64-bit values are never torn.
        with self._threads:
            slot = self._data.slots[self.slot]
            slot.associations += associations
            slot.instances += instances
            slot.bytes += size

    def admit(
        self, policy: access.AccessPolicy, max_associations: int, request: tuple[str, str, str]
    ) -> access.Decision:
        with self._locked() as data:
            slots = [slot for slot in data.slots if slot.pid]
            by_rule: dict[bytes, int] = {}
            for slot in slots:
                for rule in slot.rules:
                    if rule.count:
                        by_rule[rule.digest] = by_rule.get(rule.digest, 0) + rule.count
            running = sum(int(slot.running) for slot in slots)
            decision = access.decide(policy, max_associations, request, running, _ByDigest(by_rule))
            if decision.accepted:
                own = data.slots[self.slot]
                own.running += 1
                if decision.rule is not None:
                    _add_rule(own, _digest(decision.rule.name), 1)
            return decision

    def leave(self, decision: access.Decision) -> None:
        with self._locked() as data:
            own = data.slots[self.slot]
            own.running -= 1
            if decision.rule is not None:
                _add_rule(own, _digest(decision.rule.name), -1)

    def running(self) -> int:
        with self._locked() as data:
            return sum(int(slot.running) for slot in data.slots if slot.pid)


def _add_rule(slot: _Slot, digest: bytes, change: int) -> None:
    free = None
    for rule in slot.rules:
        if rule.count and rule.digest == digest:
            rule.count += change
            return
        if free is None and not rule.count:
            free = rule
    if free is None or change < 0:
        # More rules running at once in one worker than the slot holds: this one goes
        # uncounted (its per-peer limit is then not enforced beyond the others').
        LOG.warning("too many access rules in use at once to count them all")
        return
    free.digest = digest
    free.count = change


class _ByDigest(Mapping[str, int]):
    """Running associations per rule name, counted by the names' digests."""

    def __init__(self, counts: dict[bytes, int]) -> None:
        self._counts = counts

    def __getitem__(self, name: str) -> int:
        return self._counts[_digest(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(())  # names are not kept, only looked up

    def __len__(self) -> int:
        return len(self._counts)


class SharedStats(Stats):
    """Stats kept on the board, so the parent reports every worker's."""

    def __init__(self, board: Board) -> None:
        super().__init__()
        self._board = board

    def association(self) -> None:
        self._board.count(associations=1)

    def instance(self, size: int) -> None:
        self._board.count(instances=1, size=size)

    def totals(self) -> Totals:
        return self._board.snapshot().totals


class SharedAdmission(access.Admission):
    """Admission counted on the board: limits hold across workers and generations."""

    def __init__(self, board: Board) -> None:
        super().__init__()
        self._board = board

    def admit(
        self, policy: access.AccessPolicy, max_associations: int, request: tuple[str, str, str]
    ) -> access.Decision:
        return self._board.admit(policy, max_associations, request)

    def leave(self, decision: access.Decision) -> None:
        self._board.leave(decision)

    @property
    def running(self) -> int:
        return self._board.running()
