#!/usr/bin/env python3
"""What the PROXY protocol costs an association: dcmrecvd with `proxy-protocol = off`
against the same program with `proxy-protocol = required`, in one window.

Each run starts dcmrecvd (this virtual environment's, default workers) and opens
--associations short associations from --threads plain-socket clients at once: connect,
(a PROXY v2 header from a made-up 10.x address, in its own segment as HAProxy sends it,
or with --one-segment together with what follows, so that the clients do the same work
in both modes; or, with --store FILE, DCMTK's storescu storing FILE through an HAProxy
that sends the header only in the required runs),
A-ASSOCIATE-RQ for Verification, A-ASSOCIATE-AC, A-RELEASE-RQ, A-RELEASE-RP, close. No
pynetdicom requestor runs in this process to compete for the CPU. Runs alternate, who
goes first rotating; the table gives medians over --repeat runs of associations per
second, the per-association time (connect to release answered, p50 and p95) and the
receiver process tree's CPU per association, and the ratios required/off.

    .venv/bin/python bench/proxy_cost.py --associations 2000 --threads 4 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from idle import read_exactly, request, tree_cpu
from loadbench.ports import free_port, wait_listening

SIGNATURE_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
RELEASE_RQ = struct.pack(">BBIHH", 0x05, 0, 4, 0, 0)
MODES = ("off", "required")


def header(number: int) -> bytes:
    """A v2 PROXY header for TCP over IPv4 from 10.x.y.z, to 127.0.0.1:104."""
    source = bytes([10, (number >> 16) & 0xFF, (number >> 8) & 0xFF, number & 0xFF or 1])
    body = source + bytes([127, 0, 0, 1]) + struct.pack(">HH", 40000 + number % 20000, 104)
    return SIGNATURE_V2 + bytes([0x21, 0x11]) + struct.pack(">H", len(body)) + body


def answer(sock: socket.socket) -> int:
    kind, _, length = struct.unpack(">BBI", read_exactly(sock, 6))
    read_exactly(sock, length)
    return int(kind)


def one_association(port: int, rq: bytes, proxy: bytes | None, one_segment: bool) -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy is not None and one_segment:
            sock.sendall(proxy + rq)
        else:
            if proxy is not None:
                sock.sendall(proxy)
            sock.sendall(rq)
        if (kind := answer(sock)) != 0x02:
            raise ConnectionError(f"PDU type 0x{kind:02x}, not an A-ASSOCIATE-AC")
        sock.sendall(RELEASE_RQ)
        if (kind := answer(sock)) != 0x06:
            raise ConnectionError(f"PDU type 0x{kind:02x}, not an A-RELEASE-RP")
    return time.monotonic() - started


def haproxy_config(port: int, node: int, mode: str) -> str:
    """HAProxy relaying to the node, with send-proxy-v2 only when the node requires the
    header: the relay's own cost is in both modes, the header's only in one. No checks."""
    proxy = " send-proxy-v2" if mode == "required" else ""
    return "\n".join(
        [
            "defaults",
            "    mode tcp",
            "    timeout connect 5s",
            "    timeout client 1m",
            "    timeout server 1m",
            "frontend dicom",
            f"    bind 127.0.0.1:{port}",
            "    default_backend node",
            "backend node",
            f"    server node 127.0.0.1:{node}{proxy}",
            "",
        ]
    )


def storescu_association(port: int, instance: Path) -> float:
    """storescu stores `instance` in an association of its own; its wall time."""
    started = time.monotonic()
    subprocess.run(
        ["storescu", "-aec", "DCMRECVD", "127.0.0.1", str(port), str(instance)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return time.monotonic() - started


def config(port: int, outdir: Path, mode: str) -> str:
    lines = [
        "[receiver]",
        f"port = {port}",
        "bind-address = 127.0.0.1",
        f"output-directory = {outdir}",
        "max-associations = 1000",
    ]
    if mode == "required":
        lines += ["proxy-protocol = required", "trusted-proxies = 127.0.0.1"]
    return "\n".join([*lines, "[logging]", "level = warn", ""])


def one_run(
    mode: str,
    associations: int,
    threads: int,
    workdir: Path,
    *,
    one_segment: bool,
    instance: Path | None,
) -> dict[str, float]:
    """`instance`: each association is storescu storing it through HAProxy."""
    port = free_port()
    outdir = workdir / "out"
    outdir.mkdir()
    path = workdir / "dcmrecvd.conf"
    path.write_text(config(port, outdir, mode))
    dcmrecvd = str(Path(sys.executable).with_name("dcmrecvd"))
    log = (workdir / "dcmrecvd.log").open("wb")
    proc = subprocess.Popen([dcmrecvd, "--config", str(path)], stdout=log, stderr=log)
    relay: subprocess.Popen[bytes] | None = None
    try:
        wait_listening(port, proc)
        if instance is not None:
            front = free_port()
            (workdir / "haproxy.cfg").write_text(haproxy_config(front, port, mode))
            relay = subprocess.Popen(
                ["haproxy", "-db", "-f", str(workdir / "haproxy.cfg")], stdout=log, stderr=log
            )
            wait_listening(front, relay)
        rq = request()
        times: list[float] = []
        failures: list[BaseException] = []
        lock = threading.Lock()
        counter = iter(range(associations))

        def client() -> None:
            while True:
                with lock:
                    number = next(counter, None)
                if number is None:
                    return
                try:
                    if instance is not None:
                        took = storescu_association(front, instance)
                    else:
                        proxy = header(number) if mode != "off" else None
                        took = one_association(port, rq, proxy, one_segment)
                except (OSError, ConnectionError, subprocess.CalledProcessError) as exc:
                    with lock:
                        failures.append(exc)
                    return
                with lock:
                    times.append(took)

        cpu0, wall0 = tree_cpu(proc.pid), time.monotonic()
        workers = [threading.Thread(target=client) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wall, cpu = time.monotonic() - wall0, tree_cpu(proc.pid) - cpu0
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait(timeout=60)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    if failures or len(times) != associations:
        raise RuntimeError(f"{mode}: {len(times)} of {associations} done; {failures[:3]}")
    times.sort()
    return {
        "rate": associations / wall,
        "p50_ms": 1000 * times[len(times) // 2],
        "p95_ms": 1000 * times[int(len(times) * 0.95)],
        "cpu_ms": 1000 * cpu / associations,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--associations", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory")
    parser.add_argument(
        "--one-segment",
        action="store_true",
        help="the header and the A-ASSOCIATE-RQ in one send: the clients' own work as with"
        " off, so that the difference is the receiver's",
    )
    parser.add_argument(
        "--store",
        type=Path,
        metavar="FILE",
        help="each association is DCMTK's storescu storing FILE, through an HAProxy that"
        " sends the header only in the required runs",
    )
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="dcmrecvd-proxy-") as work:
        for repetition in range(args.repeat):
            order = MODES if repetition % 2 == 0 else MODES[::-1]
            for mode in order:
                workdir = Path(work) / f"run{repetition}-{mode}"
                workdir.mkdir()
                runs[mode].append(
                    one_run(
                        mode,
                        args.associations,
                        args.threads,
                        workdir,
                        one_segment=args.one_segment,
                        instance=args.store,
                    )
                )
                print(f"run {repetition} {mode}: {runs[mode][-1]}", file=sys.stderr)
    keys = ("rate", "p50_ms", "p95_ms", "cpu_ms")
    medians = {
        mode: {k: statistics.median(r[k] for r in runs[mode]) for k in keys} for mode in MODES
    }
    if args.store is not None:
        what = (
            f"{args.associations} associations of storescu storing {args.store.name}"
            f" ({args.store.stat().st_size} bytes) through HAProxy, {args.threads} at once"
        )
    else:
        segments = "with the A-ASSOCIATE-RQ" if args.one_segment else "in a segment of its own"
        what = (
            f"{args.associations} Verification associations from {args.threads} clients at"
            f" once, the header {segments}"
        )
    print(f"{what}, medians of {args.repeat} alternating runs ({os.cpu_count()} cores)\n")
    print("| proxy-protocol | associations/s | p50 ms | p95 ms | CPU ms per association |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        m = medians[mode]
        cells = f"{m['rate']:.0f} | {m['p50_ms']:.2f} | {m['p95_ms']:.2f} | {m['cpu_ms']:.2f}"
        print(f"| {mode} | {cells} |")
    ratio = {k: medians["required"][k] / medians["off"][k] for k in keys}
    print(
        f"| required/off | {ratio['rate']:.2f}x | {ratio['p50_ms']:.2f}x | {ratio['p95_ms']:.2f}x"
        f" | {ratio['cpu_ms']:.2f}x |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
