"""The real dcmrecvd program under test: its configuration, a running daemon with a
test-owned NOTIFY_SOCKET, and the requestors and objects that talk to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from dcmrecvd.service.workers import WORKER_NAME
from tests.support import dicomgen
from tests.support.net import LOCALHOST
from tests.support.peers import wait_listening

DCMRECVD = str(Path(sys.executable).with_name("dcmrecvd"))
VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT = "1.2.840.10008.1.2.1"
DEADLINE = 20.0


def conf(port: int, out: Path, extra: str = "", **receiver: str) -> str:
    lines = [
        "[receiver]",
        f"port = {port}",
        f"bind-address = {receiver.pop('bind_address', LOCALHOST)}",
        f"output-directory = {out}",
        *(f"{key.replace('_', '-')} = {value}" for key, value in receiver.items()),
        "[logging]",
        "destination = stderr",
        extra,
    ]
    return "\n".join(lines) + "\n"


def profile_section(name: str, sop_classes: str) -> str:
    syntaxes = "transfer-syntaxes = ExplicitVRLittleEndian"
    return f"[profile {name}]\nsop-classes = {sop_classes}\n{syntaxes}\n"


class Notifications:
    """A fake NOTIFY_SOCKET: collects what the daemon sends, one datagram a message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[tuple[dict[str, str], int]] = []

    def close(self) -> None:
        self.sock.close()

    def _receive(self, timeout: float) -> None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return
        pid = 0
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = int.from_bytes(value[:4], sys.byteorder)
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append((fields, pid))

    def wait_for(
        self, test: Callable[[dict[str, str]], bool], timeout: float = DEADLINE
    ) -> dict[str, str]:
        """The first message from now on that passes `test`; fails after `timeout`."""
        start = len(self.messages)
        deadline = time.monotonic() + timeout
        while True:
            for fields, _pid in self.messages[start:]:
                if test(fields):
                    return fields
            start = len(self.messages)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such notification within {timeout} s: {self.messages}")
            self._receive(left)


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    notify: Notifications
    conf: Path
    stderr: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "".join(self.stderr)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=DEADLINE)


@contextmanager
def dcmrecvd(
    tmp_path: Path,
    text: str,
    *,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
    activated_on: int | None = None,
) -> Iterator[Daemon]:
    """Run dcmrecvd on config `text` until READY=1. With `activated_on`, `prefix` is
    systemd-socket-activate, which execs dcmrecvd on the first connection to that port
    (as Accept=no does)."""
    path = tmp_path / "dcmrecvd.conf"
    path.write_text(text)
    notify = Notifications(tmp_path / "notify.sock")
    environment = {**os.environ, "NOTIFY_SOCKET": str(notify.path), **(env or {})}
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [*(prefix or []), DCMRECVD, "--config", str(path)],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    daemon = Daemon(proc, notify, path)
    try:
        if activated_on is not None:
            wait_listening(activated_on, proc)
        notify.wait_for(lambda m: m.get("READY") == "1")
        yield daemon
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE)
        notify.close()
        daemon.stderr.append(stderr_path.read_text())


def requestor(port: int, contexts: list[str], *, calling: str = "TESTSCU") -> Association:
    ae = AE(ae_title=calling)
    for uid in contexts:
        ae.add_requested_context(uid, [EXPLICIT])
    return ae.associate(LOCALHOST, port, ae_title="DCMRECVD")


def children(pid: int) -> set[int]:
    """The processes `pid` has forked and not yet reaped (its workers and sidecars)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def workers(pid: int) -> set[int]:
    """The worker processes among `pid`'s children, by the name they give themselves."""
    found = set()
    for child in children(pid):
        try:
            name = Path(f"/proc/{child}/comm").read_text().strip()
        except OSError:
            continue  # ended meanwhile
        if name == WORKER_NAME:
            found.add(child)
    return found


def ct(instance: str) -> Dataset:
    return dicomgen.part10(dicomgen.Spec(dicomgen.CT, instance))
