"""Tests for dcmrecvd.systemd: socket activation, sd_notify, watchdog, journal."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from systemd import journal

from dcmrecvd.service.systemd import (
    Notifier,
    SystemdError,
    inherited_sockets,
    journal_handler,
    under_systemd,
    watchdog_interval,
)
from tests.support.journald import private_journald
from tests.support.paths import REPO

TIMEOUT = 10.0
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
DCMRECVD_FIELDS = {
    "DICOM_CALLING_AET": "CT01",
    "DICOM_CALLED_AET": "DCMRECVD",
    "PEER_ADDR": "127.0.0.1:40000",
    "ASSOC_ID": "7",
    "SOP_CLASS_UID": "1.2.840.10008.5.1.4.1.1.2",
    "SOP_INSTANCE_UID": "1.2.3.4",
    "DIMSE_STATUS": "0x0000",
    "PATH": "/var/lib/dcmrecvd/CT.1.2.3.4",
    "BYTES": 1234,
    "DURATION_MS": 5.5,
    "REJECT_REASON": "none",
}
# Keys that journald would drop: lower case, mixed case, leading '_' or digit, too long.
INVALID_FIELDS = {
    "lower_key": "1",
    "Mixed_Case": "2",
    "_PRIVATE": "3",
    "9LIVES": "4",
    "L" * 65: "5",
}


def child_env() -> dict[str, str]:
    """A clean environment for child interpreters: no LISTEN_*/NOTIFY_SOCKET from ours."""
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}


# ---------------------------------------------------------------- inherited_sockets


@pytest.fixture
def clean_listen_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*LISTEN_VARIABLES, "LISTEN_PIDFDID"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("clean_listen_env")
def test_not_socket_activated_gives_nothing() -> None:
    assert inherited_sockets() == {}


@pytest.mark.usefixtures("clean_listen_env")
def test_variables_for_another_pid_are_ignored_and_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "dicom")
    assert inherited_sockets() == {}
    assert not set(LISTEN_VARIABLES) & set(os.environ)


@pytest.mark.usefixtures("clean_listen_env")
@pytest.mark.parametrize(
    ("pid", "fds", "message"),
    [
        ("12x", "1", "LISTEN_PID='12x'"),
        (None, "+1", "LISTEN_FDS='+1'"),
        (None, " 1", "LISTEN_FDS=' 1'"),
    ],
)
def test_malformed_variables_are_refused(
    monkeypatch: pytest.MonkeyPatch, pid: str | None, fds: str, message: str
) -> None:
    monkeypatch.setenv("LISTEN_PID", pid or str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", fds)
    with pytest.raises(SystemdError, match=re.escape(message)):
        inherited_sockets()
    assert not set(LISTEN_VARIABLES) & set(os.environ)


def read_until(proc: subprocess.Popen[bytes], marker: bytes) -> None:
    """Read proc's stderr until marker appears, with a deadline."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + TIMEOUT
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} on stderr: {seen!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"stderr closed before {marker!r}: {seen!r}"
            seen += chunk


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; killed at teardown if a failed assertion left them running."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def socket_activate(
    spawned: list[subprocess.Popen[bytes]], port: int, child: str, *options: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "systemd-socket-activate",
            *options,
            "-l",
            f"127.0.0.1:{port}",
            "--fdname=dicom",
            "-E",
            "PYTHONPATH",
            sys.executable,
            "-c",
            child,
        ],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    spawned.append(proc)
    read_until(proc, b"Listening on")
    return proc


REPORT_CHILD = r"""
import json, os, socket
from dcmrecvd.service.systemd import inherited_sockets
names = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
before = {name: os.environ.get(name) for name in names}
sockets = inherited_sockets()
report = {
    "pid": os.getpid(),
    "before": before,
    "after": {name: os.environ.get(name) for name in names},
    "sockets": {
        name: [
            {
                "fd": s.fileno(),
                "family": s.family.name,
                "type": s.type.name,
                "listening": s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
                "address": list(s.getsockname()),
                "inheritable": os.get_inheritable(s.fileno()),
            }
            for s in group
        ]
        for name, group in sockets.items()
    },
}
conn, _ = sockets["dicom"][0].accept()
with conn:
    conn.sendall(b"accepted")
print(json.dumps(report))
"""


