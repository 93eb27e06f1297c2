#!/usr/bin/env python3
"""Peak memory of a receiver storing one huge instance (default: our dcmrecv).

Starts the receiver, sends one Part-10 file with DCMTK's storescu over one association,
checks that the stored dataset is byte-identical to the one sent, and prints one JSON
line: wall time, MB/s, the receiver's idle and peak RSS (VmHWM from /proc, read while it
still runs: ru_maxrss of a fresh exec carries the forking parent's mark), and for
a receiver of several processes (--dcmrecvd: the daemon's parent and workers) the
largest PSS and RSS summed over them, sampled during the transfer.

    .venv/bin/python bench/make_corpus.py big corpus/big --size-mb 1024
    .venv/bin/python bench/big_instance.py corpus/big/big_1024MiB.dcm
    .venv/bin/python bench/big_instance.py corpus/big/big_1024MiB.dcm \\
        --receiver-cmd 'dcmrecv -xf {cfg} Store -od {outdir} {port}'
    .venv/bin/python bench/big_instance.py corpus/big/big_1024MiB.dcm --dcmrecvd
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from loadbench.ports import free_port, wait_listening
from pydicom import dcmread

CFG = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LittleEndianExplicit
TransferSyntax2 = LittleEndianImplicit

[[PresentationContexts]]
[Store]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = {sop_class}\\Uncompressed

[[Profiles]]
[Store]
PresentationContexts = Store
"""

OURS = f"{Path(sys.executable).with_name('dcmrecv')} -xf {{cfg}} Store -od {{outdir}} {{port}}"
# The daemon, its parent and workers, serving the same profile ({conf} is written).
DAEMON = f"{Path(sys.executable).with_name('dcmrecvd')} --config {{conf}}"
DAEMON_CONF = """\
[receiver]
port = {port}
bind-address = 127.0.0.1
output-directory = {outdir}
profile = store

[profile store]
asconfig = {cfg}
asconfig-profile = Store

[logging]
destination = stderr
level = warn
"""


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def tree(pid: int) -> list[int]:
    """`pid` and its children (the daemon's workers)."""
    pids = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(child) for child in children.read_text().split()]
    return pids


def rollup_kib(pids: list[int], field: str) -> int:
    """`field` (Pss, Rss) of /proc/<pid>/smaps_rollup, summed over `pids`."""
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue  # ended meanwhile
        total += sum(int(line.split()[1]) for line in lines if line.startswith(field + ":"))
    return total


class TreeSampler(threading.Thread):
    """The largest PSS and RSS, each summed over the receiver's processes, while it runs.

    PSS shares each page among the processes that map it, so its sum is the memory
    the service uses; summed RSS counts the pages the workers share with the parent
    (interpreter, libraries) once per process.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_pss_kib = 0
        self.peak_rss_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):  # the sampling period
            pids = tree(self.pid)
            self.peak_pss_kib = max(self.peak_pss_kib, rollup_kib(pids, "Pss"))
            self.peak_rss_kib = max(self.peak_rss_kib, rollup_kib(pids, "Rss"))


def body_digest(path: Path) -> str:
    """SHA-256 of the dataset bytes after the File Meta group, read in chunks."""
    meta = dcmread(path, stop_before_pixels=True).file_meta
    digest = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(132 + 12 + int(meta.FileMetaInformationGroupLength))
        while chunk := f.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def run(instance: Path, receiver_cmd: str, keep: bool) -> dict[str, object]:
    sop_class = str(dcmread(instance, stop_before_pixels=True).SOPClassUID)
    work = Path(tempfile.mkdtemp(prefix="bench-big-", dir=instance.parent))
    outdir = work / "out"
    outdir.mkdir()
    cfg = work / "store.cfg"
    cfg.write_text(CFG.format(sop_class=sop_class))
    port = free_port()
    conf = work / "dcmrecvd.conf"
    conf.write_text(DAEMON_CONF.format(port=port, outdir=outdir, cfg=cfg))
    argv = shlex.split(receiver_cmd.format(cfg=cfg, outdir=outdir, port=port, conf=conf))
    env = dict(os.environ, TCP_NODELAY="1")
    receiver = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, receiver)
        idle_kib = status_kib(receiver.pid, "VmRSS")
        processes = tree(receiver.pid)
        idle_pss_kib = rollup_kib(processes, "Pss")
        sampler = TreeSampler(receiver.pid)
        sampler.start()
        start = time.monotonic()
        sent = subprocess.run(
            ["storescu", "-R", "127.0.0.1", str(port), str(instance)],
            env=env,
            capture_output=True,
            check=False,
        )
        wall = time.monotonic() - start
        sampler.done.set()
        sampler.join()
        peak_kib = max(status_kib(pid, "VmHWM") for pid in processes)
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
    stored = [p for p in outdir.rglob("*") if p.is_file()]
    identical = len(stored) == 1 and body_digest(stored[0]) == body_digest(instance)
    size = instance.stat().st_size
    result: dict[str, object] = {
        "receiver": argv[0],
        "instance_bytes": size,
        "storescu_rc": sent.returncode,
        "stored_identical": identical,
        "wall_s": round(wall, 2),
        "mb_per_s": round(size / 1e6 / wall, 1),
        "idle_rss_mib": round(idle_kib / 1024, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "processes": len(processes),
        "idle_pss_mib_all_processes": round(idle_pss_kib / 1024, 1),
        "peak_pss_mib_all_processes": round(sampler.peak_pss_kib / 1024, 1),
        "peak_rss_mib_all_processes": round(sampler.peak_rss_kib / 1024, 1),
    }
    if not keep:
        shutil.rmtree(work)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("instance", type=Path, help="the Part-10 file to send")
    parser.add_argument(
        "--receiver-cmd",
        default=OURS,
        help="receiver command; {cfg}, {outdir} and {port} are filled in (default: ours)",
    )
    parser.add_argument(
        "--dcmrecvd", action="store_true", help="run the daemon (parent and workers) instead"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory with the stored file"
    )
    args = parser.parse_args()
    result = run(args.instance, DAEMON if args.dcmrecvd else args.receiver_cmd, args.keep)
    print(json.dumps(result))
    return 0 if result["storescu_rc"] == 0 and result["stored_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
