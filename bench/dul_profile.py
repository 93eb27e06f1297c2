#!/usr/bin/env python3
"""Where one association's time goes, by cProfile in the thread that serves it.

Runs the receiver in this process (the `dcmrecv` Receiver with DCMTK's storescp.cfg
"Default" profile, max PDU 131072, fsync on), profiles the DUL thread of the first
association (with fastpath.py every C-STORE is read, stored and answered there), pushes
a corpus with DCMTK storescu over one association, then prints the functions and system
calls by their own time. cProfile roughly doubles the cost of Python code; system calls
and waits keep their cost.

    .venv/bin/python bench/dul_profile.py /work/corpus/ct --count 600
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

from loadbench.ports import free_port

from dcmrecvd.apps.dcmrecv_life import load_profile
from dcmrecvd.pnd import reactor
from dcmrecvd.pnd.server import Listener, Serving
from dcmrecvd.receiver import Receiver
from dcmrecvd.settings import Settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--count", type=int, default=600, help="files of the corpus to send")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    profiles: list[cProfile.Profile] = []
    serve = reactor.BlockingDUL.run

    def profiled(self: reactor.BlockingDUL) -> None:
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.runcall(serve, self)

    reactor.BlockingDUL.run = profiled  # type: ignore[method-assign]
    files = sorted(args.corpus.glob("*.dcm"))[: args.count]
    with tempfile.TemporaryDirectory(prefix="dul-profile-") as out:
        port = free_port()
        settings = Settings(
            port=port,
            output_dir=out,
            config_file=Path("/etc/dcmtk/storescp.cfg"),
            profile_name="Default",
            max_pdu=131072,
        )
        receiver = Receiver(settings, load_profile(settings))
        listener = Listener.bind("127.0.0.1", port)
        serving = Serving(receiver, listener)
        try:
            subprocess.run(
                ["storescu", "-pdu", "131072", "127.0.0.1", str(port), *map(str, files)],
                env=dict(os.environ, TCP_NODELAY="1"),
                check=True,
            )
        finally:
            serving.stop_accepting()
            listener.close()
            receiver.stop()
        stored = sum(1 for path in Path(out).iterdir() if path.is_file())
    print(f"{len(files)} sent, {stored} stored; the first association's DUL thread:")
    stats = pstats.Stats(profiles[0], stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(args.top)
    return 0 if stored == len(files) else 1


if __name__ == "__main__":
    sys.exit(main())
