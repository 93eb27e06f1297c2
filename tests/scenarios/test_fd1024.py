"""A receiver with more than FD_SETSIZE (1024) files open still serves associations.

pynetdicom polls its sockets with select(), which cannot take a descriptor >= 1024;
reactor.py waits with poll(). The receiver runs in its own process, which opens 1100
descriptors before it listens, so every socket it accepts is numbered above 1024.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.asconfigs import STORE_CFG
from tests.support.net import free_port
from tests.support.peers import wait_listening
from tests.support.streaming_peer import association, dataset, final_files

HELD = 1100

# Raise the soft limit, hold HELD descriptors, then be dcmrecv.
RECEIVER = f"""
import os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
held = [os.open(os.devnull, os.O_RDONLY) for _ in range({HELD})]
from dcmrecvd.apps.dcmrecv import main
sys.exit(main(sys.argv[1:]))
"""


def socket_fds(pid: int) -> list[int]:
    fds = []
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(entry).startswith("socket:"):
                fds.append(int(entry.name))
        except FileNotFoundError:
            continue  # closed while listing
    return fds


def test_stores_with_1100_descriptors_open(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "store.cfg"
    cfg.write_text(STORE_CFG)
    out = tmp_path / "out"
    out.mkdir()
    args = ["-xf", str(cfg), "Store", "-od", str(out), str(port)]
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER, *args], stderr=subprocess.PIPE)
    try:
        wait_listening(port, proc)
        with association(port) as a:
            assert a.is_established
            # The association's own socket in the receiver is above FD_SETSIZE.
            assert len(socket_fds(proc.pid)) >= 2
            assert min(socket_fds(proc.pid)) > 1024
            assert a.send_c_store(dataset("1.2.3.4.1024")).Status == 0x0000
            assert a.send_c_store(dataset("1.2.3.4.1025")).Status == 0x0000
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert final_files(out) == ["CT.1.2.3.4.1024", "CT.1.2.3.4.1025"], stderr.decode()
