"""Network namespaces that a test makes, for senders with source addresses of their own.

On loopback every connection comes from 127.0.0.1, so a test that needs two modalities
at two addresses puts each in a namespace of its own, joined to this one by a veth pair
on a /30 of 198.18.0.0/15 (RFC 2544's benchmarking range, routed nowhere). Root only;
the namespace and the pair go when the block ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Sender:
    name: str
    address: str  # inside the namespace: the source address its connections have
    gateway: str  # this namespace's end of the pair: where it connects to

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """argv run inside the namespace, its output captured."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def sender(number: int) -> Iterator[Sender]:
    """Namespace `number` (1-63): its address 198.18.<number>.2, ours 198.18.<number>.1."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's ip")
    name = f"dcmrecvd-t{os.getpid()}-{number}"
    outer, inner = f"dcr{os.getpid() % 100000}o{number}", f"dcr{os.getpid() % 100000}i{number}"
    gateway, address = f"198.18.{number}.1", f"198.18.{number}.2"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", name)
        _ip("addr", "add", f"{gateway}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("-n", name, "addr", "add", f"{address}/30", "dev", inner)
        _ip("-n", name, "link", "set", inner, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield Sender(name, address, gateway)
    finally:
        subprocess.run(["ip", "link", "del", outer], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