@pytest.mark.slow
def test_socket_activated_child_gets_its_listening_socket(
    spawned: list[subprocess.Popen[bytes]], port: int
) -> None:
    proc = socket_activate(spawned, port, REPORT_CHILD)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as conn:
        conn.settimeout(TIMEOUT)
        greeting = conn.recv(100)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert greeting == b"accepted"
    # systemd-socket-activate execs the child, so LISTEN_PID is the pid we started.
    assert report["before"] == {
        "LISTEN_PID": str(proc.pid),
        "LISTEN_FDS": "1",
        "LISTEN_FDNAMES": "dicom",
    }
    assert report["after"] == dict.fromkeys(LISTEN_VARIABLES)
    assert report["sockets"] == {
        "dicom": [
            {
                "fd": 3,
                "family": "AF_INET",
                "type": "SOCK_STREAM",
                "listening": 1,
                "address": ["127.0.0.1", port],
                "inheritable": False,
            }
        ]
    }


ERROR_CHILD = r"""
import json, os
from dcmrecvd.service.systemd import SystemdError, inherited_sockets
try:
    inherited_sockets()
except SystemdError as e:
    print(json.dumps({"error": str(e), "fd3_open": os.path.exists("/proc/self/fd/3")}))
"""


@pytest.mark.slow
def test_socket_activated_datagram_socket_is_refused(
    spawned: list[subprocess.Popen[bytes]], port: int
) -> None:
    proc = socket_activate(spawned, port, ERROR_CHILD, "--datagram")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(b"wake", ("127.0.0.1", port))
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert json.loads(out) == {
        "error": "fd 3 (name 'dicom') is a SOCK_DGRAM AF_INET socket, "
        "not a listening stream socket (use ListenStream=)",
        "fd3_open": True,
    }


# The child moves the descriptors it made to 3, 4, ... and claims them for itself, as a
# service manager would, then reports what inherited_sockets made of them.
ARRANGE_CHILD = r"""
import fcntl, json, os, socket, sys, tempfile
from dcmrecvd.service.systemd import SystemdError, inherited_sockets

def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s

def bound():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s

def udp():
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

def unix_listener():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0dcmrecvd-test-" + str(os.getpid()))
    s.listen()
    return s

def regular():
    return tempfile.TemporaryFile()

objects = [globals()[kind]() for kind in sys.argv[1].split(",")]
high = [fcntl.fcntl(o.fileno(), fcntl.F_DUPFD, 100) for o in objects]
for o in objects:
    o.close()
for fd, copy in enumerate(high, start=3):
    os.dup2(copy, fd)
    os.close(copy)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = sys.argv[2]
if sys.argv[3] != "-":
    os.environ["LISTEN_FDNAMES"] = sys.argv[3]
count = int(sys.argv[2])
try:
    sockets = inherited_sockets()
except SystemdError as e:
    report = {"error": str(e)}
else:
    report = {
        name: [[s.fileno(), s.family.name, os.get_inheritable(s.fileno())] for s in group]
        for name, group in sockets.items()
    }
report["open"] = [fd for fd in range(3, 3 + count) if os.path.exists(f"/proc/self/fd/{fd}")]
print(json.dumps(report))
"""


def arrange(kinds: str, count: int, names: str | None) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", ARRANGE_CHILD, kinds, str(count), names or "-"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, object] = json.loads(proc.stdout)
    return report


