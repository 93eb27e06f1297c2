#!/usr/bin/env python3
"""Start dcmrecvd as bench/load.py does: write its configuration, then exec it.

    dcmrecvd_run.py PORT OUTDIR WORKDIR PDU [WORKERS]

The profile is DCMTK's own storescp.cfg "Default", as dcmrecv gets in bench/load.py, so
both receivers negotiate the same contexts. Durability stays on (fsync of every file
and directory); WORKERS defaults to dcmrecvd's own default (one per core).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loadbench.receivers import PDU, dcmrecvd_config


def main() -> None:
    port, outdir, workdir, pdu, *rest = sys.argv[1:]
    path = Path(workdir) / "dcmrecvd.conf"
    workers = int(rest[0]) if rest else None
    path.write_text(dcmrecvd_config(int(port), Path(outdir), pdu=int(pdu or PDU), workers=workers))
    dcmrecvd = str(Path(sys.executable).with_name("dcmrecvd"))
    os.execv(dcmrecvd, [dcmrecvd, "--config", str(path)])


if __name__ == "__main__":
    main()
