"""The observer process, forked as the parent forks it, with a stand-in board: the
metrics endpoint over real HTTP on a free port (OpenMetrics on request, 404 else), the
status socket in tmp_path, SIGHUP and SIGTERM; and the gauges it measures."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dcmrecvd.config import inifile
from dcmrecvd.metrics import status
from dcmrecvd.metrics.snapshot import Snapshot
from dcmrecvd.pnd.server import Listener
from dcmrecvd.service import observer
from dcmrecvd.settings import Settings
from dcmrecvd.store import index, storage
from tests.support import snapshots
from tests.support.net import LOCALHOST, free_port
from tests.support.promtool import check_metrics
from tests.support.waiting import DEADLINE, ended, until


def open_inodes(pid: int) -> set[int]:
    """The inodes of the files and sockets that process `pid` has open."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        # One may be closed meanwhile (the listdir's own descriptor).
        with suppress(FileNotFoundError):
            found.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
    return found


def answers(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Response:
    status: int
    content_type: str
    body: str


def get(port: int, path: str = "/metrics", method: str = "GET", **headers: str) -> Response:
    connection = http.client.HTTPConnection(LOCALHOST, port, timeout=DEADLINE)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return Response(
            response.status, response.getheader("Content-Type", ""), response.read().decode()
        )
    finally:
        connection.close()


def status_of(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(DEADLINE)
        client.connect(str(path))
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Running:
    pid: int
    port: int
    socket_path: Path
    conf: Path
    log: Path

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)


def config_text(tmp_path: Path, port: int | None, socket_path: Path | None, extra: str = "") -> str:
    lines = [
        "[receiver]",
        f"output-directory = {tmp_path / 'out'}",
        "free-space-reserve = 1GB",
        # More of [receiver], and sections.
        extra,
        *(["[metrics]", "address = 127.0.0.1", f"port = {port}"] if port else []),
        *(["[status]", f"socket = {socket_path}"] if socket_path else []),
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """What the observer logs (the child inherits the handler)."""
    path = tmp_path / "observer.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("dcmrecv.observer")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield path
    logger.removeHandler(handler)
    logger.setLevel(level)
    handler.close()


@pytest.fixture
def start(tmp_path: Path, log_file: Path) -> Iterator[Callable[..., Running]]:
    """Fork an observer on a stand-in board; each is stopped (SIGKILL) at the end."""
    started: list[int] = []
    (tmp_path / "out").mkdir()

    def fork(
        snapshot: Snapshot | None = None,
        *,
        metrics: bool = True,
        extra: str = "",
        metrics_socket: socket.socket | None = None,
        listeners: tuple[Listener, ...] = (),
    ) -> Running:
        port = free_port()
        socket_path = tmp_path / "status.sock"
        conf = tmp_path / "dcmrecvd.conf"
        conf.write_text(config_text(tmp_path, port if metrics else None, socket_path, extra))
        board = snapshots.StandInBoard(snapshot or snapshots.busy())
        pid = observer.spawn(board, inifile.load(conf), listeners, metrics_socket)
        started.append(pid)
        running = Running(pid, port, socket_path, conf, log_file)
        # Logged once it listens (the file alone may be a stale one).
        until(lambda: f"serving status on {socket_path}" in log_file.read_text(), "status")
        if metrics:
            until(lambda: answers(port), f"the endpoint answers on port {port}")
        return running

    yield fork
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


# --- the endpoint --------------------------------------------------------------------------


def test_metrics_in_prometheus_text_format(start: Callable[..., Running]) -> None:
    running = start()
    response = get(running.port)
    assert response.status == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.body)}
    assert families["dcmrecvd_workers"].samples[0].value == 2
    assert families["dcmrecvd_associations_accepted"].samples[0].value == 42
    # Measured by the observer: the output directory exists, the spool does not yet.
    assert families["dcmrecvd_output_free_bytes"].samples[0].value > 0
    assert families["dcmrecvd_output_reserve_bytes"].samples[0].value == 1_000_000_000
    assert families["dcmrecvd_spool_temporary_files"].samples[0].value == 0
    assert "dcmrecvd_event_deliveries" not in families  # events are off
    # A registry of its own: none of the default registry's process and GC collectors.
    assert all(name.startswith("dcmrecvd_") for name in families)
    assert check_metrics(response.body) == ""


