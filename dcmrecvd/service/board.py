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
from dcmrecvd.metrics import snapshot
from dcmrecvd.stats import Identity, Live, Stats, Totals

LOG = logging.getLogger("dcmrecv.daemon")

# Processes that may hold a slot at once: the workers of the current generation (at
# most inifile.MAX_WORKERS), and retired ones still finishing their associations.
MAX_SLOTS = 4 * inifile.MAX_WORKERS
# Access rules with associations running in one worker at once.
_MAX_RULES = 32
_DIGEST = 16
# Peer labels of the metrics, "other" first: configured [peer] names, as they are met.
# More names than this (many reloads renaming peers) count as "other".
_PEERS = 64
_NAME = 64
_REASONS = len(snapshot.REJECT_REASONS)
_PROXY_ERRORS = len(snapshot.PROXY_ERRORS)
_STATUSES = len(snapshot.STATUS_CLASSES)
_BINS = len(snapshot.BUCKETS) + 1
# Associations the status shows at once, over all workers; more run, uncounted there.
MAX_LIVE = 512


class _Counts(ctypes.Structure):
    """What the metrics count: per worker slot, and the board's totals of reaped ones."""

    _fields_ = [
        ("rejected", ctypes.c_int64 * _REASONS),
        ("responses", (ctypes.c_int64 * _STATUSES) * _PEERS),
        ("instances", ctypes.c_int64 * _PEERS),
        ("bytes", ctypes.c_int64 * _PEERS),
        ("commit", ctypes.c_int64 * _BINS),
        ("commit_sum", ctypes.c_double),
        ("fsync", ctypes.c_int64 * _BINS),
        ("fsync_sum", ctypes.c_double),
        ("tls_failures", ctypes.c_int64),
        ("proxy_errors", ctypes.c_int64 * _PROXY_ERRORS),
        ("proxy_checks", ctypes.c_int64),
    ]


class _Live(ctypes.Structure):
    """An association in progress; pid 0: a free entry. Only its thread writes the
    counters, without a lock: a reader may see them a moment old, never torn."""

    _fields_ = [
        ("pid", ctypes.c_int64),
        ("id", ctypes.c_char * 32),
        ("calling", ctypes.c_char * 17),
        ("called", ctypes.c_char * 17),
        ("address", ctypes.c_char * 48),
        ("peer", ctypes.c_int64),
        ("tls", ctypes.c_int64),
        ("started", ctypes.c_double),
        ("instances", ctypes.c_int64),
        ("bytes", ctypes.c_int64),
        ("current", ctypes.c_char * 65),
        ("current_bytes", ctypes.c_int64),
    ]


class _Rule(ctypes.Structure):
    # Raw bytes: a c_char array would read back only up to the digest's first NUL.
    _fields_ = [("digest", ctypes.c_ubyte * _DIGEST), ("count", ctypes.c_int64)]


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
        ("counts", _Counts),
    ]


