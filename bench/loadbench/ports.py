"""Ports for the benchmarks' receivers: a free one, and waiting until it listens."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listening(port: int) -> bool:
    """Whether a socket listens on TCP `port`, from /proc: connecting would start an
    association (and make storescp --fork fork a child) before the benchmark does."""
    suffix = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    # fields[1]: local address:port in hex; fields[3]: state, 0A = LISTEN.
                    if fields[1].endswith(suffix) and fields[3] == "0A":
                        return True
        except OSError:
            continue
    return False


def wait_listening(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60
) -> None:
    """Return once 127.0.0.1:`port` accepts; SystemExit if `proc` ends or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"receiver exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # polling interval of the deadline loop
    raise SystemExit(f"receiver not listening on {port} after {timeout} s")
