"""The observer process: the Prometheus metrics endpoint and the status socket.

The parent forks it beside the workers when the configuration has [metrics] port or
[status] socket, or systemd passed a socket named "metrics" (dcmrecvd-metrics.socket),
and starts another if it dies. It only reads the board and measures what only the
moment knows (free space, the spool, the events queue), so a scrape or a
`dcmrecvd status` never waits for, nor delays, an association. Threads serve the two
sockets: this process never forks.

The endpoint answers GET /metrics (metrics/exposition.py), in OpenMetrics when the
scraper asks for it, and 404 to anything else; the status socket sends each connection
the status document (metrics/status.py) as one line of JSON, then closes it. The socket
file is 0660: root and the members of the service's group may read it.

Signals: SIGTERM stops it; SIGHUP re-reads the configuration file (the parent has just
checked it): the gauges follow the new settings, and the endpoint and the status socket
move when their address changed (an endpoint on systemd's socket stays there).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import signal
import socket
import socketserver
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

from dcmrecvd.config import inifile
from dcmrecvd.metrics import status
from dcmrecvd.metrics.exposition import Gauges, SnapshotCollector
from dcmrecvd.metrics.snapshot import Snapshot
from dcmrecvd.pnd.server import Listener, listen_tcp
from dcmrecvd.service import workers
from dcmrecvd.settings import Settings
from dcmrecvd.store import index, storage

# What ps shows.
PROCESS_NAME = "dcmrecvd status"

LOG = logging.getLogger("dcmrecv.observer")

# The name of the socket systemd passes for the endpoint (dcmrecvd-metrics.socket).
METRICS_SOCKET_NAME = "metrics"
METRICS_PATH = "/metrics"
# Seconds a client gets to send its request or to read the answer.
CLIENT_TIMEOUT = 10.0
# Connections waiting to be accepted on each socket.
BACKLOG = 16
STATUS_MODE = 0o660
# The signals the observer acts on; the parent's others it ignores.
_TAKEN = frozenset({signal.SIGTERM, signal.SIGHUP})
# The deliveries_due index (state, due) answers it without reading the table.
_DELIVERIES_BY_STATE = (
    "SELECT state, count(*) FROM deliveries WHERE state IN ('pending', 'failed') GROUP BY state"
)


class BoardReader(Protocol):
    """What the observer reads of the board."""

    def metrics(self) -> Snapshot: ...


def wanted(settings: Settings, metrics_socket: socket.socket | None) -> bool:
    """Whether there is anything for an observer process to serve."""
    return (
        metrics_socket is not None
        or settings.metrics_port is not None
        or settings.status_socket is not None
    )


def inherited_metrics_socket(inherited: dict[str, list[socket.socket]]) -> socket.socket | None:
    """Take the socket named "metrics" out of systemd's sockets (systemd.inherited_sockets());
    a second one is closed with a warning."""
    sockets = inherited.pop(METRICS_SOCKET_NAME, [])
    for extra in sockets[1:]:
        LOG.warning("ignoring a second inherited socket named %s: %s", METRICS_SOCKET_NAME, extra)
        extra.close()
    return sockets[0] if sockets else None


def spawn(
    board: BoardReader,
    loaded: inifile.Config,
    listeners: Iterable[Listener],
    metrics_socket: socket.socket | None,
) -> int:
    """Fork the observer process for `loaded`; its pid. Raises OSError."""
    return workers.spawn_sidecar(
        PROCESS_NAME, listeners, lambda mask: Observer(board, loaded, metrics_socket).run(mask)
    )


# --- what the moment knows ---------------------------------------------------------------


def reserve_bytes(settings: Settings, total: int | None) -> int:
    """The free-space reserve in bytes, as store/freespace.py's Reserve applies it: the
    larger of its size and its percentage of the file system (`total` bytes; the size
    alone when that is unknown)."""
    percent = 0 if total is None else math.ceil(settings.free_space_reserve_percent * total / 100)
    return max(settings.free_space_reserve_bytes, percent)


def spool_temporary_files(output_dir: str) -> int | None:
    """Temporary files in the spool of `output_dir`; None when it cannot be read."""
    try:
        names = os.listdir(storage.spool_directory(output_dir))
    except FileNotFoundError:
        return 0  # nothing stored yet
    except OSError:
        return None
    return sum(
        1
        for name in names
        if name.startswith(storage.TEMP_PREFIX) and name.endswith(storage.TEMP_SUFFIX)
    )


def measure(settings: Settings, workers: int, deliveries: Mapping[str, int] | None) -> Gauges:
    """The gauges of this moment for `settings`."""
    try:
        usage = shutil.disk_usage(settings.output_dir or ".")
    except OSError:
        free, total = None, None
    else:
        free, total = usage.free, usage.total
    return Gauges(
        output_free_bytes=free,
        output_reserve_bytes=reserve_bytes(settings, total),
        spool_temporary_files=spool_temporary_files(settings.output_dir),
        event_deliveries=deliveries,
        workers=workers,
    )


# --- the servers -------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    # A scraper that stops reading must not hold a thread for ever.
    timeout = CLIENT_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("metrics: %s %s", self.address_string(), format % args)


class _MetricsServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server on a listening socket made elsewhere (bound here, or systemd's)."""

    daemon_threads = True

    def __init__(self, sock: socket.socket, app: WSGIApplication) -> None:
        self.address_family = sock.family
        address = sock.getsockname()
        super().__init__(address, _QuietHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        # What server_bind would set, without its reverse DNS look-up.
        self.server_name, self.server_port = str(address[0]), int(address[1])
        self.setup_environ()
        self.set_app(app)


class _StatusServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, answer: Callable[[], bytes]) -> None:
        super().__init__(sock.getsockname(), _StatusHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.answer = answer


class _StatusHandler(socketserver.StreamRequestHandler):
    timeout = CLIENT_TIMEOUT

    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _StatusServer)
        try:
            self.wfile.write(server.answer())
        except OSError as exc:
            LOG.debug("status: a client went away: %s", exc)


