"""A Debian tree booted with systemd-nspawn, driven from the host with nsenter.

The container shares the host's network, so what it listens on is reachable at
127.0.0.1 from the host (the tests keep every port on 127.0.0.1). There is no D-Bus:
systemctl reaches the container's systemd over its private socket.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
COMMAND_TIMEOUT = 120.0
BOOT_TIMEOUT = 60.0
# After the first SIGTERM nspawn asks the container to power off; a second one ends it.
POWEROFF_TIMEOUT = 30.0

_T = TypeVar("_T")


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while a container was up: pytest stops the run and tears down."""


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(f"signal {signum}")


def wait_for(what: str, probe: Callable[[], _T | None], timeout: float = 30.0) -> _T:
    """Poll `probe` until it returns something other than None; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@dataclass(frozen=True)
class Container:
    tree: Path
    # The host's pid of the container's PID 1 (systemd).
    pid: int

    def run(
        self, *argv: str, check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the container as root with a clean environment."""
        result = subprocess.run(
            [
                "nsenter",
                f"--target={self.pid}",
                "--all",
                "env",
                "-i",
                f"PATH={CLEAN_PATH}",
                "LC_ALL=C.UTF-8",
                "DEBIAN_FRONTEND=noninteractive",
                *argv,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def show(self, unit: str, prop: str) -> str:
        return self.run("systemctl", "show", "--value", f"--property={prop}", unit).stdout.strip()

    def path(self, inside: str) -> Path:
        """The host path of a file in the container."""
        return self.tree / inside.lstrip("/")


def _container_init(nspawn: int) -> int | None:
    # nspawn's child that is PID 1 in its own pid namespace, once it has become systemd
    # (before, it is still nspawn setting up the container's mounts).
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if (
            fields.get("PPid") == str(nspawn)
            and fields.get("NSpid", "").split()[-1:] == ["1"]
            and fields.get("Name", "").strip() == "systemd"
        ):
            return int(entry.name)
    return None


def _stop(nspawn: subprocess.Popen[bytes], init: int | None) -> None:
    for _ in range(2):
        if nspawn.poll() is not None:
            break
        nspawn.send_signal(signal.SIGTERM)
        try:
            nspawn.wait(timeout=POWEROFF_TIMEOUT)
        except subprocess.TimeoutExpired:
            continue
    if nspawn.poll() is None:
        if init is not None:
            # The end of PID 1 ends every process of the container.
            os.kill(init, signal.SIGKILL)
        nspawn.kill()
        nspawn.wait(timeout=POWEROFF_TIMEOUT)


@contextmanager
def booted(tree: Path, binds: dict[Path, str], log: Path) -> Iterator[Container]:
    """Boot `tree` (read-only bind mounts host path -> container path) until the block ends."""
    argv = [
        # If the test process dies without cleaning up (SIGKILL), nspawn gets SIGTERM
        # and powers the container off.
        "setpriv",
        "--pdeathsig=TERM",
        "--",
        "systemd-nspawn",
        # No machined or D-Bus on the host: run in our own cgroup, register nowhere.
        "--keep-unit",
        "--register=no",
        f"--directory={tree}",
        *(f"--bind-ro={host}:{inside}" for host, inside in binds.items()),
        "--console=pipe",
        "--boot",
    ]
    with log.open("wb") as out:
        nspawn = subprocess.Popen(
            argv,
            env={"PATH": CLEAN_PATH},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    init = None
    # A SIGTERM (a CI timeout, say) unwinds through the finally below instead of
    # leaving the container running.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        init = wait_for(
            "the container's systemd",
            lambda: _container_init(nspawn.pid) if nspawn.poll() is None else -1,
            BOOT_TIMEOUT,
        )
        if init == -1:
            raise AssertionError(f"systemd-nspawn exited early: {log.read_text()}")
        container = Container(tree, init)
        # Without D-Bus, systemctl needs systemd's private socket, made early in boot.
        wait_for(
            "systemd's private socket",
            lambda: True if Path(f"/proc/{init}/root/run/systemd/private").exists() else None,
            BOOT_TIMEOUT,
        )
        state = container.run(
            "systemctl", "is-system-running", "--wait", check=False, timeout=BOOT_TIMEOUT
        ).stdout.strip()
        if state != "running":
            failed = container.run("systemctl", "--failed", "--no-legend", check=False).stdout
            raise AssertionError(f"container booted to {state!r}; failed units: {failed}")
        yield container
    finally:
        _stop(nspawn, init)
        signal.signal(signal.SIGTERM, previous)
