"""The load: DCMTK storescu processes, one association each, a share of the corpus each."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .receivers import PDU
from .ulclient import TlsFiles

_T = TypeVar("_T")


def shares(items: list[_T], parts: int) -> list[list[_T]]:
    """`items` in `parts` contiguous slices whose sizes differ by one at most."""
    return [items[i * len(items) // parts : (i + 1) * len(items) // parts] for i in range(parts)]


def storescu_argv(
    files: list[Path], port: int, index: int, tls: TlsFiles | None, *, every_class: bool = False
) -> list[str]:
    """storescu for one share: only the contexts its files need (-R), each SOP class
    proposed with the uncompressed transfer syntaxes, Explicit VR LE first (the
    default), so that the Explicit VR LE files go as they are. `every_class`: storescu's
    default proposal instead, 128 contexts of storage SOP classes."""
    argv = ["storescu", *([] if every_class else ["-R"]), "-aet", f"LOAD{index:03d}"]
    argv += ["-aec", "ANY-SCP"]
    argv += ["-ta", "120", "-pdu", str(PDU)]
    if tls is not None:
        argv += ["+tls", str(tls.key), str(tls.certificate), "+cf", str(tls.certificate)]
    return [*argv, "127.0.0.1", str(port), *map(str, files)]


def log_errors(text: str) -> list[str]:
    """storescu's error and fatal lines: a refused C-STORE is one, whatever the exit code."""
    return [line.strip() for line in text.splitlines() if line.startswith(("E:", "F:"))]


@dataclass(frozen=True)
class Pushed:
    """The outcome of one push."""

    started: float  # time.perf_counter() when the first storescu was started
    ended: float  # when the last one had exited
    sender_cpu_s: float
    errors: list[str]

    @property
    def wall_s(self) -> float:
        return self.ended - self.started


def push(
    files: list[Path],
    port: int,
    associations: int,
    *,
    tls: TlsFiles | None,
    logdir: Path,
    timeout: float,
    every_class: bool = False,
) -> Pushed:
    """Send `files` over `associations` concurrent storescu processes; wait for them all."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    logs = [logdir / f"storescu{index:03d}.log" for index in range(associations)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    processes = []
    for index, share in enumerate(shares(files, associations)):
        with open(logs[index], "wb") as log:
            processes.append(
                subprocess.Popen(
                    storescu_argv(share, port, index, tls, every_class=every_class),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )
    killed: list[int] = []

    def kill() -> None:
        for index, process in enumerate(processes):
            if process.poll() is None:
                killed.append(index)
                os.killpg(process.pid, signal.SIGKILL)

    # A blocking wait returns the moment a process ends; Popen.wait(timeout) would poll
    # every 50 ms and add up to that to the wall time. The timer enforces the timeout.
    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    for process in processes:
        process.wait()
    ended = time.perf_counter()
    watchdog.cancel()
    errors = [f"storescu {index}: killed after {timeout} s" for index in killed]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for index, (process, log_path) in enumerate(zip(processes, logs, strict=True)):
        if process.returncode != 0:
            errors.append(f"storescu {index}: exit code {process.returncode}")
        bad = log_errors(log_path.read_text(errors="replace"))
        if bad:
            errors.append(f"storescu {index}: {len(bad)} error lines, first: {bad[0][:200]}")
    # Only the storescu processes end while this runs: the children's rusage is theirs.
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Pushed(started, ended, cpu, errors)
