#!/usr/bin/env python3
"""CPU that idle associations cost dcmrecvd: N associations established, then nothing sent.

Starts dcmrecvd (bench/dcmrecvd_run.py, default workers), opens N associations from
plain sockets (an A-ASSOCIATE-RQ for Verification, the A-ASSOCIATE-AC read back; no
requestor threads in this process to compete for the CPU), waits a second, then reads
the user+sys CPU of dcmrecvd's whole process tree over a window and prints the share
of one core. pynetdicom's own storescp took about 96 % of a core for 50 (issue 7's
reference measurements).

    .venv/bin/python bench/idle.py --associations 50 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from loadbench.ports import free_port, wait_listening
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context

HERE = Path(__file__).resolve().parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def request() -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "IDLEBENCH"
    primitive.called_ae_title = "DCMRECVD"
    context = build_context("1.2.840.10008.1.1")
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.1"
    primitive.user_information = [length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed by the receiver")
        data += chunk
    return data


def associate(port: int, rq: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(rq)
    kind, _, length = struct.unpack(">BBI", read_exactly(sock, 6))
    read_exactly(sock, length)
    if kind != 0x02:
        raise ConnectionError(f"PDU type 0x{kind:02x}, not an A-ASSOCIATE-AC")
    return sock


def tree_cpu(root: int) -> float:
    """user+sys seconds of `root` and its live descendants (threads included)."""
    total = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(k) for k in kids)
    return total / CLOCK_TICKS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--associations", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.port = args.port or free_port()
    with tempfile.TemporaryDirectory(prefix="dcmrecvd-idle-") as work:
        out = Path(work) / "out"
        out.mkdir()
        argv = [sys.executable, str(HERE / "dcmrecvd_run.py"), str(args.port), str(out), work, ""]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(args.port, proc)
            rq = request()
            sockets = [associate(args.port, rq) for _ in range(args.associations)]
            threading.Event().wait(1.0)  # let the accept and negotiation work settle
            before, start = tree_cpu(proc.pid), time.monotonic()
            threading.Event().wait(args.seconds)  # the measured window
            used, elapsed = tree_cpu(proc.pid) - before, time.monotonic() - start
            for sock in sockets:
                sock.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    result = {
        "associations": args.associations,
        "seconds": round(elapsed, 2),
        "cpu_s": round(used, 3),
        "cpu_percent": round(100 * used / elapsed, 2),
    }
    print(json.dumps(result) if args.json else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
