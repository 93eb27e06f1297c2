"""The daemon's parent process, like gunicorn's arbiter: it forks the workers, watches and
signals them, reloads on SIGHUP, drains on SIGTERM, and speaks to systemd for all of them.

Signal handlers only queue the signal; the main loop acts on it (reload, stop), so that
no lock is ever taken inside a handler and a reload is never delayed by a timer. A
reload starts a new generation of workers on the same listening sockets and then
retires the old one: new associations get the new configuration at once, associations
in progress finish on the one they started with, and a configuration that does not load
is logged and refused while the old one goes on serving.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from dcmrecvd import __version__, logs
from dcmrecvd.config import inifile, tls
from dcmrecvd.pnd.server import Listener
from dcmrecvd.service import board, commitproc, eventsproc, observer, systemd, workers
from dcmrecvd.settings import Settings
from dcmrecvd.store import index, objectstore, storage

LOG = logging.getLogger("dcmrecv.daemon")

# What run() and stop() return (sysexits.h for the failure).
EXIT_OK = 0
EXIT_UNAVAILABLE = 69
# The socket systemd passes, by FileDescriptorName= of dcmrecvd.socket.
SOCKET_NAME = "dicom"
TLS_SOCKET_NAME = "dicom-tls"
# How often STATUS= is refreshed when no watchdog asks for more.
STATUS_INTERVAL = 2.0
# A worker that dies sooner than this after its start is replaced only this much later.
RESTART_DELAY = 1.0
# Beyond stop-grace: a worker's last aborts and exit.
DRAIN_MARGIN = 10.0
# How long a reload waits for the old workers to stop accepting.
RETIRE_WAIT = 5.0


@dataclass
class _Sidecar:
    """A process beside the workers that serves no association: started when the
    configuration wants it, replaced (after RESTART_DELAY) when it dies."""

    name: str
    wanted: Callable[[Settings], bool]
    spawn: Callable[[], int]
    pid: int | None = None
    restart_at: float = 0.0


def config_sha256(path: str) -> str:
    """The SHA-256 of the configuration file (of nothing for the embedded defaults)."""
    try:
        data = b"" if path == inifile.EMBEDDED else Path(path).read_bytes()
    except OSError:
        return ""
    return hashlib.sha256(data).hexdigest()


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


class Service:
    """The daemon's main loop: supervise the workers, reload on SIGHUP, drain on SIGTERM.

    The workers (workers.py) serve; this process only forks, watches and signals them,
    and speaks to systemd for all of them.
    """

    def __init__(
        self,
        loaded: inifile.Config,
        context: ssl.SSLContext | None,
        listeners: dict[str, Listener],
        notifier: systemd.Notifier,
        watchdog: float | None,
        *,
        metrics_socket: socket.socket | None = None,
    ) -> None:
        """`metrics_socket`: the one systemd passes for the metrics endpoint."""
        self.loaded = loaded
        self.context = context
        self.watchdog = watchdog
        self.listeners = listeners
        self.notifier = notifier
        self.board = board.Board()
        # pid -> board slot: the generation serving now, and retired ones finishing.
        self.current: dict[int, int] = {}
        self.retired: dict[int, int] = {}
        self._started: dict[int, float] = {}
        self._spools: dict[int, storage.Spool] = {}
        self._restart_at = 0.0
        # The events process (completion, manifests, hooks), the commitment process
        # (Storage Commitment reports) and the observer (metrics, status), each when the
        # configuration wants it.
        self.sidecars = [
            _Sidecar(
                "events process",
                lambda settings: settings.events is not None,
                lambda: eventsproc.spawn(self.loaded, self.listeners.values()),
            ),
            _Sidecar(
                "commitment process",
                lambda settings: settings.commitment is not None,
                lambda: commitproc.spawn(self.loaded, self.listeners.values(), self.board),
            ),
            _Sidecar(
                "observer process",
                lambda settings: observer.wanted(settings, metrics_socket),
                lambda: observer.spawn(
                    self.board, self.loaded, self.listeners.values(), metrics_socket
                ),
            ),
        ]
        self._stopping = False
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        # Signals that came while a reload waited for the old workers; handled next.
        self._deferred: list[int] = []

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.put(signum)  # SimpleQueue.put is safe in a signal handler

    def _spawn(self) -> tuple[int, int]:
        generation = workers.Generation(
            self.loaded, self.context, self.listeners, SOCKET_NAME, TLS_SOCKET_NAME
        )
        pid, slot = workers.spawn(self.board, generation)
        self.board.worker_started()
        self._started[pid] = time.monotonic()
        self._spools[pid] = objectstore.spool(self.loaded.settings)
        return pid, slot

    def _start_sidecars(self) -> None:
        """Fork the sidecar processes the configuration wants and that do not run."""
        now = time.monotonic()
        for sidecar in self.sidecars:
            if sidecar.pid is None and sidecar.wanted(self.loaded.settings):
                if now < sidecar.restart_at:
                    continue
                try:
                    sidecar.pid = sidecar.spawn()
                except OSError as exc:
                    LOG.error("cannot start the %s: %s", sidecar.name, exc)
                    sidecar.restart_at = now + RESTART_DELAY

    def _wanted(self) -> int:
        return workers.count(self.loaded.settings.workers)

    def run(self) -> int:
        for handled in workers.PARENT_SIGNALS:
            signal.signal(handled, self._on_signal)
        self.board.configured(config_sha256(self.loaded.path))
        # Only at start: later, the temporary files in the spool are the workers', in use.
        objectstore.sweep_spool(self.loaded.settings)
        objectstore.warn_if_index_on_nfs(self.loaded.settings)
        try:
            objectstore.reconcile_index(self.loaded.settings)
        except index.IndexFailure as exc:
            LOG.critical("cannot use the index: %s", exc)
            return EXIT_UNAVAILABLE
        for name, listener in self.listeners.items():
            host, port = listener.address
            LOG.info(
                "dcmrecvd %s listening on %s:%d%s%s as %s with profile %s",
                __version__,
                host,
                port,
                " with TLS" if name == TLS_SOCKET_NAME else "",
                " (socket from systemd)" if listener.inherited else "",
                self.loaded.settings.aetitle,
                self.loaded.profile.name,
            )
        try:
            self._start_sidecars()
            for _ in range(self._wanted()):
                pid, slot = self._spawn()
                self.current[pid] = slot
        except (OSError, RuntimeError) as exc:
            LOG.critical("cannot start the worker processes: %s", exc)
            self.stop()
            return EXIT_UNAVAILABLE
        LOG.info(
            "serving with %s", logs.counted(len(self.current), "worker process", "worker processes")
        )
        self.notifier.ready()
        self._status()
        while True:
            signum = self._next_signal(min(self.watchdog or STATUS_INTERVAL, STATUS_INTERVAL))
            self._reap()
            if signum == signal.SIGHUP:
                self.reload()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                return self.stop()
            self._replace_dead()
            if self.watchdog is not None and self._healthy():
                self.notifier.watchdog()
            self._status()

    def _next_signal(self, timeout: float) -> int | None:
        """The signal to act on, waiting up to `timeout` for one; None if none came.

        Every signal pending is taken at once: a stop goes first, and the reloads asked
        for meanwhile are one (it reads the file as it is now). Taken one by one, SIGHUPs
        coming faster than reloads end queued reloads without end, and a SIGTERM behind
        them. The other signals only wake the loop, which reaps anyway.
        """
        pending, self._deferred = self._deferred, []
        if not pending:
            try:
                pending.append(self._signals.get(timeout=timeout))
            except queue.Empty:
                return None
        with suppress(queue.Empty):
            while True:
                pending.append(self._signals.get_nowait())
        for wanted in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            if wanted in pending:
                return wanted
        return pending[0]

    def _reap(self) -> None:
        """Collect the workers that ended; forget their associations and temp files."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            sidecar = next((s for s in self.sidecars if s.pid == pid), None)
            if sidecar is not None:
                sidecar.pid = None
                if not self._stopping and sidecar.wanted(self.loaded.settings):
                    LOG.error(
                        "%s %d ended with status %d; starting another", sidecar.name, pid, code
                    )
                    sidecar.restart_at = time.monotonic() + RESTART_DELAY
                continue
            if pid in self.current:
                slot = self.current.pop(pid)
                if not self._stopping:
                    LOG.error("worker %d ended with status %d; starting another", pid, code)
                    self.board.worker_died()
                    if time.monotonic() - self._started[pid] < RESTART_DELAY:
                        self._restart_at = time.monotonic() + RESTART_DELAY
            elif pid in self.retired:
                slot = self.retired.pop(pid)
            else:
                continue
            self.board.release(slot)
            self._started.pop(pid, None)
            spool = self._spools.pop(pid)
            if code != 0:
                # A killed worker's temp files are unlocked now; the others' stay locked.
                removed = storage.sweep(spool)
                if removed:
                    LOG.warning("removed %d temporary file(s) of worker %d", len(removed), pid)

    def _replace_dead(self) -> None:
        if self._stopping:
            return
        self._start_sidecars()
        if time.monotonic() < self._restart_at:
            return
        try:
            while len(self.current) < self._wanted():
                pid, slot = self._spawn()
                self.current[pid] = slot
        except (OSError, RuntimeError) as exc:
            LOG.error("cannot start a worker process: %s", exc)
            self._restart_at = time.monotonic() + RESTART_DELAY

    def _healthy(self) -> bool:
        """Every worker of the generation runs and has shown lately that it accepts."""
        if len(self.current) < self._wanted():
            return False
        now = time.monotonic()
        return all(
            now - max(self.board.beat_of(slot), self._started[pid]) < workers.HEALTHY_AGE
            for pid, slot in self.current.items()
        )

    def _signal(self, pids: Iterable[int], signum: int) -> None:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signum)

    def reload(self) -> None:
        """Serve new associations with the configuration as the file says now."""
        self.notifier.reloading()
        try:
            loaded = inifile.read(self.loaded.path)
            reason = objectstore.check_output_directory(loaded.settings.output_dir)
            if reason is not None:
                raise inifile.ConfigError(
                    loaded.path, None, f"output-directory {loaded.settings.output_dir}: {reason}"
                )
            if (loaded.settings.tls is None) != (TLS_SOCKET_NAME not in self.listeners):
                raise inifile.ConfigError(
                    loaded.path, None, "adding or removing [tls] takes a restart"
                )
            if loaded.settings.index_path != self.loaded.settings.index_path:
                raise inifile.ConfigError(
                    loaded.path, None, "changing [receiver] index takes a restart"
                )
            # Certificates and keys are read again here, so a renewed one takes effect.
            context = tls.context_for(loaded.settings)
        except (inifile.ConfigError, tls.TlsError) as exc:
            LOG.error("reload refused, the running configuration stays in force: %s", exc)
            self.board.reloaded(success=False)
        else:
            self._warn_unreloadable(loaded.settings)
            if self._switch(loaded, context):
                self.board.reloaded(success=True)
                self.board.configured(config_sha256(loaded.path))
            else:
                self.board.reloaded(success=False)
            self._reload_sidecars()
        self.notifier.ready()

    def _reload_sidecars(self) -> None:
        """Start, stop or tell the sidecar processes as the configuration now says: a
        running one re-reads the file on SIGHUP."""
        for sidecar in self.sidecars:
            if sidecar.pid is not None:
                wanted = sidecar.wanted(self.loaded.settings)
                self._signal([sidecar.pid], signal.SIGHUP if wanted else signal.SIGTERM)
        self._start_sidecars()

    def _switch(self, loaded: inifile.Config, context: ssl.SSLContext | None) -> bool:
        """Fork a generation for `loaded`, then retire the old one (it finishes its work);
        False if the new generation could not start (the old one goes on)."""
        old = self.loaded, self.context
        self.loaded, self.context = loaded, context
        logs.set_level(loaded.settings)
        new: dict[int, int] = {}
        try:
            for _ in range(self._wanted()):
                pid, slot = self._spawn()
                new[pid] = slot
        except (OSError, RuntimeError) as exc:
            LOG.error("reload refused, the running configuration stays in force: %s", exc)
            self._signal(new, signal.SIGTERM)
            self.retired.update(new)
            self.loaded, self.context = old
            logs.set_level(self.loaded.settings)
            return False
        # Listed before they are signalled, so that _reap knows them meanwhile.
        retiring = self.current
        self.retired.update(retiring)
        self.current = new
        # The old generation accepts until the new one does: a connection that arrives
        # while no worker accepts waits in the backlog for a worker to start.
        self._await_workers(
            lambda: all(self.board.accepting(slot) for slot in self._alive(new, self.current)),
            f"new workers {list(new)} do not accept yet",
        )
        self._signal(retiring, signal.SIGUSR1)
        # So that after READY=1 every new association gets the new configuration.
        self._await_workers(
            lambda: (
                not any(self.board.accepting(slot) for slot in self._alive(retiring, self.retired))
            ),
            f"retired workers {list(retiring)} still accept",
        )
        LOG.info("reloaded %s: profile %s", loaded.path, loaded.profile.name)
        return True

    @staticmethod
    def _alive(pids: dict[int, int], listed: dict[int, int]) -> list[int]:
        """The slots of `pids` (pid: slot) not yet reaped from `listed`."""
        return [slot for pid, slot in pids.items() if pid in listed]

    def _await_workers(self, done: Callable[[], bool], late: str) -> None:
        """Wait until `done()`, which workers change by signalling ACCEPTING_CHANGED;
        after RETIRE_WAIT, log `late` and go on."""
        deadline = time.monotonic() + RETIRE_WAIT
        while True:
            self._reap()
            if done():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                LOG.warning("%s after %.0f s", late, RETIRE_WAIT)
                return
            with suppress(queue.Empty):
                signum = self._signals.get(timeout=left)
                if signum not in (workers.ACCEPTING_CHANGED, signal.SIGCHLD):
                    self._deferred.append(signum)

    def _warn_unreloadable(self, new: Settings) -> None:
        old = self.loaded.settings
        changed = [
            name
            for name in ("port", "bind_address", "tls_port", "log_destination")
            if getattr(old, name) != getattr(new, name)
        ]
        if changed:
            LOG.warning(
                "%s changed: that takes a restart (systemctl restart dcmrecvd)", ", ".join(changed)
            )

    def _status(self) -> None:
        board = self.board.snapshot()
        totals = board.totals
        try:
            free = _size(shutil.disk_usage(self.loaded.settings.output_dir).free) + " free"
        except OSError as exc:
            free = f"free space unknown: {exc.strerror}"
        self.notifier.status(
            f"{self.loaded.settings.aetitle} on port"
            f" {', '.join(str(listener.address[1]) for listener in self.listeners.values())},"
            f" profile {self.loaded.profile.name}: {board.active} associations active,"
            f" {totals.associations} in all; {totals.instances} instances,"
            f" {_size(totals.bytes)} stored; {free}; {len(self.current)} workers"
        )

    def stop(self) -> int:
        """Stop every worker: each gives its associations stop-grace, then aborts them."""
        self._stopping = True
        self.notifier.stopping()

        def running() -> list[int]:
            sidecars = [s.pid for s in self.sidecars if s.pid is not None]
            return [*self.current, *self.retired, *sidecars]

        self._signal(running(), signal.SIGTERM)
        for listener in self.listeners.values():
            listener.close()
        deadline = time.monotonic() + self.loaded.settings.stop_grace + DRAIN_MARGIN
        while running():
            self._reap()
            left = deadline - time.monotonic()
            if not running() or left <= 0:
                break
            with suppress(queue.Empty):
                self._signals.get(timeout=left)  # SIGCHLD ends the wait
        for pid in running():
            LOG.error("process %d did not stop in time; killing it", pid)
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with suppress(ChildProcessError):
                os.waitpid(pid, 0)
        LOG.info("dcmrecvd stopped")
        return EXIT_OK
