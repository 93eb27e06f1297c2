"""`dcmrecvd status` against a fake status socket (and once against a real observer):
its output, and each error's message and exit status."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

import pytest

from dcmrecvd.apps import dcmrecvd
from dcmrecvd.config import inifile
from dcmrecvd.metrics import status
from dcmrecvd.metrics.exposition import Gauges
from dcmrecvd.service import observer
from tests.support import snapshots
from tests.support.waiting import DEADLINE, ended, until

GAUGES = Gauges(1_000_000, 0, 0, None, 2)
# The unprivileged user of the permission test when the tests run as root.
NOBODY = 65534


def document_line() -> bytes:
    made = status.document(snapshots.busy(), GAUGES, now=snapshots.NOW)
    return json.dumps(made).encode() + b"\n"


@contextmanager
def serving(path: Path, reply: bytes | None) -> Iterator[None]:
    """A status socket at `path` that sends `reply` to one connection and closes it;
    with None, it keeps the connection open without a word until the end."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(DEADLINE)
    done = threading.Event()

    def answer() -> None:
        try:
            connection, _ = server.accept()
        except TimeoutError:
            return  # the command never connected
        with connection:
            if reply is None:
                done.wait(DEADLINE)
            else:
                connection.sendall(reply)

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(DEADLINE)
        server.close()


def run(*argv: str) -> tuple[int, str, str]:
    """`dcmrecvd status ARGV...` in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout
    sys.stdout = out
    try:
        with redirect_stderr(err):
            code = dcmrecvd.main(["status", *argv])
    finally:
        sys.stdout = saved
    return code, out.getvalue(), err.getvalue()


def conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dcmrecvd.conf"
    path.write_text(f"[receiver]\noutput-directory = {tmp_path}\n{text}")
    return path


# --- what it prints ------------------------------------------------------------------------


def test_the_text_from_the_configured_socket(tmp_path: Path) -> None:
    path = tmp_path / "status.sock"
    config = conf(tmp_path, f"[status]\nsocket = {path}\n")
    with serving(path, document_line()):
        code, out, err = run("--config", str(config))
    assert (code, err) == (0, "")
    assert out == status.render(json.loads(document_line()))
    assert "CT01 -> DCMRECVD" in out


def test_json_with_a_socket_named_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "status.sock"
    with serving(path, document_line()):
        code, out, err = run("--socket", str(path), "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == json.loads(document_line())


def test_against_a_real_observer(tmp_path: Path) -> None:
    path = tmp_path / "status.sock"
    config = conf(tmp_path, f"[status]\nsocket = {path}\n")
    board = snapshots.StandInBoard(snapshots.busy())
    pid = observer.spawn(board, inifile.load(config), (), None)
    try:
        until(lambda: run("--config", str(config))[0] == 0, "the observer answers")
        _, out, _ = run("--config", str(config))
        assert "Workers:\n" in out and "Associations in progress (2):" in out
    finally:
        os.kill(pid, signal.SIGTERM)
        assert ended(pid) == 0


# --- errors --------------------------------------------------------------------------------


def test_no_socket_in_the_file(tmp_path: Path) -> None:
    config = conf(tmp_path, "")
    code, out, err = run("--config", str(config))
    assert (code, out) == (dcmrecvd.EXIT_CONFIG, "")
    assert err == (
        f"dcmrecvd: no [status] socket in {config}: set one there (and reload the daemon)"
        " or name it with --socket\n"
    )


def test_no_socket_in_the_embedded_defaults() -> None:
    code, _, err = run("--no-config")
    assert code == dcmrecvd.EXIT_CONFIG
    assert err.startswith("dcmrecvd: no [status] socket in <embedded defaults>:")


def test_a_broken_file_names_its_line(tmp_path: Path) -> None:
    config = conf(tmp_path, "[status]\nsocket = relative.sock\n")
    code, _, err = run("--config", str(config))
    assert code == dcmrecvd.EXIT_CONFIG
    assert err == f"dcmrecvd: {config}:4: socket: not an absolute path: 'relative.sock'\n"


def test_no_such_socket(tmp_path: Path) -> None:
    path = tmp_path / "status.sock"
    code, _, err = run("--socket", str(path))
    assert code == 69
    assert err == (
        f"dcmrecvd: {path}: No such file or directory: is dcmrecvd running?"
        " (systemctl status dcmrecvd)\n"
    )


def test_a_socket_that_nothing_listens_on(tmp_path: Path) -> None:
    path = tmp_path / "status.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left:
        left.bind(str(path))  # the file of a daemon that was killed
    code, _, err = run("--socket", str(path))
    assert code == 69
    assert err == (
        f"dcmrecvd: {path}: Connection refused: is dcmrecvd running? (systemctl status dcmrecvd)\n"
    )


def test_permission_denied(tmp_path: Path) -> None:
    """A real EACCES: as root, from a child that has become nobody; else a mode 0 directory."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    path = locked / "status.sock"
    with serving(path, None):
        if os.geteuid() != 0:
            locked.chmod(0)
            try:
                code, _, err = run("--socket", str(path))
            finally:
                locked.chmod(0o700)
        else:
            code, err = as_nobody("--socket", str(path))
        # Unblock the server's accept: it expects one connection.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
    assert code == dcmrecvd.EXIT_NOPERM
    assert err == f"dcmrecvd: {path}: Permission denied: run as root or as the dcmrecvd user\n"


def as_nobody(*argv: str) -> tuple[int, str]:
    """`dcmrecvd status ARGV...` in a forked child running as nobody: exit status, stderr."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with os.fdopen(writer, "w") as err, redirect_stderr(err):
                code = dcmrecvd.main(["status", *argv])
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader) as err:
        text = err.read()
    return ended(pid), text


def test_no_answer_in_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dcmrecvd, "STATUS_TIMEOUT", 0.2)
    path = tmp_path / "status.sock"
    with serving(path, None):
        code, _, err = run("--socket", str(path))
    assert code == 69
    assert err == f"dcmrecvd: {path}: no answer within 0.2 s\n"


@pytest.mark.parametrize(
    "reply",
    [
        b"",  # closed without a word
        b"HTTP/1.0 400 Bad Request\r\n\r\n",
        b'{"format": 2, "workers": []}\n',
        b"[1, 2]\n",
        document_line()[:100],  # cut short
    ],
    ids=["nothing", "http", "another-format", "not-an-object", "cut-short"],
)
def test_an_answer_that_is_not_the_document(tmp_path: Path, reply: bytes) -> None:
    path = tmp_path / "status.sock"
    with serving(path, reply):
        code, out, err = run("--socket", str(path))
    assert (code, out) == (dcmrecvd.EXIT_PROTOCOL, "")
    assert err == (
        f"dcmrecvd: {path} did not answer with a status document this dcmrecvd can read"
        " (a daemon of another version? restart it after an upgrade)\n"
    )


def test_socket_and_config_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        dcmrecvd.main(["status", "--socket", "/run/s.sock", "--config", "/etc/x.conf"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_daemons_help_names_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        dcmrecvd.main(["--help"])
    assert "dcmrecvd status [--json]" in capsys.readouterr().out
