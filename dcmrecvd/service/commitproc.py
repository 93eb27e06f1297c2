"""The commitment process: it delivers the Storage Commitment reports that wait in the
index, on new associations to the requesters, with retries.

The parent forks it beside the workers when the configuration has [commitment], and
starts another if it dies. Delivering opens associations and waits on the network
(connection, A-ASSOCIATE, N-EVENT-REPORT answer), so it has a process of its own:
neither completion and hooks (the events process) nor a C-STORE ever wait for a
modality that is down. Only one runs on an index at a time: it holds an exclusive lock
(flock) on a file beside the index for its whole life, so that a replacement does not
send the same reports at the same time as one that is still ending.

Signals: SIGTERM stops it (a report being sent is sent again by the next one, at least
once); SIGHUP re-reads the configuration file (the parent has just checked it): new
report destinations and retry settings apply to the next attempt.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from dcmrecvd.commitment import pending
from dcmrecvd.commitment.delivery import Deliverer
from dcmrecvd.config import inifile
from dcmrecvd.pnd.server import Listener
from dcmrecvd.service import workers
from dcmrecvd.service.board import Board, SharedStats
from dcmrecvd.service.indexproc import IndexProcess
from dcmrecvd.store import index

PROCESS_NAME = "dcmrecvd commitment"

LOG = logging.getLogger("dcmrecv.commitment")

# The index is looked at this often at least (a worker's new request is due at once).
TICK = 1.0
# While the index cannot be used: the longest wait between tries, and how often it is said.
INDEX_RETRY_MAX = 30.0
INDEX_COMPLAINT_INTERVAL = 60.0
# Finished requests are pruned this often.
PRUNE_INTERVAL = 3600.0
# The exit status when the index cannot be used (the parent starts another later).
EXIT_INDEX = 75


def lock_path(index_path: str) -> Path:
    return Path(f"{index_path}.commitment-lock")


def spawn(loaded: inifile.Config, listeners: Iterable[Listener], board: Board) -> int:
    """Fork the commitment process for `loaded`; its pid. Raises OSError."""
    return workers.spawn_sidecar(
        PROCESS_NAME, listeners, lambda mask: CommitmentProcess(loaded, board, mask).run()
    )


class CommitmentProcess(IndexProcess):
    kind = "commitment"

    def __init__(
        self,
        loaded: inifile.Config,
        board: Board,
        mask: set[int | signal.Signals],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.loaded = loaded
        self.board = board
        self.clock = clock
        super().__init__(mask)

    def run(self) -> int:
        settings = self.loaded.settings
        assert settings.commitment is not None and settings.index_path is not None
        if self._take_lock(lock_path(settings.index_path)) is None:
            return 0
        try:
            listing = index.Index(Path(settings.index_path))
        except index.IndexFailure as exc:
            LOG.error("commitment: cannot use the index: %s", exc)
            return EXIT_INDEX
        with listing:
            return self._serve(listing)

    def _serve(self, listing: index.Index) -> int:
        deliverer = Deliverer(self.loaded.settings, listing, SharedStats(self.board))
        next_prune = 0.0
        # While the index fails: when it was last said, and the wait before the next try.
        complained = -math.inf
        failing_wait = 0.0
        signum: int | None = None
        while True:
            if signum == signal.SIGTERM:
                return 0
            if signum == signal.SIGHUP:
                self._reload()
                deliverer.settings = self.loaded.settings
            now = self.clock()
            try:
                for kept in deliverer.due():
                    deliverer.deliver(kept)
                    if self._signals.qsize():
                        break  # a signal first; the rest at the next turn
                if now >= next_prune:
                    pruned = pending.prune(listing, now)
                    if pruned:
                        LOG.info("removed %d finished Storage Commitment request(s)", pruned)
                    next_prune = now + PRUNE_INTERVAL
                self.board.commitment_pending(pending.count_pending(listing))
                upcoming = pending.next_due(listing)
            except index.IndexFailure as exc:
                if now - complained >= INDEX_COMPLAINT_INTERVAL:
                    LOG.error("commitment: %s; trying again", exc)
                    complained = now
                failing_wait = min(max(2 * failing_wait, TICK), INDEX_RETRY_MAX)
                signum = self._wait(failing_wait)
                continue
            if failing_wait:
                LOG.info("commitment: the index works again")
            complained, failing_wait = -math.inf, 0.0
            wait = TICK if upcoming is None else min(TICK, upcoming - self.clock())
            signum = self._wait(wait)

    def _reload(self) -> None:
        try:
            loaded = inifile.read(self.loaded.path)
        except inifile.ConfigError as exc:
            LOG.error("commitment: configuration not reloaded, the running one stays: %s", exc)
            return
        if loaded.settings.commitment is None or loaded.settings.index_path != (
            self.loaded.settings.index_path
        ):
            return  # the parent stops this process for such a change
        self.loaded = loaded