def metrics_app(registry: CollectorRegistry) -> WSGIApplication:
    """GET /metrics from `registry` (make_wsgi_app negotiates OpenMetrics); 404 else."""
    metrics = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH or environ.get("REQUEST_METHOD") != "GET":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"dcmrecvd serves GET {METRICS_PATH} only\n".encode()]
        answer: Iterable[bytes] = metrics(environ, start_response)
        return answer

    return app


class _Running:
    """A server and the thread of its accept loop."""

    def __init__(self, server: socketserver.BaseServer, name: str) -> None:
        self.server = server
        threading.Thread(target=server.serve_forever, name=name, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        # close(), never shutdown(): systemd's socket stays open in the parent.
        self.server.server_close()


def _listen_unix(path: str) -> socket.socket:
    """A listening AF_UNIX socket at `path`, mode 0660; a stale one there is replaced.
    Raises OSError."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(found.st_mode):
            raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
        # Of an observer that ended: a live one is never started twice on one file.
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, STATUS_MODE)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


# --- the process -------------------------------------------------------------------------


class Observer:
    def __init__(
        self,
        board: BoardReader,
        loaded: inifile.Config,
        metrics_socket: socket.socket | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.board = board
        self.loaded = loaded
        self.metrics_socket = metrics_socket
        self.clock = clock
        self._metrics: _Running | None = None
        self._status: _Running | None = None
        # The status socket's file and its inode, to remove it only while it is ours.
        self._status_file: tuple[str, int] | None = None
        self._index: index.Index | None = None
        self._index_lock = threading.Lock()
        self._index_failing = False
        # Last: registering collects once (auto_describe), which reads all of the above.
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(SnapshotCollector(self.moment))

    def run(self, mask: set[int | signal.Signals]) -> int:
        """Serve until SIGTERM; `mask` is the signal mask to restore once the parent's
        signals are ignored (spawn blocked them across fork)."""
        for ignored in (signal.SIGINT, signal.SIGUSR1, workers.ACCEPTING_CHANGED):
            signal.signal(ignored, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # Blocked in every thread (they inherit this mask) and taken by sigwait below: a
        # handler's signal that the kernel gave a serving thread would not wake this one.
        signal.pthread_sigmask(signal.SIG_SETMASK, {*mask, *_TAKEN})
        self._open_metrics()
        self._open_status()
        try:
            while signal.sigwait(_TAKEN) == signal.SIGHUP:
                self._reload()
            return 0  # SIGTERM
        finally:
            self._close_metrics()
            self._close_status()
            self._close_index()

    # --- what is served

    def moment(self) -> tuple[Snapshot, Gauges]:
        """The board now, and the gauges of this moment."""
        snapshot = self.board.metrics()
        settings = self.loaded.settings
        return snapshot, measure(settings, len(snapshot.workers), self._deliveries(settings))

    def status_line(self) -> bytes:
        """The status document, as the status socket sends it."""
        snapshot, gauges = self.moment()
        document = status.document(snapshot, gauges, now=self.clock())
        return json.dumps(document, allow_nan=False).encode() + b"\n"

    def _deliveries(self, settings: Settings) -> Mapping[str, int] | None:
        """Event deliveries by state; None when events are off or the index fails."""
        if settings.events is None or settings.index_path is None:
            return None
        try:
            with self._index_lock:
                if self._index is None:
                    self._index = index.Index(Path(settings.index_path))
                listing = self._index
            rows = listing.transaction(
                lambda c: c.execute(_DELIVERIES_BY_STATE).fetchall(), write=False
            )
        except index.IndexFailure as exc:
            # Once, not at every scrape.
            if not self._index_failing:
                LOG.error("observer: event deliveries unknown: %s", exc)
            self._index_failing = True
            return None
        self._index_failing = False
        return {str(state): int(count) for state, count in rows}

    # --- the sockets

    def _open_metrics(self) -> None:
        settings = self.loaded.settings
        if self.metrics_socket is not None:
            sock = self.metrics_socket
        elif settings.metrics_port is not None:
            try:
                sock = listen_tcp(settings.metrics_address, settings.metrics_port, BACKLOG)
            except OSError as exc:
                LOG.error(
                    "cannot serve metrics on %s port %d: %s; tried again at the next reload",
                    settings.metrics_address,
                    settings.metrics_port,
                    exc.strerror or exc,
                )
                return
        else:
            return
        server = _MetricsServer(sock, metrics_app(self.registry))
        self._metrics = _Running(server, "metrics")
        host, port = sock.getsockname()[:2]
        LOG.info(
            "serving metrics on http://%s:%d%s%s",
            f"[{host}]" if ":" in host else host,
            port,
            METRICS_PATH,
            " (socket from systemd)" if sock is self.metrics_socket else "",
        )

    def _close_metrics(self) -> None:
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None

    def _open_status(self) -> None:
        path = self.loaded.settings.status_socket
        if path is None:
            return
        try:
            sock = _listen_unix(path)
            self._status_file = (path, os.stat(path).st_ino)
        except OSError as exc:
            LOG.error(
                "cannot serve the status socket %s: %s; tried again at the next reload",
                path,
                exc.strerror or exc,
            )
            return
        self._status = _Running(_StatusServer(sock, self.status_line), "status")
        LOG.info("serving status on %s", path)

    def _close_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self._status_file is not None:
            path, inode = self._status_file
            self._status_file = None
            try:
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            except OSError:
                pass  # removed already (RuntimeDirectory= goes with the service)

    def _close_index(self) -> None:
        with self._index_lock:
            if self._index is not None:
                self._index.close()
                self._index = None

    def _reload(self) -> None:
        try:
            loaded = inifile.read(self.loaded.path)
        except inifile.ConfigError as exc:
            LOG.error("observer: configuration not reloaded, the running one stays: %s", exc)
            return
        old, new = self.loaded.settings, loaded.settings
        self.loaded = loaded
        if self.metrics_socket is None and (old.metrics_address, old.metrics_port) != (
            new.metrics_address,
            new.metrics_port,
        ):
            self._close_metrics()
            self._open_metrics()
        elif self._metrics is None:
            self._open_metrics()  # it could not listen before: try again
        if old.status_socket != new.status_socket or self._status is None:
            self._close_status()
            self._open_status()
        if (old.events is None, old.index_path) != (new.events is None, new.index_path):
            self._close_index()