@pytest.mark.slow
def test_sockets_are_grouped_by_name_in_fd_order() -> None:
    assert arrange("listener,listener,unix_listener", 3, "dicom:tls:dicom") == {
        "dicom": [[3, "AF_INET", False], [5, "AF_UNIX", False]],
        "tls": [[4, "AF_INET", False]],
        "open": [3, 4, 5],
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (None, {"unknown": [[3, "AF_INET", False], [4, "AF_INET", False]]}),
        (":b", {"unknown": [[3, "AF_INET", False]], "b": [[4, "AF_INET", False]]}),
    ],
)
def test_missing_names_are_unknown(names: str | None, expected: dict[str, object]) -> None:
    assert arrange("listener,listener", 2, names) == {**expected, "open": [3, 4]}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kinds", "count", "names", "error"),
    [
        (
            "regular",
            1,
            "dicom",
            "fd 3 (name 'dicom') is a regular file, not a listening stream socket",
        ),
        (
            "bound",
            1,
            "dicom",
            "fd 3 (name 'dicom') is a SOCK_STREAM AF_INET socket that is not listening",
        ),
        (
            "listener,udp",
            2,
            "dicom:dicom",
            "fd 4 (name 'dicom') is a SOCK_DGRAM AF_INET socket, "
            "not a listening stream socket (use ListenStream=)",
        ),
        (
            "listener",
            2,
            "a:b",
            "fd 4 (name 'b') passed by systemd is not open: Bad file descriptor",
        ),
        ("listener,listener", 2, "a:b:c", "LISTEN_FDNAMES='a:b:c' has 3 names for LISTEN_FDS=2"),
    ],
)
def test_unusable_descriptors_are_refused_and_left_open(
    kinds: str, count: int, names: str, error: str
) -> None:
    report = arrange(kinds, count, names)
    assert report["error"] == error
    assert report["open"] == list(range(3, 3 + len(kinds.split(","))))


# ---------------------------------------------------------------- Notifier