def test_openmetrics_when_the_scraper_asks(start: Callable[..., Running]) -> None:
    running = start()
    response = get(running.port, Accept="application/openmetrics-text; version=1.0.0")
    assert response.status == 200
    # The version and the parameters differ between prometheus_client releases (Debian
    # 12's 0.16 says version=0.0.1).
    assert response.content_type.startswith("application/openmetrics-text; version=")
    assert response.body.endswith("# EOF\n")
    assert "# TYPE dcmrecvd_config info\n" in response.body


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/metrics/"), ("GET", "/favicon.ico"), ("POST", "/metrics")],
)
def test_anything_else_is_not_found(start: Callable[..., Running], method: str, path: str) -> None:
    running = start()
    response = get(running.port, path, method)
    assert (response.status, response.body) == (404, "dcmrecvd serves GET /metrics only\n")


def test_endpoint_on_a_socket_from_systemd(start: Callable[..., Running]) -> None:
    inherited = socket.create_server((LOCALHOST, 0))
    try:
        running = start(metrics=False, metrics_socket=inherited)
        port = inherited.getsockname()[1]
        assert get(port).status == 200
        running.signal(signal.SIGTERM)
        assert ended(running.pid) == 0
        # The observer closed its copy only, never shut it down: this one still listens.
        assert answers(port)
    finally:
        inherited.close()


def test_the_dicom_listeners_are_closed_in_the_observer(start: Callable[..., Running]) -> None:
    listener = Listener.bind(LOCALHOST, 0)
    try:
        running = start(listeners=(listener,))
        inode = os.fstat(listener.socket.fileno()).st_ino
        assert inode not in open_inodes(running.pid)
    finally:
        listener.close()


# --- the status socket ---------------------------------------------------------------------


def test_status_socket_sends_one_line_of_json(start: Callable[..., Running]) -> None:
    running = start()
    answer = status_of(running.socket_path)
    assert answer.endswith(b"\n") and answer.count(b"\n") == 1
    document = json.loads(answer)
    assert document["format"] == status.FORMAT
    assert [worker["pid"] for worker in document["workers"]] == [1201, 1202]
    assert document["live"][0]["current_sop_instance_uid"] == "1.2.826.0.1.3680043.10.1017.99"
    assert document["output"]["reserve_bytes"] == 1_000_000_000
    assert abs(document["time"] - time.time()) < DEADLINE
    assert stat.S_IMODE(running.socket_path.stat().st_mode) == 0o660


def test_a_stale_socket_file_is_replaced(start: Callable[..., Running], tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "status.sock"))
    stale.close()  # the file stays, with nothing listening
    running = start()
    assert json.loads(status_of(running.socket_path))["format"] == status.FORMAT


