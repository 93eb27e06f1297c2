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
import math
import os
import queue
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from dcmrecvd.config import inifile
from dcmrecvd.service import workers
from dcmrecvd.settings import Settings
from dcmrecvd.store import index

LOG = logging.getLogger("dcmrecv")

# While the index cannot be used: the longest wait between tries, and how often it is said.
INDEX_RETRY_MAX = 30.0
INDEX_COMPLAINT_INTERVAL = 60.0
# Finished rows (events, requests) are pruned this often.
PRUNE_INTERVAL = 3600.0
# The exit status when the index cannot be used (the parent starts another later).
EXIT_INDEX = 75


class IndexTrouble:
    """A busy or failing index (a full disk): said once a minute, tried again less and
    less often, its recovery said once. `kind` names the process in the lines."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._said = -math.inf
        self.wait = 0.0  # before the next try; 0 while the index works

    def failed(self, exc: index.IndexFailure, now: float, shortest: float) -> float:
        """The index failed at `now`: how long to wait before trying again (doubling from
        `shortest`, up to INDEX_RETRY_MAX)."""
        if now - self._said >= INDEX_COMPLAINT_INTERVAL:
            LOG.error("%s: %s; trying again", self.kind, exc)
            self._said = now
        self.wait = min(max(2 * self.wait, shortest), INDEX_RETRY_MAX)
        return self.wait

    def worked(self) -> None:
        if self.wait:
            LOG.info("%s: the index works again", self.kind)
        self._said, self.wait = -math.inf, 0.0


class IndexProcess:
    """Signals SIGTERM and SIGHUP queued for the main loop, the others the workers use
    ignored; `kind` names the process in its log lines, `loaded` is the configuration in
    force."""

    kind = "index"

    def __init__(
        self,
        loaded: inifile.Config,
        mask: set[int | signal.Signals],
        *,
        defaults: tuple[signal.Signals, ...] = (),
    ) -> None:
        """`mask`: the signal mask to restore (the fork blocked them all); `defaults`:
        signals given their default action, before any is unblocked."""
        self.loaded = loaded
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        for ignored in (signal.SIGINT, signal.SIGUSR1, workers.ACCEPTING_CHANGED):
            signal.signal(ignored, signal.SIG_IGN)
        for default in defaults:
            signal.signal(default, signal.SIG_DFL)
        for handled in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(handled, self._on_signal)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _serves(self, settings: Settings) -> bool:
        """Whether this process has work under `settings`."""
        raise NotImplementedError

    def _reload(self) -> None:
        """Read the configuration file again (SIGHUP; the parent has just checked it)."""
        try:
            loaded = inifile.read(self.loaded.path)
        except inifile.ConfigError as exc:
            LOG.error("%s: configuration not reloaded, the running one stays: %s", self.kind, exc)
            return
        if not self._serves(loaded.settings) or (
            loaded.settings.index_path != self.loaded.settings.index_path
        ):
            return  # the parent stops this process for such a change; until then, go on
        self.loaded = loaded

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

    def _on_index(self, index_path: str, lock: Path, serve: Callable[[index.Index], int]) -> int:
        """`serve` the index at `index_path` once the lock at `lock` is held; its exit
        status (0 when stopped while waiting for the lock, EXIT_INDEX without the index)."""
        if self._take_lock(lock) is None:
            return 0
        try:
            listing = index.Index(Path(index_path))
        except index.IndexFailure as exc:
            LOG.error("%s: cannot use the index: %s", self.kind, exc)
            return EXIT_INDEX
        with listing:
            return serve(listing)