class NotifySocket:
    """The service manager's end of NOTIFY_SOCKET, owned by the test."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(TIMEOUT)

    def receive(self) -> tuple[str, int]:
        """The next message and the pid the kernel says sent it."""
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pids = [
            struct.unpack("3i", payload)[0]
            for level, kind, payload in ancillary
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
        ]
        assert len(pids) == 1
        return data.decode(), pids[0]

    def pending(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    path = tmp_path / "notify"
    receiver = NotifySocket(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    with receiver.sock:
        yield receiver


def test_each_notification_is_exact(notify_socket: NotifySocket) -> None:
    notifier = Notifier.from_environment()
    notifier.ready()
    notifier.status("Listening on port 104")
    notifier.watchdog()
    notifier.stopping()
    notifier.send(STATUS="draining", ERRNO="0")
    received = [notify_socket.receive() for _ in range(5)]
    assert received == [
        ("READY=1", os.getpid()),
        ("STATUS=Listening on port 104", os.getpid()),
        ("WATCHDOG=1", os.getpid()),
        ("STOPPING=1", os.getpid()),
        ("STATUS=draining\nERRNO=0", os.getpid()),
    ]
    assert not notify_socket.pending()


def test_reloading_carries_the_monotonic_clock(notify_socket: NotifySocket) -> None:
    notifier = Notifier.from_environment()
    before = time.monotonic_ns() // 1000
    notifier.reloading()
    after = time.monotonic_ns() // 1000
    message, _ = notify_socket.receive()
    reloading, monotonic = message.split("\n")
    name, _, usec = monotonic.partition("=")
    assert reloading == "RELOADING=1"
    assert name == "MONOTONIC_USEC"
    assert before <= int(usec) <= after


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"dcmrecvd-test-{uuid.uuid4()}"
    receiver = NotifySocket("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    with receiver.sock:
        Notifier.from_environment().ready()
        assert receiver.receive() == ("READY=1", os.getpid())


def test_status_cannot_inject_assignments(notify_socket: NotifySocket) -> None:
    Notifier.from_environment().status("calling AE X\nSTOPPING=1")
    assert notify_socket.receive()[0] == "STATUS=calling AE X STOPPING=1"


@pytest.mark.parametrize(
    "fields", [{}, {"ready": "1"}, {"READY": "1\nSTOPPING=1"}, {"": "1"}, {"1X": "1"}]
)
def test_send_refuses_what_is_not_an_assignment(
    notify_socket: NotifySocket, fields: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        Notifier.from_environment().send(**fields)
    assert not notify_socket.pending()


def test_without_notify_socket_nothing_happens(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier.from_environment()
    notifier.ready()
    notifier.reloading()
    notifier.watchdog()
    assert caplog.records == []


@pytest.mark.parametrize("address", ["missing", "vsock:2:1234", "relative/path", "@"])
def test_failures_warn_once_and_never_raise(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    address: str,
) -> None:
    monkeypatch.setenv(
        "NOTIFY_SOCKET", str(tmp_path / "absent") if address == "missing" else address
    )
    caplog.set_level(logging.DEBUG, logger="dcmrecvd.systemd")
    notifier = Notifier.from_environment()
    notifier.ready()
    notifier.watchdog()
    notifier.stopping()
    levels = [r.levelno for r in caplog.records if r.name == "dcmrecvd.systemd"]
    assert levels.count(logging.WARNING) == 1
    assert levels[0] == logging.WARNING


def test_a_full_queue_does_not_block_or_raise(
    notify_socket: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_environment()
    start = time.monotonic()
    # Nobody reads: the receiver's queue fills, and a send then times out.
    for _ in range(100_000):
        notifier.watchdog()
        if caplog.records:
            break
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "could not notify systemd (WATCHDOG=1)" in caplog.records[0].getMessage()
    assert time.monotonic() - start < TIMEOUT


@pytest.mark.slow
def test_a_forked_child_does_not_notify(notify_socket: NotifySocket) -> None:
    notifier = Notifier.from_environment()
    child = os.fork()
    if child == 0:
        try:
            notifier.status("child")
        finally:
            os._exit(0)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    notifier.status("parent")
    # Datagrams keep their order: had the child sent, its message would come first.
    assert notify_socket.receive() == ("STATUS=parent", os.getpid())
    assert not notify_socket.pending()


# ---------------------------------------------------------------- watchdog_interval


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "other", None),
        ("1000", None, 0.0005),
        (None, "self", None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            pids = {"self": os.getpid(), "other": os.getpid() + 1}
            monkeypatch.setenv(name, str(pids.get(value, value)))
    assert watchdog_interval() == expected


@pytest.mark.parametrize(
    ("usec", "pid"), [("30s", None), ("0", None), ("-5", None), ("30000000", "x")]
)
def test_watchdog_interval_refuses_malformed_values(
    monkeypatch: pytest.MonkeyPatch, usec: str, pid: str | None
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    with pytest.raises(SystemdError, match="WATCHDOG_"):
        watchdog_interval()


# ---------------------------------------------------------------- under_systemd


def test_under_systemd_when_stderr_is_the_journal_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert under_systemd()


@pytest.mark.parametrize("stream", [None, "", "garbage", "1:", ":2", "other"])
def test_not_under_systemd(monkeypatch: pytest.MonkeyPatch, stream: str | None) -> None:
    st = os.fstat(2)
    if stream is None:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    else:
        # "other": the inherited variable names a stream that is not our stderr.
        other = f"{st.st_dev}:{st.st_ino + 1}"
        monkeypatch.setenv("JOURNAL_STREAM", other if stream == "other" else stream)
    assert not under_systemd()


# ---------------------------------------------------------------- journal_handler


@pytest.fixture
def journal_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("dcmrecvd.test.journal")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger
    logger.handlers.clear()


def test_exactly_the_upper_case_extra_keys_are_sent(
    monkeypatch: pytest.MonkeyPatch, journal_logger: logging.Logger
) -> None:
    sent: list[tuple[str, dict[str, object]]] = []

    def fake_send(message: str, /, **fields: object) -> None:
        sent.append((message, fields))

    monkeypatch.setattr(journal, "send", fake_send)
    journal_logger.addHandler(journal_handler())
    journal_logger.info("stored %s", "1.2.3.4", extra={**DCMRECVD_FIELDS, **INVALID_FIELDS})
    [(message, fields)] = sent
    assert message == "stored 1.2.3.4"
    handler_fields = {
        "PRIORITY",
        "LOGGER",
        "THREAD_NAME",
        "PROCESS_NAME",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
        "CODE_ARGS",
        "SYSLOG_IDENTIFIER",
    }
    assert set(fields) == handler_fields | set(DCMRECVD_FIELDS)
    assert {name: fields[name] for name in DCMRECVD_FIELDS} == DCMRECVD_FIELDS
    assert fields["SYSLOG_IDENTIFIER"] == "dcmrecvd"
    assert fields["PRIORITY"] == "6"
    assert fields["LOGGER"] == "dcmrecvd.test.journal"


def test_identifier_is_configurable(
    monkeypatch: pytest.MonkeyPatch, journal_logger: logging.Logger
) -> None:
    identifiers: list[object] = []
    monkeypatch.setattr(
        journal, "send", lambda message, /, **f: identifiers.append(f["SYSLOG_IDENTIFIER"])
    )
    journal_logger.addHandler(journal_handler("dcmrecvd-test"))
    journal_logger.warning("x")
    assert identifiers == ["dcmrecvd-test"]


LOGGING_CHILD = r"""
import json, logging, sys
from dcmrecvd.service.systemd import journal_handler
log = logging.getLogger("dcmrecvd.scp")
log.propagate = False
log.setLevel(logging.INFO)
log.addHandler(journal_handler())
fields = json.loads(sys.argv[1])
log.info("stored %s", fields["SOP_INSTANCE_UID"], extra=fields)
try:
    1 / 0