def test_a_file_in_the_way_is_left_alone_and_logged(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    path = tmp_path / "status.sock"
    conf = tmp_path / "dcmrecvd.conf"
    port = free_port()
    path.write_text("not a socket")
    conf.write_text(config_text(tmp_path, port, path))
    (tmp_path / "out").mkdir(exist_ok=True)
    board = snapshots.StandInBoard(snapshots.busy())
    pid = observer.spawn(board, inifile.load(conf), (), None)
    try:
        until(lambda: answers(port), "the endpoint answers")
        assert get(port).status == 200
        assert path.read_text() == "not a socket"
        log = (tmp_path / "observer.log").read_text()
        assert f"cannot serve the status socket {path}: exists and is not a socket" in log
    finally:
        os.kill(pid, signal.SIGTERM)
        assert ended(pid) == 0


# --- signals -------------------------------------------------------------------------------


def test_sigterm_ends_it_and_removes_the_socket(start: Callable[..., Running]) -> None:
    running = start()
    running.signal(signal.SIGTERM)
    assert ended(running.pid) == 0
    assert not running.socket_path.exists()
    assert not answers(running.port)


@pytest.mark.parametrize("ignored", [signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2])
def test_the_parents_other_signals_do_not_end_it(
    start: Callable[..., Running], tmp_path: Path, ignored: signal.Signals
) -> None:
    running = start()
    moved = tmp_path / "moved.sock"
    running.conf.write_text(config_text(tmp_path, running.port, moved))
    running.signal(ignored)
    # Both are pending together at the latest when the SIGHUP's reload has moved the
    # socket: a signal that ended the process would have ended it by then.
    running.signal(signal.SIGHUP)
    until(moved.exists, "the reload after the signal")
    assert get(running.port).status == 200
    assert os.waitpid(running.pid, os.WNOHANG) == (0, 0)


def test_sighup_moves_the_endpoint_and_the_socket(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    running = start()
    port = free_port()
    moved = tmp_path / "moved.sock"
    running.conf.write_text(config_text(tmp_path, port, moved))
    running.signal(signal.SIGHUP)
    until(moved.exists, "the status socket moved")
    until(lambda: answers(port), "the endpoint moved")
    assert get(port).status == 200
    until(lambda: not answers(running.port), "the old port closed")
    until(lambda: not running.socket_path.exists(), "the old socket file is gone")
    assert json.loads(status_of(moved))["format"] == status.FORMAT


def test_sighup_turns_them_off(start: Callable[..., Running], tmp_path: Path) -> None:
    running = start()
    running.conf.write_text(config_text(tmp_path, None, None))
    running.signal(signal.SIGHUP)
    until(lambda: not running.socket_path.exists(), "the socket file is gone")
    until(lambda: not answers(running.port), "the port closed")


def test_sighup_with_a_broken_file_keeps_serving(start: Callable[..., Running]) -> None:
    running = start()
    running.conf.write_text("[metrics]\nport = http\n")
    running.signal(signal.SIGHUP)
    until(lambda: "configuration not reloaded" in running.log.read_text(), "the refusal")
    assert "port: not a whole number" in running.log.read_text()
    assert get(running.port).status == 200


def test_sighup_retries_a_port_that_was_taken(start: Callable[..., Running]) -> None:
    running = start(metrics=False)
    # Made after the fork: the observer must not hold a copy.
    taken = socket.create_server((LOCALHOST, 0))
    port = taken.getsockname()[1]
    try:
        running.conf.write_text(config_text(Path(running.conf).parent, port, running.socket_path))
        running.signal(signal.SIGHUP)
        until(lambda: "cannot serve metrics" in running.log.read_text(), "the failure")
        assert "Address already in use; tried again at the next reload" in running.log.read_text()
    finally:
        taken.close()
    running.signal(signal.SIGHUP)
    until(lambda: answers(port), "the endpoint after the port was freed")
    assert get(port).status == 200


# --- the gauges ----------------------------------------------------------------------------


def test_event_deliveries_by_state_from_the_index(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    index_path = tmp_path / "out" / ".index.sqlite"
    with index.Index(index_path) as listing:
        event = index.NewEvent("e1", "series-complete", 1.0, "1.2", "1.2.3", 1, "{}", ("a", "b"))
        other = index.NewEvent("e2", "study-complete", 2.0, "1.2", "", 1, "{}", ("a", "c"))

        def record(connection: sqlite3.Connection) -> None:
            index.insert_event(connection, event)
            index.insert_event(connection, other)
            connection.execute("UPDATE deliveries SET state = 'failed' WHERE target = 'b'")
            connection.execute("UPDATE deliveries SET state = 'done' WHERE target = 'c'")

        listing.transaction(record, write=True)
    running = start(extra=f"index = {index_path}\n[completion]\n")
    body = get(running.port).body
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert {s.labels["state"]: s.value for s in families["dcmrecvd_event_deliveries"].samples} == {
        "pending": 2,
        "failed": 1,
    }
    document = json.loads(status_of(running.socket_path))
    assert document["event_deliveries"] == {"pending": 2, "failed": 1}


def test_deliveries_unknown_when_the_index_cannot_be_read(tmp_path: Path) -> None:
    loaded = inifile.parse(
        f"[receiver]\noutput-directory = {tmp_path}/out\nindex = {tmp_path}/no/such/i.sqlite\n"
        "[completion]\n",
        "test.conf",
    )
    seen = observer.Observer(snapshots.StandInBoard(Snapshot()), loaded, None)
    assert seen.moment()[1].event_deliveries is None


def test_reserve_in_bytes_is_the_larger_of_size_and_percentage() -> None:
    settings = Settings(free_space_reserve_bytes=5_000, free_space_reserve_percent=2.5)
    assert observer.reserve_bytes(settings, 100_000) == 5_000
    assert observer.reserve_bytes(settings, 1_000_000) == 25_000
    assert observer.reserve_bytes(settings, 1_000_001) == 25_001  # rounded up, as refused
    assert observer.reserve_bytes(settings, None) == 5_000
    assert observer.reserve_bytes(Settings(), 1_000_000) == 0


def test_spool_counts_temporary_files_only(tmp_path: Path) -> None:
    assert observer.spool_temporary_files(str(tmp_path)) == 0
    spool = storage.spool_directory(str(tmp_path))
    spool.mkdir()
    for name in (".dcmrecvd-a.tmp", ".dcmrecvd-b.tmp", "other", ".dcmrecvd-c"):
        (spool / name).touch()
    assert observer.spool_temporary_files(str(tmp_path)) == 2
    spool.chmod(0)
    try:
        if os.geteuid() != 0:  # root reads any directory
            assert observer.spool_temporary_files(str(tmp_path)) is None
    finally:
        spool.chmod(0o755)


def test_measure_leaves_out_a_file_system_it_cannot_query(tmp_path: Path) -> None:
    settings = Settings(output_dir=str(tmp_path / "gone"), free_space_reserve_percent=1.0)
    gauges = observer.measure(settings, 3, None)
    assert (gauges.output_free_bytes, gauges.output_reserve_bytes, gauges.workers) == (
        None,
        0,
        3,
    )
    present = observer.measure(Settings(output_dir=str(tmp_path)), 0, {"pending": 1})
    assert present.output_free_bytes is not None and present.output_free_bytes > 0
    assert present.event_deliveries == {"pending": 1}


# --- what the parent uses ------------------------------------------------------------------


def test_wanted_only_with_something_to_serve() -> None:
    assert not observer.wanted(Settings(), None)
    assert observer.wanted(Settings(metrics_port=9380), None)
    assert observer.wanted(Settings(status_socket="/run/s.sock"), None)
    with socket.create_server((LOCALHOST, 0)) as inherited:
        assert observer.wanted(Settings(), inherited)


def test_the_inherited_metrics_socket_is_taken_by_name(caplog: pytest.LogCaptureFixture) -> None:
    first, second, dicom = (socket.create_server((LOCALHOST, 0)) for _ in range(3))
    try:
        inherited = {"dicom": [dicom], "metrics": [first, second]}
        assert observer.inherited_metrics_socket(inherited) is first
        assert inherited == {"dicom": [dicom]}
        assert second.fileno() == -1  # closed
        assert "ignoring a second inherited socket named metrics" in caplog.text
        assert observer.inherited_metrics_socket(inherited) is None
    finally:
        for sock in (first, second, dicom):
            sock.close()
