"""kill -9 in the middle of a 1 GiB transfer: no final file, no Success, temp swept at restart."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from tests.support import dicomgen
from tests.support.asconfigs import STORE_CFG
from tests.support.net import free_port
from tests.support.peers import wait_listening
from tests.support.streaming_peer import final_files, temp_files, wait_until

pytestmark = pytest.mark.slow

OURS = str(Path(sys.executable).with_name("dcmrecv"))
FRAME = 512 * 512 * 2
FRAMES = 2048  # 1 GiB of pixel data
UID_BIG = "1.2.3.4.1024"


def write_big(path: Path) -> Path:
    """A CT instance with 1 GiB of pixel data, written in chunks (never in memory)."""
    ds = dicomgen.dataset(dicomgen.Spec(dicomgen.CT, UID_BIG))
    del ds.PixelData
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.NumberOfFrames = FRAMES
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(dicomgen.CT)
    meta.MediaStorageSOPInstanceUID = UID(UID_BIG)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    frame = bytes(range(256)) * (FRAME // 256)
    with path.open("ab") as f:
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, FRAME * FRAMES))
        for _ in range(FRAMES):
            f.write(frame)
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = write_big(tmp_path_factory.mktemp("big") / "big.dcm")
    yield path
    path.unlink()


@contextmanager
def receiver(cfg: Path, out: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [OURS, "-xf", str(cfg), "Store", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, TCP_NODELAY="1"),
    )
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)


def test_kill_9_mid_transfer(big: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "store.cfg"
    cfg.write_text(STORE_CFG)
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    with receiver(cfg, out, port) as proc:
        sender = subprocess.Popen(
            ["storescu", "-v", "-R", "127.0.0.1", str(port), str(big)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, TCP_NODELAY="1"),
        )
        wait_until(
            lambda: any(p.stat().st_size > 200 * 1024 * 1024 for p in temp_files(out)),
            timeout=120,
            what="200 MiB of the dataset in the temp file",
        )
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        said, _ = sender.communicate(timeout=60)
    log = said.decode(errors="replace")
    assert "Received Store Response" not in log  # never a response, let alone Success
    assert "Store Failed" in log
    assert final_files(out) == []
    [left] = temp_files(out)
    assert left.stat().st_size < big.stat().st_size
    with receiver(cfg, out, free_port()):
        # It listens before it sweeps (DCMTK's start-up order): wait for the sweep.
        wait_until(lambda: temp_files(out) == [], what="the leftover temp file swept")
    assert final_files(out) == []