except ZeroDivisionError:
    log.exception("association %s aborted", fields["ASSOC_ID"], extra={"DICOM_CALLING_AET": "CT02"})
"""


@pytest.mark.slow
def test_fields_reach_a_real_journald(tmp_path: Path) -> None:
    with private_journald(tmp_path) as private:
        extra = {**DCMRECVD_FIELDS, **INVALID_FIELDS}
        child = private.run([sys.executable, "-c", LOGGING_CHILD, json.dumps(extra)], child_env())
        _, err = child.communicate(timeout=TIMEOUT)
        assert child.returncode == 0, err
        ours = private.entries("SYSLOG_IDENTIFIER=dcmrecvd")
        by_ct01 = private.entries("DICOM_CALLING_AET=CT01")
        by_ct02 = private.entries("DICOM_CALLING_AET=CT02", "PRIORITY=3")
        nobody = private.entries("DICOM_CALLING_AET=CT03")
    assert [entry["MESSAGE"] for entry in ours] == ["stored 1.2.3.4", by_ct02[0]["MESSAGE"]]
    stored = ours[0]
    assert by_ct01 == [stored]
    assert {name: stored[name] for name in DCMRECVD_FIELDS} == {
        name: str(value) for name, value in DCMRECVD_FIELDS.items()
    }
    assert stored["SYSLOG_IDENTIFIER"] == "dcmrecvd"
    assert stored["PRIORITY"] == "6"
    assert stored["LOGGER"] == "dcmrecvd.scp"
    assert stored["_TRANSPORT"] == "journal"
    assert stored["_PID"] == str(child.pid)
    assert not set(INVALID_FIELDS) & set(stored)
    assert "msg" not in stored
    [aborted] = by_ct02
    assert str(aborted["MESSAGE"]).startswith("association 7 aborted\nTraceback")
    assert "ZeroDivisionError" in str(aborted["EXCEPTION_TEXT"])
    assert nobody == []
