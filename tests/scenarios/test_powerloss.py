"""Power loss: every acknowledged object survives it, directory entries included.

The receiver stores onto tests/support/forgetfs.py, a FUSE file system that at a power cut keeps
only what was fsynced: file data at fsync of the file, a directory entry only once its
parent directory was fsynced. Every naming mode, with and without +ssd, must leave each
instance it answered Success for under its final name with all its bytes, and nothing
incomplete under a final name.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dcmrecvd import pathtemplate
from dcmrecvd.profiles import Profile
from dcmrecvd.settings import NamingScheme, StorageMode, SubdirMode
from dcmrecvd.store import storage
from tests.support import dicomgen
from tests.support.daemon import conf, dcmrecvd, requestor
from tests.support.forgetfs import Model
from tests.support.net import free_port
from tests.support.paths import REPO
from tests.support.peers import our_receiver
from tests.support.streaming_peer import (
    association,
    body,
    dataset,
    encoded,
    final_files,
    send_part,
    settings,
    temp_files,
    wait_until,
)

# The model alone: what a power cut keeps.


def test_an_entry_is_durable_only_once_its_parent_is_fsynced() -> None:
    fs = Model()
    fs.mkdir("/a", 0o755)
    fs.mkdir("/a/b", 0o755)
    ino = fs.create("/a/b/f", 0o644)
    fs.write(ino, 0, b"data")
    fs.fsync(ino)
    fs.fsync(fs.lookup("/a/b"))
    fs.fsync(fs.lookup("/a"))
    assert fs.durable_view() == {}  # /a was never fsynced into the root
    fs.fsync(fs.lookup("/"))
    assert fs.durable_view() == {"a": {"b": {"f": b"data"}}}


def test_unsynced_data_and_entry_changes_are_lost() -> None:
    fs = Model()
    ino = fs.create("/f", 0o644)
    fs.write(ino, 0, b"first")
    fs.fsync(ino)
    fs.fsync(fs.lookup("/"))
    fs.write(ino, 5, b" second")
    fs.rename("/f", "/g")
    fs.link("/g", "/h")
    assert fs.node("/h").data == b"first second"
    assert fs.durable_view() == {"f": b"first"}
    fs.fsync(fs.lookup("/"))
    assert fs.durable_view() == {"g": b"first", "h": b"first"}


def test_a_rename_over_a_file_keeps_the_old_one_until_the_directory_is_fsynced() -> None:
    fs = Model()
    old = fs.create("/name", 0o644)
    fs.write(old, 0, b"old")
    new = fs.create("/.tmp", 0o644)
    fs.write(new, 0, b"new")
    for ino in (old, new, fs.lookup("/")):
        fs.fsync(ino)
    fs.rename("/.tmp", "/name")
    assert fs.durable_view() == {"name": b"old", ".tmp": b"new"}
    fs.fsync(fs.lookup("/"))
    assert fs.durable_view() == {"name": b"new"}


# The receiver on the FUSE file system.


@dataclass(frozen=True)
class Forgetful:
    """A mounted forgetfs; `cut` writes what a power cut now would leave."""

    mount: Path
    proc: subprocess.Popen[str]

    def cut(self, view: Path) -> Path:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"cut {view}\n")
        self.proc.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=30), "forgetfs did not answer the cut within 30 s"
        assert self.proc.stdout.readline() == "cut\n"
        return view


def fuse_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "mounting a FUSE file system needs root"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    try:
        import fuse  # noqa: F401, PLC0415 (loads libfuse: only where it is used)
    except (ImportError, OSError) as exc:
        return f"fusepy or libfuse2 missing: {exc}"
    return None


@pytest.fixture
def forgetful(tmp_path: Path) -> Iterator[Forgetful]:
    unavailable = fuse_unavailable()
    if unavailable is not None:
        pytest.skip(unavailable)
    mount = tmp_path / "mnt"
    mount.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.forgetfs", str(mount)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: os.path.ismount(mount) or proc.poll() is not None, what="forgetfs mounted"
        )
        if proc.poll() is not None:
            assert proc.stderr is not None
            pytest.skip(f"cannot mount FUSE here: {proc.stderr.read().strip()}")
        yield Forgetful(mount, proc)
    finally:
        if os.path.ismount(mount):
            unmounted = subprocess.run(["umount", str(mount)], check=False)
            if unmounted.returncode != 0:  # a file left open there: detach, forgetfs exits
                subprocess.run(["umount", "-l", str(mount)], check=True)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def durable_output(fs: Forgetful) -> Path:
    """The output directory, made and fsynced into its parent as an installation does."""
    out = fs.mount / "out"
    out.mkdir()
    storage.fsync_directory(fs.mount)
    return out


def instance(uid: str, series_date: str | None, pixel_bytes: int = 2048) -> Dataset:
    ds = dataset(uid, pixel_bytes=pixel_bytes)
    if series_date is None:
        del ds.SeriesDate
    else:
        ds.SeriesDate = series_date
    return ds


# Two in one series-date directory, one in another, one without a date (undef/<today>),
# one of many PDUs.
OBJECTS = [
    instance("1.2.3.4.501", "20240115"),
    instance("1.2.3.4.502", "20240115"),
    instance("1.2.3.4.503", "20231231"),
    instance("1.2.3.4.504", None),
    instance("1.2.3.4.505", "20240116", pixel_bytes=1024 * 1024),
]
# In flight when the power goes: half sent, never answered.
IN_FLIGHT = instance("1.2.3.4.506", "20240117", pixel_bytes=2 * 1024 * 1024)


def assert_acknowledged_survive(live: Path, view: Path, sent: list[Dataset]) -> None:
    """Each object sent (all acknowledged) is in `view` as stored in `live`; nothing else."""
    names = final_files(live)
    assert final_files(view) == names
    by_instance = {str(dcmread(live / name).SOPInstanceUID): name for name in names}
    assert sorted(by_instance) == sorted(str(ds.SOPInstanceUID) for ds in sent)
    for ds in sent:
        name = by_instance[str(ds.SOPInstanceUID)]
        assert (view / name).read_bytes() == (live / name).read_bytes(), name
        assert body(view / name) == encoded(ds), name
        assert dcmread(view / name).SOPInstanceUID == ds.SOPInstanceUID
    # Its creation is durable too, so that the sweep at the next start finds it.
    assert (view / storage.SPOOL_DIRECTORY).is_dir()


NAMINGS = {
    "+fd": NamingScheme.DEFAULT,
    "+fu": NamingScheme.UNIQUE,
    "+fsu": NamingScheme.SHORT_UNIQUE,
    "+fst": NamingScheme.SYSTEM_TIME,
}
SSD = {"subdir": SubdirMode.SERIES_DATE}
TEMPLATE = pathtemplate.parse("{PatientID}/{SeriesDate:%Y/%m/%d|NODATE}/{SOPInstanceUID}.dcm")
BIT_PRESERVING = {"storage": StorageMode.BIT_PRESERVING}
# Settings changes of each mode. +B writes the object its own way, whatever its name; it
# cannot go with +ssd (DCMTK has no dataset to take the date from).
MODES = [
    *(pytest.param({"naming": n}, id=f) for f, n in NAMINGS.items()),
    *(pytest.param({"naming": n, **SSD}, id=f"{f} +ssd") for f, n in NAMINGS.items()),
    *(pytest.param({"naming": NAMINGS[f], **BIT_PRESERVING}, id=f"{f} +B") for f in ("+fd", "+fu")),
    # New directories three and four levels deep, made from the dataset.
    *(
        pytest.param({"path_template": TEMPLATE, **extra}, id=name)
        for name, extra in (("template", {}), ("template +B", BIT_PRESERVING))
    ),
]
DATED = {"data/2023/12/31", "data/2024/01/15", "data/2024/01/16"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_power_cut_keeps_every_acknowledged_instance(
    forgetful: Forgetful, profile: Profile, port: int, tmp_path: Path, mode: dict[str, Any]
) -> None:
    out = durable_output(forgetful)
    with our_receiver(profile, port, settings(port, out, **mode)), association(port) as a:
        statuses = [int(a.send_c_store(ds).Status) for ds in OBJECTS]
        send_part(a, IN_FLIGHT, 0.5)
        wait_until(
            lambda: sum(p.stat().st_size for p in temp_files(out)) > 512 * 1024,
            what="the object in flight half on disk",
        )
        view = forgetful.cut(tmp_path / "view") / "out"
        a.abort()
    assert statuses == [0x0000] * len(OBJECTS)
    if mode.get("subdir") is SubdirMode.SERIES_DATE:
        folders = {os.path.dirname(name) for name in final_files(out)}
        undated = folders - DATED
        assert folders > DATED and len(undated) == 1 and undated.pop().startswith("undef/")
    assert_acknowledged_survive(out, view, OBJECTS)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["fresh", "recreated"])
def test_power_cut_keeps_an_output_directory_the_receiver_did_not_make_durable(
    forgetful: Forgetful, profile: Profile, port: int, tmp_path: Path, how: str
) -> None:
    """fresh: just made by someone else (another worker, EEXIST) and not yet fsynced into
    its parent; recreated: deleted while the receiver runs, which makes it anew."""
    out = forgetful.mount / "out"
    out.mkdir()
    first, second = OBJECTS[:2]
    with our_receiver(profile, port, settings(port, out)), association(port) as a:
        if how == "recreated":
            storage.fsync_directory(forgetful.mount)
            assert a.send_c_store(first).Status == 0x0000
            shutil.rmtree(out)
            storage.fsync_directory(forgetful.mount)
        assert a.send_c_store(second).Status == 0x0000
        view = forgetful.cut(tmp_path / "view") / "out"
    assert_acknowledged_survive(out, view, [second])


@pytest.mark.slow
def test_power_cut_keeps_what_daemon_workers_store_into_shared_new_directories(
    forgetful: Forgetful, tmp_path: Path
) -> None:
    """Two workers, two associations at once, both making the same new +ssd directories:
    the one whose mkdir finds the directory made must make it durable all the same."""
    out = durable_output(forgetful)
    port = free_port()
    sent = [
        dicomgen.part10(dicomgen.Spec(dicomgen.CT, f"1.2.3.4.6{i}", series_date=date))
        for i, date in enumerate(["20240201", "20240202"] * 4)
    ]
    statuses: list[int] = []

    def send(objects: list[Dataset]) -> None:
        assoc = requestor(port, [dicomgen.CT])
        statuses.extend(int(assoc.send_c_store(ds).Status) for ds in objects)
        assoc.release()

    text = conf(port, out, workers="2", subdirectories="series-date")
    with dcmrecvd(tmp_path, text) as daemon:
        senders = [threading.Thread(target=send, args=(sent[i::2],)) for i in range(2)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=60)
        view = forgetful.cut(tmp_path / "view") / "out"
        assert daemon.stop() == 0
    assert statuses == [0x0000] * len(sent)
    assert {os.path.dirname(name) for name in final_files(out)} == {
        "data/2024/02/01",
        "data/2024/02/02",
    }
    assert_acknowledged_survive(out, view, sent)
