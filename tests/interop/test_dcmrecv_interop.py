"""dcmrecv side by side: DCMTK's and ours, same options, same objects from storescu.

Every expectation is what DCMTK's dcmrecv does in the same run; nothing is copied from
its output into this file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support import dicomgen
from tests.support.asconfigs import DCMRECV_CFG
from tests.support.net import free_port
from tests.support.peers import wait_listening
from tests.support.streaming_peer import meta_of

pytestmark = [pytest.mark.interop, pytest.mark.slow]

OURS = str(Path(sys.executable).with_name("dcmrecv"))


@dataclass(frozen=True)
class Run:
    """What one receiver did with one push."""

    files: dict[str, Path]
    storescu_rc: int
    stderr: str


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dcmrecv")
    (root / "store.cfg").write_text(DCMRECV_CFG)
    dicomgen.write_all(dicomgen.STANDARD + dicomgen.PRIVATE, root / "objects")
    dicomgen.write_all(dicomgen.HOSTILE, root / "hostile")
    return root


@contextmanager
def serving(binary: str, args: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.Popen(
        [binary, *args, str(port)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
    )
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def push(binary: str, args: list[str], objects: Path, out: Path, cfg: Path) -> Run:
    """Start `binary` with `args`, store every file of `objects` with storescu, stop it.

    storescu proposes the contexts of `cfg`'s profile Store, private class included.
    """
    out.mkdir(parents=True)
    port = free_port()
    scu = ["storescu", "+sd", "-xf", str(cfg), "Store", "-aet", "SENDER", "-aec", "ANY"]
    with serving(binary, [*args, "-od", str(out)], port) as proc:
        sent = subprocess.run(
            [*scu, "127.0.0.1", str(port), str(objects)],
            capture_output=True,
            timeout=120,
            check=False,
            env=dict(os.environ, TCP_NODELAY="1"),
        )
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")
    files = {str(p.relative_to(out)): p for p in sorted(out.rglob("*")) if p.is_file()}
    return Run(files, sent.returncode, stderr)


def both(workspace: Path, args: list[str], objects: str = "objects") -> tuple[Run, Run]:
    name = "_".join([objects, *args])
    cfg = workspace / "store.cfg"
    xf = ["-xf", str(cfg), "Store"]
    theirs = push(
        "/usr/bin/dcmrecv", [*xf, *args], workspace / objects, workspace / "t" / name, cfg
    )
    ours = push(OURS, [*xf, *args], workspace / objects, workspace / "o" / name, cfg)
    return theirs, ours


def dataset_bytes(path: Path) -> bytes:
    """Everything after the File Meta group."""
    raw = path.read_bytes()
    meta = dcmread(path, stop_before_pixels=True).file_meta
    return raw[132 + 12 + int(meta.FileMetaInformationGroupLength) :]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-fe", ".dcm"],
        ["+ssd"],
        ["+ssd", "-fe", ".dcm"],
        ["-B"],
    ],
)
def test_same_files_as_dcmrecv_in_normal_mode(
    dcmtk_dcmrecv: str, workspace: Path, args: list[str]
) -> None:
    theirs, ours = both(workspace, args)
    assert theirs.storescu_rc == 0
    assert len(theirs.files) == len(list((workspace / "objects").iterdir()))
    assert (ours.storescu_rc, sorted(ours.files)) == (theirs.storescu_rc, sorted(theirs.files))
    for rel, path in ours.files.items():
        keys = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
        assert meta_of(path, *keys) == meta_of(theirs.files[rel], *keys), rel
        # DCMTK re-encodes (undefined-length sequences); the data are the same.
        ours_ds, theirs_ds = dcmread(path), dcmread(theirs.files[rel])
        assert ours_ds == theirs_ds, rel


def test_bit_preserving_is_byte_identical_like_dcmrecv(dcmtk_dcmrecv: str, workspace: Path) -> None:
    theirs, ours = both(workspace, ["+B"])
    assert sorted(ours.files) == sorted(theirs.files)
    assert len(ours.files) == len(list((workspace / "objects").iterdir()))
    for rel, path in ours.files.items():
        # DCMTK's +B file holds the dataset exactly as it came off the wire.
        assert dataset_bytes(path) == dataset_bytes(theirs.files[rel]), rel
        keys = (
            "MediaStorageSOPClassUID",
            "MediaStorageSOPInstanceUID",
            "TransferSyntaxUID",
            "SourceApplicationEntityTitle",
        )
        assert meta_of(path, *keys) == meta_of(theirs.files[rel], *keys), rel


def test_a_large_object_is_byte_identical_like_dcmrecv(dcmtk_dcmrecv: str, workspace: Path) -> None:
    """22 MB: past storage.DIRECT_FROM, so most of it is written with O_DIRECT."""
    ds = dicomgen.part10(dicomgen.Spec(dicomgen.CT, "1.2.3.4.700"))
    ds.Rows, ds.Columns = 4600, 4801
    ds.PixelData = bytes(range(251)) * (4600 * 4801 // 251) + bytes(4600 * 4801 % 251)
    (workspace / "large").mkdir()
    ds.save_as(workspace / "large" / "big.dcm", enforce_file_format=True)
    theirs, ours = both(workspace, ["+B"], "large")
    assert (theirs.storescu_rc, ours.storescu_rc) == (0, 0)
    assert sorted(ours.files) == sorted(theirs.files) and len(ours.files) == 1
    for rel, path in ours.files.items():
        assert dataset_bytes(path) == dataset_bytes(theirs.files[rel]), rel
        assert path.stat().st_size > 22_000_000


def test_normal_mode_stores_what_arrived(
    dcmtk_dcmrecv: str, workspace: Path, tmp_path: Path
) -> None:
    cfg = workspace / "store.cfg"
    xf = ["-xf", str(cfg), "Store"]
    arrived = push(dcmtk_dcmrecv, [*xf, "+B"], workspace / "objects", tmp_path / "t", cfg)
    ours = push(OURS, xf, workspace / "objects", tmp_path / "o", cfg)
    assert len(ours.files) == len(arrived.files) == len(list((workspace / "objects").iterdir()))
    for rel, path in ours.files.items():
        assert dataset_bytes(path) == dataset_bytes(arrived.files[rel]), rel


def test_ignore_stores_nothing_and_answers_success(dcmtk_dcmrecv: str, workspace: Path) -> None:
    theirs, ours = both(workspace, ["--ignore"])
    assert (theirs.storescu_rc, theirs.files) == (0, {})
    assert (ours.storescu_rc, ours.files) == (0, {})


def test_hostile_uids_are_named_as_dcmrecv_names_them(dcmtk_dcmrecv: str, workspace: Path) -> None:
    theirs, ours = both(workspace, [], objects="hostile")
    assert theirs.files, "DCMTK stored none of the hostile objects"
    assert sorted(ours.files) == sorted(theirs.files)
    for rel in ours.files:
        assert "/" not in rel


def test_duplicates_are_overwritten_with_a_warning(
    dcmtk_dcmrecv: str, workspace: Path, tmp_path: Path
) -> None:
    twice = tmp_path / "twice"
    twice.mkdir()
    for i in range(2):
        dicomgen.write(dicomgen.Spec(dicomgen.CT, "1.2.3.4.100"), twice / f"ct{i}.dcm")
    cfg = workspace / "store.cfg"
    xf = ["-xf", str(cfg), "Store"]
    theirs = push("/usr/bin/dcmrecv", xf, twice, tmp_path / "t", cfg)
    ours = push(OURS, xf, twice, tmp_path / "o", cfg)
    assert sorted(ours.files) == sorted(theirs.files) == ["CT.1.2.3.4.100"]
    warning = [
        line for line in theirs.stderr.splitlines() if line.startswith("W: file already exists")
    ]
    assert len(warning) == 1
    ours_warning = [
        line for line in ours.stderr.splitlines() if line.startswith("W: file already exists")
    ]
    assert [w.replace(str(tmp_path / "o"), "OUT") for w in ours_warning] == [
        w.replace(str(tmp_path / "t"), "OUT") for w in warning
    ]


def startup(binary: str, args: list[str]) -> tuple[int, list[str]]:
    run = subprocess.run([binary, *args], capture_output=True, text=True, timeout=30, check=False)
    return run.returncode, run.stderr.splitlines()


@pytest.mark.parametrize(
    "case",
    ["bad-config", "unknown-profile", "bad-od", "od-is-file", "config-beats-od", "port-in-use"],
)
def test_startup_errors_as_dcmrecv(
    dcmtk_dcmrecv: str, workspace: Path, tmp_path: Path, case: str
) -> None:
    bad_cfg = tmp_path / "bad.cfg"
    bad_cfg.write_text("[[TransferSyntaxes]]\n[A]\nTransferSyntax1 = NoSuchSyntax\n")
    afile = tmp_path / "afile"
    afile.write_bytes(b"")
    good = ["-xf", str(workspace / "store.cfg"), "Store"]
    port = free_port()
    args = {
        "bad-config": ["-xf", str(bad_cfg), "A", "-od", str(tmp_path)],
        "unknown-profile": [*good[:2], "nosuchprofile"],
        "bad-od": ["-od", str(tmp_path / "missing")],
        "od-is-file": ["-od", str(afile)],
        "config-beats-od": ["-xf", str(bad_cfg), "A", "-od", str(tmp_path / "missing")],
        "port-in-use": ["-od", str(tmp_path)],
    }[case]
    with socket.socket() as blocker:
        if case == "port-in-use":
            blocker.bind(("0.0.0.0", port))
            blocker.listen()
        theirs = startup("/usr/bin/dcmrecv", ["-v", *args, str(port)])
        ours = startup(OURS, ["-v", *args, str(port)])
    assert theirs[0] in (45, 64, 66)
    assert ours == theirs
