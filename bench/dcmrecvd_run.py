#!/usr/bin/env python3
"""Start dcmrecvd for the shared harness: write its configuration, then exec it.

    dcmrecvd_run.py PORT OUTDIR WORKDIR PDU [WORKERS]

The profile is DCMTK's own storescp.cfg "Default", as the harness gives dcmrecv, so
both receivers negotiate the same contexts. Durability stays on (fsync of every file
and directory); WORKERS defaults to dcmrecvd's own default (one per core).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CONFIG = """\
[receiver]
port = {port}
bind-address = 127.0.0.1
output-directory = {outdir}
max-pdu = {pdu}
profile = bench
{workers}
[profile bench]
asconfig = /etc/dcmtk/storescp.cfg
asconfig-profile = Default

[logging]
destination = stderr
level = warn
"""


def main() -> None:
    port, outdir, workdir, pdu, *rest = sys.argv[1:]
    workers = f"workers = {rest[0]}" if rest else ""
    path = Path(workdir) / "dcmrecvd.conf"
    text = CONFIG.format(port=port, outdir=outdir, pdu=pdu or 131072, workers=workers)
    path.write_text(text)
    dcmrecvd = str(Path(sys.executable).with_name("dcmrecvd"))
    os.execv(dcmrecvd, [dcmrecvd, "--config", str(path)])


if __name__ == "__main__":
    main()
