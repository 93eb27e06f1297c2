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
from dcmrecvd.service.indexproc import PRUNE_INTERVAL, IndexProcess, IndexTrouble
from dcmrecvd.settings import Settings
from dcmrecvd.store import index

PROCESS_NAME = "dcmrecvd commitment"

LOG = logging.getLogger("dcmrecv.commitment")

# The index is looked at this often at least (a worker's new request is due at once).
TICK = 1.0


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
        self.board = board
        self.clock = clock
        super().__init__(loaded, mask)

    def run(self) -> int:
        settings = self.loaded.settings
        assert settings.commitment is not None and settings.index_path is not None
        return self._on_index(settings.index_path, lock_path(settings.index_path), self._serve)

    def _serve(self, listing: index.Index) -> int:
        deliverer = Deliverer(self.loaded.settings, listing, SharedStats(self.board))
        next_prune = 0.0
        trouble = IndexTrouble("commitment")
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
                signum = self._wait(trouble.failed(exc, now, TICK))
                continue
            trouble.worked()
            wait = TICK if upcoming is None else min(TICK, upcoming - self.clock())
            signum = self._wait(wait)

    def _serves(self, settings: Settings) -> bool:
        return settings.commitment is not None
