"""A private systemd-journald for tests: root only, in its own mount namespace.

A tmpfs over /run in that namespace holds journald's sockets, a volatile journal and a
drop-in configuration, so nothing reaches the host's journal, kernel log or audit state,
and the tmpfs vanishes with the namespace. libsystemd always writes to
/run/systemd/journal/socket, so clients run inside the namespace (nsenter) reach it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

_JOURNALD = ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")
# Empty Audit= leaves the kernel's audit state alone: journald 252's default turns the
# host's auditing off. zz- sorts after any drop-in the host may have.
_SETUP = r"""
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/systemd/journald.conf.d
printf '%s\n' '[Journal]' Storage=volatile ReadKMsg=no Audit= ForwardToSyslog=no \
    ForwardToKMsg=no ForwardToConsole=no ForwardToWall=no \
    > /run/systemd/journald.conf.d/zz-dcmrecvd-test.conf
exec "$1"
"""
_START_TIMEOUT = 10.0
_COMMAND_TIMEOUT = 30.0


@dataclass(frozen=True)
class PrivateJournal:
    pid: int

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start argv inside the journal's mount namespace (nsenter execs it: same pid)."""
        return subprocess.Popen(
            ["nsenter", "-t", str(self.pid), "-m", "--", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def entries(self, *matches: str) -> list[dict[str, object]]:
        """Every entry journalctl shows for matches, once journald stored what was sent."""
        # --sync returns only after journald has written everything sent before it.
        self._journalctl("--sync")
        out = self._journalctl("-o", "json", "--all", "--no-pager", *matches)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def _journalctl(self, *args: str) -> str:
        proc = self.run(["journalctl", *args])
        out, err = proc.communicate(timeout=_COMMAND_TIMEOUT)
        if proc.returncode != 0:
            raise AssertionError(f"journalctl {' '.join(args)} failed: {err}")
        return out


def _ready(notify: socket.socket, journald: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT
    while (left := deadline - time.monotonic()) > 0 and journald.poll() is None:
        notify.settimeout(min(left, 0.5))
        try:
            if b"READY=1" in notify.recv(4096).split(b"\n"):
                return True
        except TimeoutError:
            continue
    return False


@contextmanager
def private_journald(directory: Path) -> Iterator[PrivateJournal]:
    """Run a private journald until the block ends; skip the test if it cannot start."""
    if os.geteuid() != 0:
        pytest.skip("a private journald needs root (unshare --mount)")
    journald = next((path for path in _JOURNALD if os.access(path, os.X_OK)), None)
    if journald is None or not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("needs systemd-journald, unshare and nsenter")
    log_path = directory / "journald.log"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
        log_path.open("wb") as log,
    ):
        notify.bind(str(directory / "journald.notify"))
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "NOTIFY_SOCKET": str(directory / "journald.notify"),
            # journald's own messages go to this log, not to the host's kernel log.
            "SYSTEMD_LOG_TARGET": "console",
        }
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SETUP, "sh", journald],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            if not _ready(notify, proc):
                pytest.skip(f"private journald did not start: {log_path.read_text()!r}")
            yield PrivateJournal(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=_COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