class _Layout(ctypes.Structure):
    _fields_ = [
        ("associations", ctypes.c_int64),
        ("instances", ctypes.c_int64),
        ("bytes", ctypes.c_int64),
        ("slots", _Slot * MAX_SLOTS),
        ("counts", _Counts),
        ("peers", (ctypes.c_char * _NAME) * _PEERS),
        ("live", _Live * MAX_LIVE),
        # The parent's own.
        ("worker_starts", ctypes.c_int64),
        ("worker_deaths", ctypes.c_int64),
        ("reloads_success", ctypes.c_int64),
        ("reloads_refused", ctypes.c_int64),
        ("last_reload_success", ctypes.c_double),
        ("config_sha256", ctypes.c_char * 65),
        # Storage Commitment, counted by workers and the commitment process alike (under
        # the lock: a few per request), and its pending reports (-1: not counted yet).
        ("commitment", ctypes.c_int64 * len(snapshot.COMMITMENT_COUNTERS)),
        ("commitment_pending", ctypes.c_int64),
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
        self._data.peers[0].value = snapshot.OTHER_PEER.encode()
        self._data.commitment_pending = -1

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
            _add_counts(data.counts, slot.counts)
            for live in data.live:
                if live.pid == slot.pid:
                    live.pid = 0  # a killed worker's associations are gone with it
            ctypes.memset(ctypes.addressof(slot), 0, ctypes.sizeof(slot))

    def worker_started(self) -> None:
        with self._locked() as data:
            data.worker_starts += 1

    def worker_died(self) -> None:
        """A worker ended that was not asked to."""
        with self._locked() as data:
            data.worker_deaths += 1

    def reloaded(self, *, success: bool) -> None:
        with self._locked() as data:
            if success:
                data.reloads_success += 1
                data.last_reload_success = time.time()
            else:
                data.reloads_refused += 1

    def configured(self, sha256: str) -> None:
        """The configuration in force now, by the SHA-256 of its file."""
        with self._locked() as data:
            data.config_sha256 = sha256.encode("ascii")

    def metrics(self) -> snapshot.Snapshot:
        """Everything counted, over every worker, live and reaped."""
        now = time.monotonic()
        # A copy taken under the lock, added up outside it: a scrape holds the lock that
        # admissions take for the time of one copy of the page, not of the sums.
        with self._locked():
            data = _Layout.from_buffer_copy(self._map)
        total = _Counts()
        _add_counts(total, data.counts)
        live_slots = [slot for slot in data.slots if slot.pid > 0]
        for slot in live_slots:
            _add_counts(total, slot.counts)
        peers = [bytes(name.value).decode(errors="replace") for name in data.peers]
        workers = tuple(
            snapshot.Worker(
                pid=int(slot.pid),
                active=int(slot.active),
                accepting=bool(slot.accepting),
                beat_age=now - slot.beat if slot.beat else float("inf"),
                associations=int(slot.associations),
                instances=int(slot.instances),
                bytes=int(slot.bytes),
            )
            for slot in live_slots
        )
        live = tuple(_live(entry, peers) for entry in data.live if entry.pid)
        active = sum(int(slot.active) for slot in live_slots)
        return snapshot.Snapshot(
            # The slots' own count, which STATUS= shows too.
            associations_accepted=int(data.associations)
            + sum(int(slot.associations) for slot in live_slots),
            associations_rejected={
                reason: int(total.rejected[n]) for n, reason in enumerate(snapshot.REJECT_REASONS)
            },
            associations_active=active,
            responses={
                (peer, status): int(total.responses[p][n])
                for p, peer in enumerate(peers)
                if peer
                for n, status in enumerate(snapshot.STATUS_CLASSES)
            },
            instances={peer: int(total.instances[p]) for p, peer in enumerate(peers) if peer},
            bytes={peer: int(total.bytes[p]) for p, peer in enumerate(peers) if peer},
            commit_seconds=snapshot.Histogram(
                tuple(int(c) for c in total.commit), float(total.commit_sum)
            ),
            fsync_seconds=snapshot.Histogram(
                tuple(int(c) for c in total.fsync), float(total.fsync_sum)
            ),
            tls_handshake_failures=int(total.tls_failures),
            proxy_header_errors={
                reason: int(total.proxy_errors[n]) for n, reason in enumerate(snapshot.PROXY_ERRORS)
            },
            proxy_health_checks=int(total.proxy_checks),
            worker_starts=int(data.worker_starts),
            worker_deaths=int(data.worker_deaths),
            reloads={
                "success": int(data.reloads_success),
                "refused": int(data.reloads_refused),
            },
            last_reload_success=float(data.last_reload_success),
            config_sha256=bytes(data.config_sha256).decode("ascii", "replace"),
            commitment={
                name: int(data.commitment[n]) for n, name in enumerate(snapshot.COMMITMENT_COUNTERS)
            },
            commitment_pending=(
                int(data.commitment_pending) if data.commitment_pending >= 0 else None
            ),
            workers=workers,
            live=live,
        )

    def count_commitment(self, counter: str, count: int = 1) -> None:
        """Storage Commitment counted `count` more of `counter` (any process)."""
        with self._locked() as data:
            data.commitment[snapshot.COMMITMENT_COUNTERS.index(counter)] += count

    def commitment_pending(self, count: int) -> None:
        """The requests whose report is pending now (the commitment process)."""
        with self._locked() as data:
            data.commitment_pending = count

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
            slot = data.slots[self.slot]
            slot.accepting = int(accepting)
            if accepting:
                # Its first sign of health: the first beat comes a BEAT_INTERVAL later,
                # and a worker slow to start (a loaded machine) would otherwise look dead
                # to the watchdog check right after the reload that started it.
                slot.beat = time.monotonic()

    def count(self, *, associations: int = 0, instances: int = 0, size: int = 0) -> None:
        # Once per instance: only this worker writes its slot's counters, so its threads'
        # lock is enough, without lockf()'s two system calls; the parent's reads of
        # aligned 64-bit values are never torn.
        with self._threads:
            slot = self._data.slots[self.slot]
            slot.associations += associations
            slot.instances += instances
            slot.bytes += size

    @contextmanager
    def own_counts(self) -> Iterator[_Counts]:
        """This worker's counts, to change: only its threads write them (as count())."""
        with self._threads:
            yield self._data.slots[self.slot].counts

    def peer_label(self, name: str) -> int:
        """The index of the metrics label `name`, added if new; 0 ("other") when full."""
        encoded = name.encode()[: _NAME - 1]
        with self._locked() as data:
            for index, known in enumerate(data.peers):
                if known.value == encoded:
                    return index
                if not known.value:
                    known.value = encoded
                    return index
        return 0

    def open_live(self, entry: LiveFields) -> int | None:
        """A live-association entry for this worker; None if the table is full."""
        with self._locked() as data:
            for index, live in enumerate(data.live):
                if live.pid == 0:
                    ctypes.memset(ctypes.addressof(live), 0, ctypes.sizeof(live))
                    live.id = entry.id.encode()[:31]
                    live.calling = entry.calling.encode(errors="replace")[:16]
                    live.called = entry.called.encode(errors="replace")[:16]
                    live.address = entry.address.encode()[:47]
                    live.peer = entry.peer
                    live.tls = int(entry.tls)
                    live.started = time.time()
                    live.pid = os.getpid()
                    return index
        return None

    def live_entry(self, index: int) -> _Live:
        entry: _Live = self._data.live[index]
        return entry

    def close_live(self, index: int) -> None:
        with self._locked() as data:
            data.live[index].pid = 0

    def admit(
        self, policy: access.AccessPolicy, max_associations: int, request: tuple[str, str, str]
    ) -> access.Decision:
        with self._locked() as data:
            slots = [slot for slot in data.slots if slot.pid]
            by_rule: dict[bytes, int] = {}
            for slot in slots:
                for rule in slot.rules:
                    if rule.count:
                        digest = bytes(rule.digest)
                        by_rule[digest] = by_rule.get(digest, 0) + rule.count
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


@dataclass(frozen=True)
class LiveFields:
    id: str
    calling: str
    called: str
    address: str
    peer: int  # label index
    tls: bool


def _add_counts(total: _Counts, more: _Counts) -> None:
    total.tls_failures += more.tls_failures
    total.proxy_checks += more.proxy_checks
    for n in range(_PROXY_ERRORS):
        total.proxy_errors[n] += more.proxy_errors[n]
    total.commit_sum += more.commit_sum
    total.fsync_sum += more.fsync_sum
    for n in range(_REASONS):
        total.rejected[n] += more.rejected[n]
    for n in range(_BINS):
        total.commit[n] += more.commit[n]
        total.fsync[n] += more.fsync[n]
    for p in range(_PEERS):
        total.instances[p] += more.instances[p]
        total.bytes[p] += more.bytes[p]
        for n in range(_STATUSES):
            total.responses[p][n] += more.responses[p][n]


def _live(entry: _Live, peers: list[str]) -> snapshot.LiveAssociation:
    def text(value: bytes) -> str:
        return value.decode(errors="replace")

    return snapshot.LiveAssociation(
        id=text(entry.id),
        worker=int(entry.pid),
        calling_aetitle=text(entry.calling),
        called_aetitle=text(entry.called),
        peer_address=text(entry.address),
        peer=peers[entry.peer] if 0 <= entry.peer < len(peers) else snapshot.OTHER_PEER,
        tls=bool(entry.tls),
        started=float(entry.started),
        instances=int(entry.instances),
        bytes=int(entry.bytes),
        current_sop_instance_uid=text(entry.current),
        current_bytes=int(entry.current_bytes),
    )


def _add_rule(slot: _Slot, digest: bytes, change: int) -> None:
    free = None
    for rule in slot.rules:
        if rule.count and bytes(rule.digest) == digest:
            rule.count += change
            return
        if free is None and not rule.count:
            free = rule
    if free is None or change < 0:
        # More rules running at once in one worker than the slot holds: this one goes
        # uncounted (its per-peer limit is then not enforced beyond the others').
        LOG.warning("too many access rules in use at once to count them all")
        return
    ctypes.memmove(free.digest, digest, _DIGEST)
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
        self._labels: dict[str, int] = {}

    def association(self) -> None:
        self._board.count(associations=1)

    def instance(self, size: int) -> None:
        self._board.count(instances=1, size=size)

    def totals(self) -> Totals:
        return self._board.snapshot().totals

    def _label(self, peer: str) -> int:
        index = self._labels.get(peer)
        if index is None:
            index = self._labels[peer] = self._board.peer_label(peer)
        return index

    def rejected(self, reason: str) -> None:
        with self._board.own_counts() as counts:
            counts.rejected[snapshot.REJECT_REASONS.index(reason)] += 1

    def response(self, peer: str, status: int, stored: int | None) -> None:
        label = self._label(peer)
        kind = snapshot.STATUS_CLASSES.index(snapshot.status_class(status))
        with self._board.own_counts() as counts:
            counts.responses[label][kind] += 1
            if stored is not None:
                counts.instances[label] += 1
                counts.bytes[label] += stored

    def timings(self, commit: float, fsync: float) -> None:
        with self._board.own_counts() as counts:
            counts.commit[snapshot.bucket(commit)] += 1
            counts.commit_sum += commit
            counts.fsync[snapshot.bucket(fsync)] += 1
            counts.fsync_sum += fsync

    def tls_failure(self) -> None:
        with self._board.own_counts() as counts:
            counts.tls_failures += 1

    def proxy_refused(self, reason: str) -> None:
        with self._board.own_counts() as counts:
            counts.proxy_errors[snapshot.PROXY_ERRORS.index(reason)] += 1

    def proxy_check(self) -> None:
        with self._board.own_counts() as counts:
            counts.proxy_checks += 1

    def live(self, association: Identity) -> Live:
        index = self._board.open_live(
            LiveFields(
                association.id,
                association.calling,
                association.called,
                association.address,
                self._label(association.peer),
                association.tls,
            )
        )
        return Live() if index is None else _SharedLive(self._board, index)

    def commitment(self, counter: str, count: int = 1) -> None:
        self._board.count_commitment(counter, count)


class _SharedLive(Live):
    """A live entry on the board, written by its association's threads alone."""

    def __init__(self, board: Board, index: int) -> None:
        self._board = board
        self._index = index
        self._entry = board.live_entry(index)

    def begin(self, sop_instance_uid: str) -> None:
        self._entry.current_bytes = 0
        self._entry.current = sop_instance_uid.encode(errors="replace")[:64]

    def progress(self, received: int) -> None:
        self._entry.current_bytes = received

    def end(self, stored: int | None) -> None:
        if stored is not None:
            self._entry.instances += 1
            self._entry.bytes += stored
        self._entry.current = b""
        self._entry.current_bytes = 0

    def close(self) -> None:
        self._board.close_live(self._index)


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
