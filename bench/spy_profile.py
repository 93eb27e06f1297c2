#!/usr/bin/env python3
"""Where dcmrecvd's time goes on one association: py-spy over a storescu push.

Starts dcmrecvd (one worker) under `py-spy record --subprocesses`, pushes a corpus
over one association with DCMTK storescu (TCP_NODELAY=1, max PDU 131072), stops the
receiver and prints the share of samples per thread role and the functions with the
most samples, inclusive and by their own lines. With --gil (the default) only samples
in which the thread held the GIL count: Python work, not waits.

    .venv/bin/python bench/spy_profile.py corpus/ct --py-spy /path/to/py-spy
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadbench.ports import free_port, wait_listening

HERE = Path(__file__).resolve().parent
_LINE = re.compile(r":\d+\)$")


def report(raw: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    roles: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        names = {_LINE.sub(")", frame) for frame in frames}
        role = "other (start-up, main loop, accept)"
        if any("BlockingDUL.run " in n or n.startswith("BlockingDUL.run (") for n in names):
            role = "DUL thread (PDUs in, dataset to disk)"
        elif any(n.startswith("BlockingAssociation._run_reactor") for n in names):
            role = "association thread (C-STORE handler, fsync, response)"
        roles[role] += samples
        own[frames[-1]] += samples
        for name in names:
            inclusive[name] += samples
    print(f"{total} samples")
    print("\nby thread:")
    for role, samples in roles.most_common():
        print(f"  {100 * samples / total:5.1f} %  {role}")
    print("\ninclusive (function and all it calls):")
    for name, samples in inclusive.most_common(top):
        print(f"  {100 * samples / total:5.1f} %  {name}")
    print("\nown (line where the sample was):")
    for name, samples in own.most_common(top):
        print(f"  {100 * samples / total:5.1f} %  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--all-samples", action="store_true", help="count waits too (no --gil)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw output here")
    args = parser.parse_args()
    args.port = args.port or free_port()
    files = sorted(str(p) for p in args.corpus.glob("*.dcm"))
    with tempfile.TemporaryDirectory(prefix="dcmrecvd-profile-") as work:
        out = Path(work) / "out"
        out.mkdir()
        raw = args.raw or Path(work) / "profile.raw"
        receiver = [sys.executable, str(HERE / "dcmrecvd_run.py"), str(args.port), str(out)]
        receiver += [work, "131072", "1"]
        spy = [args.py_spy, "record", "--subprocesses", "-r", str(args.rate), "-f", "raw"]
        spy += [] if args.all_samples else ["--gil"]
        proc = subprocess.Popen([*spy, "-o", str(raw), "--", *receiver], start_new_session=True)
        try:
            wait_listening(args.port)
            env = dict(os.environ, TCP_NODELAY="1")
            sender = ["storescu", "-R", "-xe", "-aec", "DCMRECVD", "-pdu", "131072"]
            started = time.monotonic()
            subprocess.run([*sender, "127.0.0.1", str(args.port), *files], env=env, check=True)
            wall = time.monotonic() - started
        finally:
            # SIGINT ends the recording; py-spy passes it on and writes the samples.
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=120)
        print(
            f"{len(files)} instances in {wall:.2f} s ({len(files) / wall:.0f} inst/s under py-spy)"
        )
        report(raw, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
