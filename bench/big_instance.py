#!/usr/bin/env python3
"""Peak memory of a receiver storing one huge instance (default: our dcmrecv).

Starts the receiver, sends one Part-10 file with DCMTK's storescu over one association,
checks that the stored dataset is byte-identical to the one sent, and prints one JSON
line: wall time, MB/s, the receiver's idle and peak RSS (VmHWM from /proc, read while it
still runs: ru_maxrss of a fresh exec carries the forking parent's mark).

    python ../shared/bench/corpus.py big corpus/big --size-mb 1024
    .venv/bin/python bench/big_instance.py corpus/big/big_1024MB.dcm
    .venv/bin/python bench/big_instance.py corpus/big/big_1024MB.dcm \\
        --receiver-cmd 'dcmrecv -xf {cfg} Store -od {outdir} {port}'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"receiver exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"receiver not listening on {port} after {timeout} s")


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


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
    argv = shlex.split(receiver_cmd.format(cfg=cfg, outdir=outdir, port=port))
    env = dict(os.environ, TCP_NODELAY="1")
    receiver = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, receiver)
        idle_kib = status_kib(receiver.pid, "VmRSS")
        start = time.monotonic()
        sent = subprocess.run(
            ["storescu", "-R", "127.0.0.1", str(port), str(instance)],
            env=env,
            capture_output=True,
            check=False,
        )
        wall = time.monotonic() - start
        peak_kib = status_kib(receiver.pid, "VmHWM")
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
        "--keep", action="store_true", help="keep the work directory with the stored file"
    )
    args = parser.parse_args()
    result = run(args.instance, args.receiver_cmd, args.keep)
    print(json.dumps(result))
    return 0 if result["storescu_rc"] == 0 and result["stored_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
