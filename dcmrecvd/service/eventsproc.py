"""The events process: the one place that completes series and studies and delivers events.

The parent forks it beside the workers when the configuration has completion or events,
and starts another if it dies. It serves no association, so a hook, however slow, never
delays a C-STORE response. Only one may run on an index at a time: it holds an exclusive
lock (flock) on a file beside the index for its whole life, so a second one (a
replacement started while a killed one's hooks still end) waits for it; completion is
then never computed twice.

Signals: SIGTERM stops it (running hooks are stopped and stay pending for the next
start), SIGHUP re-reads the configuration file (the parent has just checked it): new
rules and hooks apply to what follows, running hooks go on.
"""

from __future__ import annotations

import logging
import queue
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from dcmrecvd.config import inifile
from dcmrecvd.events import completion, delivery
from dcmrecvd.events.hookrunner import HookRunner
from dcmrecvd.pnd.server import Listener
from dcmrecvd.service import workers
from dcmrecvd.service.indexproc import PRUNE_INTERVAL, IndexProcess, IndexTrouble
from dcmrecvd.settings import Settings
from dcmrecvd.store import index

# What ps shows.
PROCESS_NAME = "dcmrecvd events"

LOG = logging.getLogger("dcmrecv.events")

# Completion is looked at this often at most, and at least this often.
MIN_TICK = 0.1
MAX_TICK = 1.0
# How long running hooks get to end after SIGTERM before they are killed.
STOP_GRACE = 5.0


def lock_path(index_path: str) -> Path:
    return Path(f"{index_path}.events-lock")


def tick(settings: Settings) -> float:
    """How often completion is looked at: well within the shortest quiet period."""
    assert settings.events is not None
    return min(MAX_TICK, max(MIN_TICK, settings.events.series_quiet / 4))


def spawn(loaded: inifile.Config, listeners: Iterable[Listener]) -> int:
    """Fork the events process for `loaded`; its pid. Raises OSError."""
    return workers.spawn_sidecar(
        PROCESS_NAME, listeners, lambda mask: EventsProcess(loaded, mask).run()
    )


class EventsProcess(IndexProcess):
    kind = "events"

    def __init__(
        self,
        loaded: inifile.Config,
        mask: set[int | signal.Signals],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        # The runner reaps its hooks itself.
        super().__init__(loaded, mask, defaults=(signal.SIGCHLD,))

    def run(self) -> int:
        settings = self.loaded.settings
        assert settings.events is not None and settings.index_path is not None
        return self._on_index(settings.index_path, lock_path(settings.index_path), self._serve)

    def _serve(self, listing: index.Index) -> int:
        settings = self.loaded.settings
        assert settings.events is not None
        runner = HookRunner(LOG)
        deliverer = delivery.Deliverer(listing, settings.events, runner, self.clock)
        next_pass = 0.0
        next_prune = 0.0
        trouble = IndexTrouble("events")
        while True:
            try:
                signum: int | None = self._signals.get_nowait()
            except queue.Empty:
                signum = None
            if signum == signal.SIGTERM:
                deliverer.stop(STOP_GRACE)
                return 0
            if signum == signal.SIGHUP:
                self._reload()
                settings = self.loaded.settings
            events = settings.events
            assert events is not None  # _reload keeps a configuration without events out
            deliverer.settings = events
            now = self.clock()
            try:
                if now >= next_pass:
                    completion.run_pass(listing, events, settings.access, now)
                    next_pass = now + tick(settings)
                if now >= next_prune:
                    removed = completion.prune(listing, now)
                    if removed:
                        LOG.info("removed %d finished event(s) older than a week", removed)
                    next_prune = now + PRUNE_INTERVAL
                deliverer.start_due()
                deliverer.finish(runner.poll(tick(settings)))
            except index.IndexFailure as exc:
                # What was not recorded is done again (hook ends are held meanwhile).
                deliverer.hold(runner.poll(trouble.failed(exc, now, tick(settings))))
            else:
                trouble.worked()

    def _serves(self, settings: Settings) -> bool:
        return settings.events is not None
