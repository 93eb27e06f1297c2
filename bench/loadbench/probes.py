"""Probes run in the same window as the receivers: per-instance latency under load, and
the machine's physical limits (durable files on the receivers' file system, loopback TCP).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from . import ulclient
from .corpus import Corpus, noise
from .stats import percentile
from .ulclient import TlsFiles

# --- latency under load ----------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One probe C-STORE: when its dataset's last byte was sent, when the RSP was read."""

    sop_instance_uid: str
    sent: float
    answered: float
    status: int

    @property
    def latency_ms(self) -> float:
        return (self.answered - self.sent) * 1000


class LatencyProbe(threading.Thread):
    """An association of its own that, while the load runs, stores the probe corpus's
    instances one at a time, `interval` s apart, until told to stop.

    It is paced so that it measures the load more than it adds to it: 20 ms apart, it
    sends at most 50 instances a second, where one storescu association sends hundreds.
    """

    def __init__(self, pool: Corpus, port: int, tls: TlsFiles | None, interval: float) -> None:
        super().__init__(daemon=True)
        self.pool = pool
        self.port = port
        self.tls = tls
        self.interval = interval
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self.exhausted = False
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            entries = self.pool.manifest.entries
            classes = [entry.sop_class_uid for entry in entries]
            with ulclient.Association(self.port, classes, self.tls) as association:
                for entry in entries:
                    if self._halt.wait(self.interval):
                        return
                    dataset = ulclient.dataset_of_part10(self.pool.directory / entry.file)
                    status, sent, answered = association.store(
                        entry.sop_class_uid, entry.sop_instance_uid, dataset
                    )
                    self.samples.append(Sample(entry.sop_instance_uid, sent, answered, status))
                    if status != 0:
                        self.errors.append(f"probe: status {status:#06x} for {entry.file}")
                self.exhausted = True
        except (OSError, ulclient.AssociationError) as exc:
            self.errors.append(f"probe: {type(exc).__name__}: {exc}")

    def finish(self) -> None:
        self._halt.set()
        self.join()

    def stored(self) -> list[str]:
        """SOP Instance UIDs the receiver answered with Success."""
        return [sample.sop_instance_uid for sample in self.samples if sample.status == 0]


def under_load(samples: list[Sample], ended: float) -> list[float]:
    """Latencies (ms) of the samples answered before `ended` (time.perf_counter()), when
    the load had ended."""
    return [sample.latency_ms for sample in samples if sample.answered <= ended]


def stored_under_load(samples: list[Sample], ended: float) -> set[str]:
    """SOP Instance UIDs stored with Success and answered before `ended`."""
    return {s.sop_instance_uid for s in samples if s.status == 0 and s.answered <= ended}


# --- durable files ---------------------------------------------------------------------


@dataclass(frozen=True)
class DiskRate:
    """Durable files made by `writers` concurrent writers."""

    writers: int
    files: int
    file_bytes: int
    wall_s: float
    p50_ms: float
    p99_ms: float

    @property
    def files_per_s(self) -> float:
        return self.files / self.wall_s

    @property
    def mb_per_s(self) -> float:
        return self.files * self.file_bytes / 1e6 / self.wall_s


def _write_durably(
    directory: Path, names: list[str], data: bytes, start: threading.Barrier, took: list[float]
) -> None:
    """What a receiver must do per object before Success: write a temporary file,
    fsync it, rename it into place, fsync the directory."""
    directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        start.wait()
        for name in names:
            begin = time.perf_counter()
            temporary = directory / f".{name}.tmp"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, directory / name)
            os.fsync(directory_fd)
            took.append(time.perf_counter() - begin)
    finally:
        os.close(directory_fd)


def durable_file_rate(directory: Path, writers: int, files: int, file_bytes: int) -> DiskRate:
    """Rate at which `writers` threads make `files` durable files of `file_bytes` in
    `directory` (created, left with the files in it)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = noise(file_bytes, 0, "disk-probe")
    names = [f"f{index:06d}" for index in range(files)]
    took: list[float] = []
    start = threading.Barrier(writers + 1)
    threads = [
        threading.Thread(
            target=_write_durably,
            args=(directory, names[i * files // writers : (i + 1) * files // writers], data),
            kwargs={"start": start, "took": took},
        )
        for i in range(writers)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    begin = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begin
    if len(took) != files:
        raise RuntimeError(f"disk probe: {files - len(took)} of {files} files failed")
    milliseconds = [t * 1000 for t in took]
    return DiskRate(
        writers,
        files,
        file_bytes,
        wall,
        percentile(milliseconds, 50),
        percentile(milliseconds, 99),
    )


# --- loopback TCP ----------------------------------------------------------------------

CHUNK = 128 * 1024


def _sink(listener: socket.socket, total: int, tls: TlsFiles | None, done: Connection) -> None:
    """Child process: read `total` bytes from one connection, then answer one byte."""
    connection, _ = listener.accept()
    if tls is not None:
        connection = tls.server_context().wrap_socket(connection, server_side=True)
    buffer = memoryview(bytearray(1 << 20))
    left = total
    while left:
        got = connection.recv_into(buffer, min(left, len(buffer)))
        if not got:
            break
        left -= got
    connection.sendall(b"k")
    done.send(left)
    connection.close()


@dataclass(frozen=True)
class LoopbackRate:
    tls: bool
    bytes: int
    wall_s: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.wall_s


def loopback_rate(total: int, tls: TlsFiles | None = None) -> LoopbackRate:
    """One TCP stream over 127.0.0.1 from this process to a child process, 128 KiB
    writes, optionally TLS; from the first byte until the sink acknowledges the last."""
    total = max(CHUNK, total // CHUNK * CHUNK)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    receiving, reporting = multiprocessing.get_context("fork").Pipe(duplex=False)
    sink = multiprocessing.get_context("fork").Process(
        target=_sink, args=(listener, total, tls, reporting), daemon=True
    )
    sink.start()
    listener.close()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as raw:
            stream: socket.socket = raw
            if tls is not None:
                stream = tls.client_context().wrap_socket(raw)
            chunk = noise(CHUNK, 0, "loopback-probe")
            begin = time.perf_counter()
            for _ in range(total // CHUNK):
                stream.sendall(chunk)
            if stream.recv(1) != b"k":
                raise RuntimeError("loopback probe: the sink did not acknowledge")
            wall = time.perf_counter() - begin
        if receiving.recv() != 0:
            raise RuntimeError("loopback probe: the sink read less than was sent")
    finally:
        sink.join(30)
    return LoopbackRate(tls is not None, total, wall)
