"""What the daemon's processes beside the workers that own an index (the events process,
the commitment process) share: signals taken as a queue, and the lock that lets only
one of a kind run on an index at a time.

Each holds an exclusive flock on a file beside the index for its whole life, so that a
replacement started while a killed one is still ending waits for it instead of doing the
same work at the same time.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import signal
from pathlib import Path
from types import FrameType

from dcmrecvd.service import workers

LOG = logging.getLogger("dcmrecv")


class IndexProcess:
    """Signals SIGTERM and SIGHUP queued for the main loop, the others the workers use
    ignored; `kind` names the process in its log lines."""

    kind = "index"

    def __init__(
        self, mask: set[int | signal.Signals], *, defaults: tuple[signal.Signals, ...] = ()
    ) -> None:
        """`mask`: the signal mask to restore (the fork blocked them all); `defaults`:
        signals given their default action, before any is unblocked."""
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        for ignored in (signal.SIGINT, signal.SIGUSR1, workers.ACCEPTING_CHANGED):
            signal.signal(ignored, signal.SIG_IGN)
        for default in defaults:
            signal.signal(default, signal.SIG_DFL)
        for handled in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(handled, self._on_signal)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.put(signum)  # SimpleQueue.put is safe in a signal handler

    def _wait(self, seconds: float) -> int | None:
        """The next signal, if one comes within `seconds`."""
        try:
            return self._signals.get(timeout=max(seconds, 0.0))
        except queue.Empty:
            return None

    def _take_lock(self, path: Path) -> int | None:
        """The lock's descriptor once held; None if SIGTERM came while waiting."""
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        waited = False
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return descriptor
            except BlockingIOError:
                if not waited:
                    LOG.warning("waiting for another %s process to end (%s)", self.kind, path)
                    waited = True
            if self._wait(0.2) == signal.SIGTERM:
                os.close(descriptor)
                return None
