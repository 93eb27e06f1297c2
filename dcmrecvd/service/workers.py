"""Worker processes that accept on the daemon's listening sockets, and what they share.

pynetdicom runs all of a process's associations in threads that share one GIL, so one
process serves at most about one core's worth. The daemon therefore forks `workers`
processes (default: one per CPU core), each with its own Receiver accepting on the
same listening sockets, which the parent bound or inherited from systemd before the
fork; the kernel hands each connection to one of them. The parent serves nothing: it
alone talks to systemd (NotifyAccess=exec), restarts a worker that dies, reloads by
forking a new generation and retiring the old one, and drains them all on stop.

A worker runs until told otherwise: SIGUSR1 retires it (it stops accepting, lets its
associations finish, then exits), SIGTERM stops it (associations in progress get
stop-grace seconds, then are aborted). SIGHUP and SIGINT are the parent's.

What they share (STATUS= counters, access-control limits) is on board.py's Board.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import ssl
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from types import FrameType

from dcmrecvd.config import inifile
from dcmrecvd.pnd.server import Listener, Serving
from dcmrecvd.receiver import Receiver, tune_process
from dcmrecvd.service.board import Board, SharedAdmission, SharedStats

LOG = logging.getLogger("dcmrecv.daemon")

# How often a worker shows that it still accepts; three missed beats make it unhealthy.
BEAT_INTERVAL = 1.0
HEALTHY_AGE = 3 * BEAT_INTERVAL
# prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
# The names of the daemon's children, as ps shows them (the parent keeps its own).
WORKER_NAME = "dcmrecvd worker"
# Exit status of a worker that failed to start or crashed in its main loop.
EXIT_SOFTWARE = 70


def count(requested: int | None) -> int:
    """Workers for the `workers` setting: as set, or one per CPU core."""
    return requested or os.cpu_count() or 1


@dataclass(frozen=True)
class Generation:
    """What a worker serves: a configuration, its TLS context, the listening sockets."""

    loaded: inifile.Config
    context: ssl.SSLContext | None
    listeners: Mapping[str, Listener]
    # The names of the plain and the TLS listener in `listeners`.
    plain: str
    secure: str


# Signals the parent handles itself. A worker sends SIGUSR2 when it starts and when it
# stops accepting.
ACCEPTING_CHANGED = signal.SIGUSR2
PARENT_SIGNALS = frozenset(
    {signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, ACCEPTING_CHANGED}
)
# Blocked across fork() so that none reaches the child before it has its own handlers:
# the parent's, and SIGUSR1, which a quick second reload sends to a worker the first one
# has just forked (its default action would kill the worker).
_FORK_BLOCKED = PARENT_SIGNALS | {signal.SIGUSR1}


def spawn(board: Board, generation: Generation) -> tuple[int, int]:
    """Fork one worker serving `generation`; (pid, slot). Raises OSError, RuntimeError."""
    slot = board.claim()

    def life(mask: set[int | signal.Signals]) -> int:
        board.slot = slot
        return _Worker(board, generation, mask).run()

    try:
        pid = _fork(WORKER_NAME, life)
    except OSError:
        board.release(slot)
        raise
    board.assign(slot, pid)
    return pid, slot


def spawn_sidecar(
    name: str, listeners: Iterable[Listener], life: Callable[[set[int | signal.Signals]], int]
) -> int:
    """Fork a process beside the workers (events, observer) that serves no association;
    its pid. In it: without the listening sockets (a copy kept there would outlive the
    workers that serve them), then `life(mask)` as _fork says. Raises OSError."""

    def without_listeners(mask: set[int | signal.Signals]) -> int:
        for listener in listeners:
            listener.close()
        return life(mask)

    return _fork(name, without_listeners)


def _fork(name: str, life: Callable[[set[int | signal.Signals]], int]) -> int:
    """Fork a child of the parent; its pid. In it: named `name`, ended with the parent,
    then `life(mask)`, whose result is its exit status; `mask` is the signal mask to
    restore once its handlers are set (the parent's signals are blocked across the fork,
    so none reaches the child before). Raises OSError."""
    sys.stdout.flush()
    sys.stderr.flush()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise
    if pid == 0:
        status = EXIT_SOFTWARE
        try:
            end_with_parent(name)
            status = life(previous)
        except BaseException:
            LOG.exception("%s %d failed", name, os.getpid())
        finally:
            sys.stderr.flush()
            os._exit(status)
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return pid


def end_with_parent(name: str) -> None:
    """Have the kernel send SIGTERM when the parent dies, so no orphan keeps the port; and
    name this child `name` (at most 15 bytes; what ps -o comm and top show)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        LOG.warning("worker %d will outlive a killed parent: prctl failed", os.getpid())
    if os.getppid() == 1:  # the parent died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


