"""Debian's HAProxy running the shipped example, etc/haproxy/dcmrecvd.cfg, in front of
two dcmrecvd nodes, and its view of them through the stats socket.

The example is run as shipped: its addresses, stats socket and check interval are
HAProxy environment variables ("${DCMRECVD_NODE1-...}"), which `environment` sets. The
one edit `render` may make is to drop the line that starts every connection to a node
with a PROXY protocol v2 header, for nodes that do not read it.

HAProxy is Debian's haproxy package (/usr/sbin/haproxy), which scripts/peers installs;
`installed()` runs scripts/peers when it is missing and the tests run as root (as in CI),
and skips the test otherwise. Running the example needs root as well: it chroots and
changes user, as a production HAProxy does.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.installed import program as installed_program
from tests.support.net import LOCALHOST, free_port
from tests.support.paths import REPO

HAPROXY = Path("/usr/sbin/haproxy")
EXAMPLE = REPO / "etc" / "haproxy" / "dcmrecvd.cfg"
# The example's backend and server names, which the stats socket reports.
BACKEND = "dcmrecvd"
NODES = ("node1", "node2")
# The example's line that makes every connection to a node, checks included, start with
# a PROXY protocol v2 header.
PROXY_LINE = "default-server send-proxy-v2"
DEADLINE = 30.0
# How often the deadline loops ask again: a polling interval, not synchronisation.
POLL = 0.05

Address = tuple[str, int]


def installed() -> Path:
    """/usr/sbin/haproxy, installed by scripts/peers first when missing (as root);
    skips the test when it is missing and we are not root."""
    return installed_program(HAPROXY, "HAProxy")


def render(text: str, *, proxy_protocol: bool) -> str:
    """The example `text` as HAProxy runs it: as shipped with `proxy_protocol`, else
    without its one PROXY_LINE."""
    lines = text.splitlines(keepends=True)
    found = [i for i, line in enumerate(lines) if line.strip() == PROXY_LINE]
    if len(found) != 1:
        raise ValueError(f"the example has {len(found)} lines {PROXY_LINE!r}, not one")
    if not proxy_protocol:
        del lines[found[0]]
    return "".join(lines)


def environment(
    listen: tuple[Address, ...],
    nodes: tuple[Address, Address],
    stats_socket: Path,
    check_inter: str,
) -> dict[str, str]:
    """The example's variables: where it listens (one address or several), its two
    nodes, its stats socket and the interval between two checks of a node (an HAProxy
    time: "500ms", "2s")."""
    return {
        "DCMRECVD_LISTEN": ",".join(f"{host}:{port}" for host, port in listen),
        "DCMRECVD_NODE1": f"{nodes[0][0]}:{nodes[0][1]}",
        "DCMRECVD_NODE2": f"{nodes[1][0]}:{nodes[1][1]}",
        "DCMRECVD_STATS_SOCKET": str(stats_socket),
        "DCMRECVD_CHECK_INTER": check_inter,
    }


@dataclass(frozen=True)
class Server:
    """One node as HAProxy's `show stat` reports it."""

    name: str
    # UP, DOWN, or on the way: "UP 1/2" (failing), "DOWN 1/2" (recovering).
    status: str
    # The last check's result: L7OK, L4CON (refused), L7TOUT, L7RSP, ...; INI before any.
    check_status: str
    # Connections relayed to it now, and since HAProxy started.
    current: int
    total: int
    # Connections that another node took after this one refused them (option redispatch).
    redispatched: int


def servers(show_stat: str, backend: str = BACKEND) -> dict[str, Server]:
    """The servers of `backend` in the CSV of HAProxy's `show stat`, by name."""
    rows = csv.DictReader(show_stat.removeprefix("# ").splitlines())
    return {
        row["svname"]: Server(
            name=row["svname"],
            status=row["status"],
            check_status=row["check_status"].removeprefix("* "),
            current=int(row["scur"] or 0),
            total=int(row["stot"] or 0),
            redispatched=int(row["wredis"] or 0),
        )
        for row in rows
        if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
    }


@dataclass
class HAProxy:
    address: Address
    proc: subprocess.Popen[bytes]
    stats_socket: Path
    log: Path

    def command(self, line: str) -> str:
        """The answer of the stats socket to one command."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            answer = bytearray()
            while chunk := sock.recv(65536):
                answer += chunk
        return answer.decode()

    def servers(self) -> dict[str, Server]:
        return servers(self.command("show stat"))

    def wait_state(self, server: str, status: str, deadline: float = DEADLINE) -> float:
        """Wait until HAProxy reports `server` as `status` ("UP", "DOWN") after a
        check; the seconds that took. Fails after `deadline` seconds."""
        start = time.monotonic()
        while True:
            seen = self.servers()[server]
            if seen.status == status and seen.check_status != "INI":
                return time.monotonic() - start
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {self.proc.returncode}: {self.text()}")
            if time.monotonic() - start > deadline:
                raise AssertionError(f"{server} not {status} within {deadline} s: {seen}")
            time.sleep(POLL)

    def stop(self) -> int:
        """SIGUSR1 (a soft stop), and its exit status."""
        self.proc.send_signal(signal.SIGUSR1)
        try:
            return self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"haproxy did not stop on SIGUSR1: {self.text()}") from None

    def text(self) -> str:
        """What it logged on stderr: checks and state changes."""
        return self.log.read_text(errors="replace")


def _answering(proxy: HAProxy) -> None:
    """Wait until the stats socket answers: HAProxy binds it together with the frontend,
    so the frontend listens too. (A probe of the frontend would be relayed to a node.)"""
    deadline = time.monotonic() + DEADLINE
    while True:
        if proxy.proc.poll() is not None:
            raise AssertionError(f"haproxy exited with {proxy.proc.returncode}: {proxy.text()}")
        try:
            if "Name: HAProxy" in proxy.command("show info"):
                return
        except OSError:
            pass  # not bound yet
        if time.monotonic() > deadline:
            raise AssertionError(f"haproxy not answering within {DEADLINE} s: {proxy.text()}")
        time.sleep(POLL)


@contextmanager
def haproxy(
    tmp_path: Path,
    nodes: tuple[Address, Address],
    *,
    check_inter: str = "500ms",
    proxy_protocol: bool = False,
    listen: tuple[str, ...] = (LOCALHOST,),
) -> Iterator[HAProxy]:
    """The example running in the foreground on a free port of `listen`'s addresses
    (the first is HAProxy.address) in front of `nodes`, until the block ends; its files
    in tmp_path/haproxy. With `proxy_protocol` every connection to a node starts with a
    PROXY protocol v2 header, as shipped."""
    binary = installed()
    if os.geteuid() != 0:
        pytest.skip("the HAProxy example chroots and changes user, which needs root")
    home = tmp_path / "haproxy"
    home.mkdir()
    config = home / "haproxy.cfg"
    config.write_text(render(EXAMPLE.read_text(), proxy_protocol=proxy_protocol))
    port = free_port()
    address = (listen[0], port)
    stats_socket = home / "stats.sock"
    variables = environment(
        tuple((host, port) for host in listen), nodes, stats_socket, check_inter
    )
    log = home / "haproxy.log"
    with log.open("wb") as output:
        proc = subprocess.Popen(
            [str(binary), "-db", "-f", str(config)],
            env={**os.environ, **variables},
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    proxy = HAProxy(address, proc, stats_socket, log)
    try:
        _answering(proxy)
        yield proxy
    finally:
        if proc.poll() is None:
            proxy.stop()
