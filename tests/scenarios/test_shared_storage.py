"""Two real dcmrecvd nodes writing into one output directory, as behind a load balancer
with a shared export: node a on 127.0.0.2 and node b on 127.0.0.3 (Linux routes all of
127/8 to the loopback), each with its own node-name. No file is ever torn or lost:
duplicates of one instance arriving at both nodes at once, a node's start-up sweep with
the other node mid-receive, and a node killed in the middle of a push. Each node's index
and completion events are its own: a node's start leaves the other node's objects out.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from dcmrecvd.store import objectstore, storage
from tests.support import dicomgen
from tests.support.daemon import DCMRECVD, Daemon, children, dcmrecvd
from tests.support.net import free_port
from tests.support.streaming_peer import (
    BIG,
    body,
    dataset,
    encoded,
    final_files,
    send_part,
    temp_files,
)
from tests.support.waiting import found, until

pytestmark = pytest.mark.slow

NODE_A = ("a", "127.0.0.2")
NODE_B = ("b", "127.0.0.3")
# Instances sent to both nodes at once, per duplicate policy.
SAME_INSTANCES = 20
# Large enough that the two nodes' writes of one instance overlap.
PIXEL_BYTES = 256 * 1024
# The push that node a dies in the middle of, and how many answers come before.
PUSHED = 200
ANSWERED_BEFORE_KILL = 10
DEADLINE = 60.0


@dataclass(frozen=True)
class Tracking:
    """A node's own index and events directory, with completion on."""

    index: Path
    events: Path


def node_conf(
    name: str,
    address: str,
    port: int,
    out: Path,
    duplicates: str,
    *,
    tracking: Tracking | None = None,
) -> str:
    text = (
        "[receiver]\n"
        f"port = {port}\n"
        f"bind-address = {address}\n"
        f"output-directory = {out}\n"
        f"node-name = {name}\n"
        "workers = 1\n"
        f"duplicates = {duplicates}\n"
    )
    if tracking is not None:
        text += (
            f"index = {tracking.index}\n"
            "[completion]\nseries-quiet = 1s\nstudy-quiet = 2s\n"
            "[events]\nmanifests = series-complete study-complete\n"
            f"directory = {tracking.events}\n"
        )
    return text + "[logging]\ndestination = stderr\n"


@contextmanager
def node(
    home: Path,
    name_and_address: tuple[str, str],
    port: int,
    out: Path,
    duplicates: str,
    *,
    tracking: Tracking | None = None,
) -> Iterator[Daemon]:
    """A dcmrecvd node until the block ends; `home` holds its configuration."""
    name, address = name_and_address
    home.mkdir()
    text = node_conf(name, address, port, out, duplicates, tracking=tracking)
    with dcmrecvd(home, text) as daemon:
        yield daemon


@contextmanager
def association(address: str, port: int) -> Iterator[Association]:
    ae = AE(ae_title="SENDER")
    ae.acse_timeout = 10
    ae.dimse_timeout = DEADLINE
    ae.network_timeout = DEADLINE
    ae.add_requested_context(dicomgen.CT, ExplicitVRLittleEndian)
    assoc = ae.associate(address, port, ae_title="DCMRECVD")
    assert assoc.is_established, f"no association with {address}:{port}"
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def version(uid: str, sender: int) -> Dataset:
    """A version of instance `uid` of its own, down to the last pixel byte, so that a file
    mixing two versions matches neither."""
    ds = dataset(uid, pixel_bytes=PIXEL_BYTES, patient=f"Sender^{sender}")
    ds.PixelData = bytes((i + 97 * sender) % 251 for i in range(len(ds.PixelData)))
    return ds


def name_of(uid: str) -> str:
    return f"CT.{uid}"


def dataset_bytes(raw: bytes) -> bytes:
    """The dataset of a Part-10 file's bytes (after the File Meta group)."""
    assert raw[128:132] == b"DICM"
    return raw[144 + int.from_bytes(raw[140:144], "little") :]