class _Worker:
    """One worker process's life: serve, then retire or stop."""

    def __init__(
        self, board: Board, generation: Generation, mask: set[int | signal.Signals]
    ) -> None:
        self.board = board
        self.generation = generation
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        for ignored in (signal.SIGHUP, signal.SIGINT):
            signal.signal(ignored, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for handled in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(handled, self._on_signal)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.put(signum)  # SimpleQueue.put is safe in a signal handler

    def run(self) -> int:
        loaded = self.generation.loaded
        receiver = Receiver(
            loaded.settings,
            loaded.profile,
            peer_profiles=loaded.peer_profiles,
            stats=SharedStats(self.board),
            admission=SharedAdmission(self.board),
        )
        tune_process()
        listeners = self.generation.listeners
        settings = loaded.settings
        servings = [Serving(receiver, listeners[self.generation.plain], proxy=settings.proxy)]
        if self.generation.context is not None:
            assert settings.tls is not None  # the context was made from it
            servings.append(
                Serving(
                    receiver,
                    listeners[self.generation.secure],
                    self.generation.context,
                    proxy=settings.tls.proxy,
                )
            )
        self.board.set_accepting(True)
        _tell_parent()
        retiring = False
        while True:
            try:
                signum: int | None = self._signals.get(timeout=BEAT_INTERVAL)
            except queue.Empty:
                signum = None
            if signum == signal.SIGTERM:
                return drain(servings, listeners.values(), loaded.settings.stop_grace, self.board)
            if signum == signal.SIGUSR1 and not retiring:
                retiring = True
                _stop_accepting(servings, listeners.values(), self.board)
            # Connections, not only associations: one accepted just before the accept
            # loop stopped may not have its association yet, and exiting would reset it.
            running = sum(s.connections() for s in servings)
            if retiring and not running:
                return 0
            accepting = not retiring and all(s.accepting for s in servings)
            self.board.beat(running, accepting=accepting)


def _stop_accepting(servings: list[Serving], listeners: Iterable[Listener], board: Board) -> None:
    for serving in servings:
        serving.stop_accepting()
    # This process's copies of the sockets: once every process has closed its copy, a
    # connection is refused (systemd's own copy of an inherited socket stays open).
    for listener in listeners:
        listener.close()
    board.set_accepting(False)
    _tell_parent()


def _tell_parent() -> None:
    """That this worker's board entry `accepting` has changed."""
    with suppress(ProcessLookupError):
        os.kill(os.getppid(), ACCEPTING_CHANGED)


def drain(servings: list[Serving], listeners: Iterable[Listener], grace: int, board: Board) -> int:
    """Accept no more; give associations in progress `grace` seconds, abort the rest."""
    _stop_accepting(servings, listeners, board)
    deadline = time.monotonic() + grace
    running = []
    for assoc in (a for s in servings for a in s.associations()):
        # A connection that has not asked for an association yet has nothing to finish.
        # Accepted is Sta6: pynetdicom sets is_established only after EVT_ACCEPTED, once
        # the DUL has sent the A-ASSOCIATE-AC and the peer may be storing already.
        if assoc.is_established or assoc.dul.state_machine.current_state == "Sta6":
            running.append(assoc)
        else:
            assoc.abort()
    if running:
        LOG.info("waiting up to %d s for %d associations to finish", grace, len(running))
    for assoc in running:
        assoc.join(max(0.0, deadline - time.monotonic()))
    left = [a for a in running if a.is_alive()]
    for assoc in left:
        LOG.warning("aborting association with %s after %d s", assoc.requestor.ae_title, grace)
        assoc.abort()
    for assoc in left:
        assoc.join(5)
    return 0