class Watcher(threading.Thread):
    """Reads every final file over and over while the nodes store: each read must be one
    whole version of its instance."""

    def __init__(self, out: Path, whole: dict[str, set[bytes]]) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.whole = whole
        self.done = threading.Event()
        self.reads = 0
        self.torn: list[str] = []

    def run(self) -> None:
        while not self.done.is_set():
            for path in self.out.iterdir():
                if path.name.startswith("."):
                    continue
                if dataset_bytes(path.read_bytes()) not in self.whole[path.name]:
                    self.torn.append(path.name)
                self.reads += 1
            self.done.wait(0.005)  # the pace of the reads, not a synchronisation


@pytest.mark.parametrize("policy", ["keep-first", "reject", "overwrite"])
def test_the_same_instances_at_both_nodes_at_once_give_one_whole_file_each(
    tmp_path: Path, policy: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()  # the same port on both addresses, as behind a balancer
    uids = [f"1.2.3.19.1.{n}" for n in range(1, SAME_INSTANCES + 1)]
    versions = {sender: [version(uid, sender) for uid in uids] for sender in (0, 1)}
    sent = {sender: [encoded(ds) for ds in datasets] for sender, datasets in versions.items()}
    whole = {name_of(uid): {sent[0][n], sent[1][n]} for n, uid in enumerate(uids)}
    # Both senders store instance n before either goes on to n + 1.
    in_step = threading.Barrier(2, timeout=DEADLINE)

    def push(address: str, sender: int) -> list[int]:
        statuses = []
        with association(address, port) as assoc:
            for ds in versions[sender]:
                in_step.wait()
                statuses.append(int(assoc.send_c_store(ds).Status))
        return statuses

    watcher = Watcher(out, whole)
    with (
        node(tmp_path / "a", NODE_A, port, out, policy) as a,
        node(tmp_path / "b", NODE_B, port, out, policy) as b,
    ):
        watcher.start()
        with ThreadPoolExecutor(2) as pool:
            pushes = [pool.submit(push, NODE_A[1], 0), pool.submit(push, NODE_B[1], 1)]
            to_a, to_b = (future.result(timeout=DEADLINE * 2) for future in pushes)
        watcher.done.set()
        watcher.join(timeout=DEADLINE)
    assert watcher.reads > 0 and watcher.torn == []
    assert final_files(out) == sorted(name_of(uid) for uid in uids)
    assert temp_files(out) == []
    stored = [body(out / name_of(uid)) for uid in uids]
    log = a.log() + b.log()
    if policy == "reject":
        # Exactly one Success per instance, and the file is what that node received.
        for n in range(SAME_INSTANCES):
            answers = (to_a[n], to_b[n])
            assert sorted(answers) == [0x0000, objectstore.DUPLICATE_SOP_INSTANCE], n
            assert stored[n] == sent[answers.index(0x0000)][n]
        assert log.count("file already exists, rejecting the object") == SAME_INSTANCES
    else:
        assert to_a == to_b == [0x0000] * SAME_INSTANCES
        assert all(stored[n] in whole[name_of(uid)] for n, uid in enumerate(uids))
    if policy == "keep-first":
        # Whichever node came second kept the first node's file (and said so).
        assert log.count("file already exists, keeping the stored file") == SAME_INSTANCES


def node_temp_files(out: Path, name: str) -> list[Path]:
    return [path for path in temp_files(out) if storage.temp_node(path.name) == name]


def test_a_nodes_sweep_takes_its_own_dead_temp_files_never_the_other_nodes(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    spool = storage.spool_directory(str(out))
    token = "0123456789abcdef"
    a_dead = spool / storage.temp_name("a", 1, token)
    b_dead = spool / storage.temp_name("b", 1, token)
    old_format = spool / f"{storage.TEMP_PREFIX}{token}{storage.TEMP_SUFFIX}"
    with node(tmp_path / "a", NODE_A, port, out, "overwrite") as a:
        with association(NODE_A[1], port) as held:
            send_part(held, dataset("1.2.3.19.2.1", pixel_bytes=BIG), 0.5)
            [a_live] = found(lambda: node_temp_files(out, "a"), "node a's temporary file")
            for path in (a_dead, b_dead, old_format):
                path.write_bytes(b"left by a killed receiver")
            with node(tmp_path / "b", NODE_B, port, out, "overwrite") as b:
                # READY=1 comes after the start-up sweep.
                assert sorted(temp_files(out)) == sorted([a_live, a_dead])
            assert "removed 2 temporary file(s) of an interrupted receiver" in b.log()
            held.abort()
        until(lambda: not a_live.exists(), "node a removed the temporary file of the abort")
        assert temp_files(out) == [a_dead]
        assert a.stop() == 0
    # Node a again: its own dead file goes.
    with node(tmp_path / "a-again", NODE_A, free_port(), out, "overwrite") as again:
        assert temp_files(out) == []
    assert "removed 1 temporary file(s) of an interrupted receiver" in again.log()
    assert final_files(out) == []


def is_gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie that its new parent has not reaped yet
    has ended too)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status.rpartition(")")[2].split()[0] == "Z"


def kill_node(daemon: Daemon) -> None:
    """kill -9 the node: its parent and every process it forked."""
    forked = children(daemon.proc.pid)
    daemon.proc.send_signal(signal.SIGKILL)
    for pid in forked:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert daemon.proc.wait(timeout=DEADLINE) == -signal.SIGKILL
    until(lambda: all(is_gone(pid) for pid in forked), "node a's workers ended")


def test_a_node_killed_mid_push_loses_no_answered_instance(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    uids = [f"1.2.3.19.3.{n}" for n in range(1, PUSHED + 1)]
    sources = {uid: dataset(uid, pixel_bytes=64 * 1024) for uid in uids}
    answered: dict[str, int] = {}

    def push_until_cut() -> None:
        with association(NODE_A[1], port) as assoc:
            for uid, ds in sources.items():
                try:
                    response = assoc.send_c_store(ds)
                except RuntimeError:
                    return  # the association was gone before the request
                if "Status" not in response:
                    return  # gone before the answer
                answered[uid] = int(response.Status)

    with node(tmp_path / "b", NODE_B, port, out, "keep-first") as b:
        with (
            node(tmp_path / "a", NODE_A, port, out, "keep-first") as a,
            association(NODE_A[1], port) as held,
        ):
            # A receive in progress when node a dies leaves its temporary file.
            send_part(held, dataset("1.2.3.19.3.999", pixel_bytes=BIG), 0.5)
            found(lambda: node_temp_files(out, "a"), "node a's temporary file")
            with ThreadPoolExecutor(1) as pool:
                pushing = pool.submit(push_until_cut)
                until(
                    lambda: len(answered) >= ANSWERED_BEFORE_KILL,
                    "node a answered the first instances",
                    timeout=DEADLINE,
                )
                kill_node(a)
                pushing.result(timeout=DEADLINE)
        assert set(answered.values()) == {0x0000}
        assert ANSWERED_BEFORE_KILL <= len(answered) < PUSHED
        for uid in answered:
            assert body(out / name_of(uid)) == encoded(sources[uid]), uid
        left_by_a = node_temp_files(out, "a")
        assert left_by_a != []
        # What node a did not answer goes to node b; some of it node a may have stored.
        rest = [uid for uid in uids if uid not in answered]
        with association(NODE_B[1], port) as assoc:
            assert [int(assoc.send_c_store(sources[uid]).Status) for uid in rest] == [0x0000] * len(
                rest
            )
        assert final_files(out) == sorted(name_of(uid) for uid in uids)
        for uid in uids:
            assert body(out / name_of(uid)) == encoded(sources[uid]), uid
        # Node b stored and ran on beside them: node a's leftovers stay.
        assert node_temp_files(out, "a") == left_by_a
        assert b.proc.poll() is None
    with node(tmp_path / "a-again", NODE_A, free_port(), out, "keep-first") as again:
        assert temp_files(out) == []
    assert f"removed {len(left_by_a)} temporary file(s)" in again.log()


def study(uid: str, instances: int) -> list[Dataset]:
    """The instances of a study of one series."""
    datasets = []
    for n in range(1, instances + 1):
        ds = dataset(f"{uid}.1.{n}")
        ds.StudyInstanceUID = uid
        ds.SeriesInstanceUID = f"{uid}.1"
        datasets.append(ds)
    return datasets


def store_at(address: str, port: int, datasets: list[Dataset]) -> None:
    with association(address, port) as assoc:
        assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0x0000] * len(datasets)


def left_unlisted(out: Path, name: str, datasets: list[Dataset]) -> None:
    """What node `name` leaves when it dies between storing objects and listing them:
    files its store code wrote (so marked as its own) that its index does not have."""
    spool = storage.Spool(storage.spool_directory(str(out)), name)
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        temp = storage.TempFile(spool)
        try:
            temp.write(buffer.getvalue())
            temp.commit(out / name_of(ds.SOPInstanceUID), replace=False)
        finally:
            temp.discard()


def paths_of(out: Path, datasets: list[Dataset]) -> set[str]:
    return {str(out / name_of(ds.SOPInstanceUID)) for ds in datasets}


def completions(events: Path) -> list[tuple[str, str]]:
    """The series and studies completed, as the manifests in `events`/new/ say."""
    new = events / "new"
    manifests = [json.loads(p.read_text()) for p in new.iterdir()] if new.is_dir() else []
    return sorted(
        (m["event"], m.get("series_instance_uid") or m["study_instance_uid"]) for m in manifests
    )


def completed(uid: str) -> list[tuple[str, str]]:
    return [("series-complete", f"{uid}.1"), ("study-complete", uid)]


def query(index: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(index)) as db:
        return db.execute(sql).fetchall()


def test_a_restarted_node_lists_and_completes_only_its_own_objects(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    a_tracking = Tracking(tmp_path / "a-index.sqlite", tmp_path / "a-events")
    b_tracking = Tracking(tmp_path / "b-index.sqlite", tmp_path / "b-events")
    ours = study("1.2.3.19.4.1", 2)
    unlisted = study("1.2.3.19.4.2", 2)
    theirs = study("1.2.3.19.4.3", 3)
    with node(tmp_path / "b", NODE_B, port, out, "keep-first", tracking=b_tracking) as b:
        with node(tmp_path / "a", NODE_A, port, out, "keep-first", tracking=a_tracking) as a:
            store_at(NODE_A[1], port, ours)
            until(
                lambda: completions(a_tracking.events) == completed("1.2.3.19.4.1"),
                "node a completed its study",
            )
            until(
                lambda: (
                    query(a_tracking.index, "SELECT 1 FROM deliveries WHERE state != 'done'") == []
                ),
                "node a's deliveries done",
            )
            kill_node(a)
        left_unlisted(out, NODE_A[0], unlisted)
        store_at(NODE_B[1], port, theirs)
        until(
            lambda: completions(b_tracking.events) == completed("1.2.3.19.4.3"),
            "node b completed its study",
        )
        assert {storage.stored_by(path) for path in paths_of(out, theirs)} == {NODE_B[0]}
        checked = subprocess.run(
            [DCMRECVD, "--config", str(a.conf), "--check-index"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 1, checked.stderr
        assert checked.stdout.splitlines()[:-1] == [
            f"not listed: {path}" for path in sorted(paths_of(out, unlisted))
        ]
        assert checked.stdout.endswith(": 2 not listed, 0 gone, 3 of other nodes\n")
        a_again = tmp_path / "a-again"
        with node(a_again, NODE_A, port, out, "keep-first", tracking=a_tracking) as again:
            until(
                lambda: (
                    completions(a_tracking.events)
                    == sorted(completed("1.2.3.19.4.1") + completed("1.2.3.19.4.2"))
                ),
                "node a completed the study it had not listed",
            )
            assert again.stop() == 0
        assert b.stop() == 0
    assert (
        "listed 2 stored object(s) it lacked, dropped 0 that are gone, left out 3 of other nodes"
        in again.log()
    )
    listed = {path for (path,) in query(a_tracking.index, "SELECT path FROM objects")}
    assert listed == paths_of(out, ours) | paths_of(out, unlisted)
    # Node b's study never opened in node a's index: no event for it can ever come.
    assert query(a_tracking.index, "SELECT study_instance_uid FROM studies ORDER BY 1") == [
        ("1.2.3.19.4.1",),
        ("1.2.3.19.4.2",),
    ]
    assert completions(a_tracking.events) == sorted(
        completed("1.2.3.19.4.1") + completed("1.2.3.19.4.2")
    )
    assert completions(b_tracking.events) == completed("1.2.3.19.4.3")
