"""C-STORE responses arrive in time, whatever the threads' and the workers' timing.

The fast tests force, deterministically, the interleavings that lost a response or a
connection: a C-STORE served before the association thread marked the association
established; a worker retiring with a connection not yet handed to its association;
a worker retired before it had its signal handlers; a stop that took an accepted
association for one not yet asked for; a reload that retired the old workers before
the new ones accepted; a user primitive in Sta13; more simultaneous connections than
a backlog of 50. The slow ones run the real daemon:
raw-socket senders (one thread and one association each) time every instance from
the end of its dataset to its response and fail on any response later than LIMIT
and any association that does not open; storescu processes check exit codes and
files; a SIGHUP storm must not queue reloads ahead of a stop.

Bounded for CI: the whole file takes about 2 minutes on this 2-core machine. By
hand, the full-size run of issue #13 (300 CT of 0.5 MB, one storescu process per
association, fsync on, log level warn), before -> after these fixes: 32 associations,
7 of 15 runs with a stalled association -> 0 of 15 (and 0 of 10 at 16); SIGHUP every
1 s, 64 associations: 5 of 5 runs with 6 to 22 refused -> 0 of 5; SIGHUP every 0.1 s,
4 associations: 4 of 4 runs with all 4 refused -> 0 of 5 (32 associations: 0 of 5).
The slow scenarios, with the first fix undone, fail in 4 of the 4 without reloads.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pynetdicom import transport
from pynetdicom.events import Event

from dcmrecvd import logs
from dcmrecvd.config import inifile
from dcmrecvd.pnd.server import Listener
from dcmrecvd.receiver import Receiver
from dcmrecvd.service import systemd, workers
from dcmrecvd.service.arbiter import Service
from dcmrecvd.service.board import Board
from dcmrecvd.store import objectstore
from tests.support import asconfigs, dicomgen, rawpdu
from tests.support.asconfigs import VERIFY_CT_CFG
from tests.support.daemon import Daemon, conf, dcmrecvd
from tests.support.net import LOCALHOST, free_port
from tests.support.peers import our_receiver
from tests.support.streaming_peer import final_files, settings, wait_until

# Bounds every wait of the deterministic tests; far above what any step needs.
STEP = 5.0


def test_a_store_served_before_the_association_thread_marks_it_established_is_answered(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DUL thread sends the A-ASSOCIATE-AC before the association thread sets
    is_established (after EVT_ACCEPTED): a peer's first C-STORE may be served by the fast
    path in between. Here the association thread is held in EVT_ACCEPTED until it is."""
    served = threading.Event()
    serve_store = Receiver._serve_store
    on_accepted = Receiver._on_accepted

    def serving(self: Receiver, *args: object) -> object:
        try:
            return serve_store(self, *args)  # type: ignore[arg-type]
        finally:
            served.set()

    def held(self: Receiver, event: Event) -> None:
        served.wait(STEP)
        on_accepted(self, event)

    monkeypatch.setattr(Receiver, "_serve_store", serving)
    monkeypatch.setattr(Receiver, "_on_accepted", held)
    port = free_port()
    with our_receiver(asconfigs.load(tmp_path, VERIFY_CT_CFG), port, settings(port, out)):
        peer = rawpdu.Peer(port)
        assert peer.associate()
        assert peer.store(1, "1.2.3.4", rawpdu.explicit_dataset("1.2.3.4")) == objectstore.SUCCESS
        assert served.is_set()
        assert final_files(out) == ["CT.1.2.3.4"]
        peer.close()


def test_a_user_primitive_after_the_dul_aborted_is_dropped_with_its_event(
    tmp_path: Path, out: Path
) -> None:
    """After an unexpected PDU the DUL has sent an A-ABORT and reads what the peer still
    sends until it closes (Sta13), where the state machine has no transition for a
    user's primitive (here an A-ABORT from a stop). The reactor dropped the event, not
    the primitive, which raised the event again at once: a busy loop, a core's worth of
    the worker's GIL, that no longer looked at the socket, until the ARTIM timer (the
    ACSE timeout, 30 s) ended Sta13. Here the primitive comes while the DUL is reading
    a PDU that the peer completes afterwards."""
    port = free_port()
    with our_receiver(
        asconfigs.load(tmp_path, VERIFY_CT_CFG), port, settings(port, out)
    ) as receiver:
        peer = rawpdu.Peer(port)
        assert peer.associate()
        after = rawpdu.p_data(rawpdu.pdv(1, 0, b"xx"))
        assert peer.send(rawpdu.associate_rq() + after[:3])  # not in Sta6: A-ABORT
        answer = peer.read_pdu()
        assert answer is not None and answer[0] == rawpdu.ABORT
        (assoc,) = receiver.ae.active_associations
        dul = assoc.dul
        wait_until(lambda: dul.state_machine.current_state == "Sta13", STEP, "Sta13")
        assoc.acse.send_abort(0x00)
        assert peer.send(after[3:])
        wait_until(lambda: not dul.to_provider_queue.queue, STEP, "the A-ABORT dropped")
        wait_until(lambda: not dul.is_alive(), STEP, "the DUL closed the connection")
        peer.close()


def test_more_peers_than_dcmtks_backlog_can_connect_at_once(port: int) -> None:
    """64 connections (the default association limit) wait in the listening socket's
    backlog while no accept loop takes them: none is dropped for retries."""
    listener = Listener.bind(LOCALHOST, port)
    peers = []
    try:
        for _ in range(64):
            peers.append(socket.create_connection((LOCALHOST, port), timeout=STEP))
    finally:
        for peer in peers:
            peer.close()
        listener.close()


@dataclass
class ForkedWorker:
    """A worker forked from this process, as the daemon forks them."""

    pid: int
    slot: int
    board: Board
    port: int

    def exit_code(self) -> int:
        """Wait (up to STEP) for the worker to end; its exit code."""
        ended: list[int] = []
        wait_until(lambda: _reaped(self.pid, ended), STEP, "the worker ended")
        self.pid = 0
        return ended[0]


@contextmanager
def forked_worker(out: Path) -> Iterator[ForkedWorker]:
    """Fork one worker on a listener of its own; killed at the end if still running."""
    # The worker tells its parent, this process, when it starts and stops accepting.
    previous = signal.signal(workers.ACCEPTING_CHANGED, lambda *_: None)
    port = free_port()
    text = f"[receiver]\nport = {port}\noutput-directory = {out}\n[logging]\ndestination = stderr\n"
    generation = workers.Generation(
        inifile.parse(text, "stress.conf"),
        None,
        {"dicom": Listener.bind(LOCALHOST, port)},
        "dicom",
        "dicom-tls",
    )
    board = Board()
    worker = ForkedWorker(*workers.spawn(board, generation), board, port)
    try:
        yield worker
    finally:
        if worker.pid:
            os.kill(worker.pid, signal.SIGKILL)
            os.waitpid(worker.pid, 0)
        signal.signal(workers.ACCEPTING_CHANGED, previous)
        generation.listeners["dicom"].close()


def test_a_retiring_worker_serves_a_connection_it_accepted_before_the_association_started(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker told to retire stops accepting and exits once nothing runs; a connection
    accepted just before, whose request thread has not yet started its association, was
    not counted, and the worker's exit reset it: a reload storm's "Peer aborted
    Association" at association request. Here the request thread is held until the
    worker has stopped accepting."""
    held_r, held_w = os.pipe()  # the worker's request thread is held
    go_r, go_w = os.pipe()  # the test lets it go on
    handle = transport.RequestHandler.handle

    def held(self: transport.RequestHandler) -> None:
        os.write(held_w, b".")
        select.select([go_r], [], [], STEP)
        handle(self)

    monkeypatch.setattr(transport.RequestHandler, "handle", held)
    try:
        with forked_worker(out) as worker:
            wait_until(lambda: worker.board.accepting(worker.slot), STEP, "the worker accepts")
            peer = rawpdu.Peer(worker.port, timeout=STEP)
            assert peer.send(rawpdu.associate_rq())
            assert select.select([held_r], [], [], STEP)[0], "the connection reached the worker"
            os.kill(worker.pid, signal.SIGUSR1)
            wait_until(
                lambda: not worker.board.accepting(worker.slot), STEP, "the worker stops accepting"
            )
            os.write(go_w, b".")
            answer = peer.read_pdu(STEP)
            assert answer is not None and answer[0] == rawpdu.ASSOCIATE_AC
            assert (
                peer.store(1, "1.2.3.5", rawpdu.explicit_dataset("1.2.3.5")) == objectstore.SUCCESS
            )
            assert peer.send(rawpdu.release_rq())
            assert peer.read_pdu(STEP) is not None
            peer.close()
            assert worker.exit_code() == 0
    finally:
        for fd in (held_r, held_w, go_r, go_w):
            os.close(fd)
    assert final_files(out) == ["CT.1.2.3.5"]


def test_a_worker_retired_before_it_has_its_signal_handlers_retires_cleanly(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a reload storm a worker may be retired (SIGUSR1) before it has set its
    handlers; SIGUSR1's default action killed it, and the parent's spool sweep for a
    worker that did not exit 0 then raced the live workers' new temporary files. Here
    the worker is held before it sets them."""
    go_r, go_w = os.pipe()
    end_with_parent = workers.end_with_parent

    def held(name: str) -> None:
        select.select([go_r], [], [], STEP)
        end_with_parent(name)

    monkeypatch.setattr(workers, "end_with_parent", held)
    try:
        with forked_worker(out) as worker:
            os.kill(worker.pid, signal.SIGUSR1)
            os.write(go_w, b".")
            assert worker.exit_code() == 0
    finally:
        os.close(go_r)
        os.close(go_w)


def test_a_stop_gives_its_grace_to_an_association_accepted_but_not_yet_marked_established(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop lets established associations finish and aborts the others; it took
    is_established for "accepted", which pynetdicom sets only after EVT_ACCEPTED, when
    the peer has its A-ASSOCIATE-AC and may be storing already. Here the association
    thread is held in EVT_ACCEPTED while the worker is stopped."""
    held_r, held_w = os.pipe()
    go_r, go_w = os.pipe()
    on_accepted = Receiver._on_accepted

    def held(self: Receiver, event: Event) -> None:
        os.write(held_w, b".")
        select.select([go_r], [], [], STEP)
        on_accepted(self, event)

    monkeypatch.setattr(Receiver, "_on_accepted", held)
    try:
        with forked_worker(out) as worker:
            wait_until(lambda: worker.board.accepting(worker.slot), STEP, "the worker accepts")
            peer = rawpdu.Peer(worker.port, timeout=STEP)
            assert peer.associate()
            assert select.select([held_r], [], [], STEP)[0], "held in EVT_ACCEPTED"
            os.kill(worker.pid, signal.SIGTERM)
            wait_until(lambda: not worker.board.accepting(worker.slot), STEP, "the worker stops")
            assert (
                peer.store(1, "1.2.3.6", rawpdu.explicit_dataset("1.2.3.6")) == objectstore.SUCCESS
            )
            os.write(go_w, b".")
            assert peer.send(rawpdu.release_rq())
            answer = peer.read_pdu(STEP)
            assert answer is not None and answer[0] == rawpdu.RELEASE_RP
            peer.close()
            assert worker.exit_code() == 0
    finally:
        for fd in (held_r, held_w, go_r, go_w):
            os.close(fd)
    assert final_files(out) == ["CT.1.2.3.6"]


def test_a_reload_retires_the_old_workers_once_the_new_ones_accept(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retired at once, the old generation stopped accepting while the new one was still
    starting: connections waited, unanswered, for as long as a worker takes to start
    (longest under the load that reloads come with)."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setattr(logs, "set_level", lambda _settings: None)  # this process's loggers
    port = free_port()
    text = f"[receiver]\nport = {port}\noutput-directory = {out}\nworkers = 1\n"
    loaded = inifile.parse(text, "stress.conf")
    listeners = {"dicom": Listener.bind(LOCALHOST, port)}
    service = Service(loaded, None, listeners, systemd.Notifier(None), None)
    handled = (workers.ACCEPTING_CHANGED, signal.SIGCHLD)
    previous = {signum: signal.signal(signum, service._on_signal) for signum in handled}
    spawned: list[tuple[int, int]] = []
    retired_while: list[list[bool]] = []  # whether each new worker accepted, at SIGUSR1
    spawn, send = service._spawn, service._signal

    def spawning() -> tuple[int, int]:
        spawned.append(spawn())
        return spawned[-1]

    def sending(pids: Iterable[int], signum: int) -> None:
        if signum == signal.SIGUSR1:
            retired_while.append([service.board.accepting(slot) for _, slot in spawned[1:]])
        send(pids, signum)

    monkeypatch.setattr(service, "_spawn", spawning)
    monkeypatch.setattr(service, "_signal", sending)
    try:
        pid, slot = service._spawn()
        service.current[pid] = slot
        wait_until(lambda: service.board.accepting(slot), STEP, "the first worker accepts")
        service._switch(loaded, None)
        assert retired_while == [[True]]
    finally:
        service.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _reaped(pid: int, statuses: list[int]) -> bool:
    """Whether `pid` has ended; its exit code is appended to `statuses`."""
    found, status = os.waitpid(pid, os.WNOHANG)
    if found != pid:
        return False
    statuses.append(os.waitstatus_to_exitcode(status))
    return True


@pytest.mark.slow
def test_reloads_asked_for_faster_than_they_end_are_one_and_a_stop_does_not_wait(
    tmp_path: Path,
) -> None:
    """SIGHUP every 10 ms until three reloads have ended, then SIGTERM: the daemon stops
    after at most the one reload in progress, not after every SIGHUP queued meanwhile."""
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    with dcmrecvd(tmp_path, conf(port, out, "level = info")) as daemon:
        log = tmp_path / "stderr.log"  # where dcmrecvd() has the daemon write
        with _Reloads(daemon, 0.01):
            wait_until(lambda: log.read_text().count(RELOADED) >= 3, 4 * STEP, "three reloads")
        asked = log.read_text().count(RELOADED)
        assert daemon.stop() == 0
    assert daemon.log().count(RELOADED) - asked <= 1


RELOADED = "reloaded "

# The watchdog: a response later than this after the end of its dataset fails the test.
LIMIT = 5.0
SMALL = 2_000
LARGE = 512 * 1024


@dataclass(frozen=True)
class Round:
    """`associations` at once, each storing `instances` objects of `sizes` (cycled)."""

    associations: int
    instances: int
    sizes: tuple[int, ...]


@dataclass
class Outcome:
    """What the senders of one round saw; appended to from their threads."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)


def _send(port: int, name: str, instances: list[tuple[str, bytes]], outcome: Outcome) -> None:
    """One association storing `instances` (UID, dataset); the outcome of each."""
    started = time.monotonic()
    try:
        peer = rawpdu.Peer(port, timeout=LIMIT)
    except OSError as exc:
        outcome.failures.append(f"{name}: cannot connect: {exc}")
        return
    try:
        answer = None
        if peer.send(rawpdu.associate_rq(calling=name)):
            answer = peer.read_pdu(LIMIT)
        if answer is None or answer[0] != rawpdu.ASSOCIATE_AC:
            waited = time.monotonic() - started
            outcome.failures.append(
                f"{name}: association not opened after {waited:.1f} s: {answer!r:.80}"
            )
            return
        for message_id, (uid, dataset) in enumerate(instances, 1):
            command = rawpdu.command_set(rawpdu.C_STORE_RQ, message_id=message_id, sop_instance=uid)
            pdus = [rawpdu.p_data(rawpdu.pdv(1, rawpdu.COMMAND | rawpdu.LAST, command))]
            pdus += rawpdu.dataset_pdus(1, dataset)
            if not peer.send(b"".join(pdus)):
                outcome.failures.append(f"{name}: connection lost sending {uid}")
                return
            ended = time.monotonic()
            answer = peer.read_pdu(LIMIT)
            waited = time.monotonic() - ended
            status = rawpdu.response_status(answer)
            if status != objectstore.SUCCESS:
                outcome.failures.append(
                    f"{name}: {uid}: status {status} after {waited:.1f} s (None: no response)"
                )
                return
            outcome.latencies.append(waited)
            outcome.sent.append(uid)
        peer.send(rawpdu.release_rq())
        answer = peer.read_pdu(LIMIT)
        if answer is None or answer[0] != rawpdu.RELEASE_RP:
            outcome.failures.append(f"{name}: release not answered: {answer!r:.80}")
    finally:
        peer.close()


def _run(port: int, round_: Round, prefix: str) -> Outcome:
    """One round: every association in a thread of its own, all started at once."""
    outcome = Outcome()
    threads = []
    for a in range(round_.associations):
        instances = []
        for i in range(round_.instances):
            uid = f"{prefix}.{a + 1}.{i + 1}"
            size = round_.sizes[i % len(round_.sizes)]
            instances.append((uid, rawpdu.explicit_dataset(uid, bytes(size))))
        name = f"S{a + 1}"
        threads.append(threading.Thread(target=_send, args=(port, name, instances, outcome)))
    for thread in threads:
        thread.start()
    # Each sender ends within LIMIT per step; this only keeps a hang from hanging CI.
    deadline = time.monotonic() + LIMIT * (round_.instances + 3)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            outcome.failures.append(f"{thread.name}: still running after the round's deadline")
    return outcome


class _Reloads:
    """SIGHUP to the daemon every `interval` seconds while in use."""

    def __init__(self, daemon: Daemon, interval: float | None) -> None:
        self._pid = daemon.proc.pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop)
        self.sent = 0

    def _loop(self) -> None:
        assert self._interval is not None
        while not self._stop.wait(self._interval):
            os.kill(self._pid, signal.SIGHUP)
            self.sent += 1

    def __enter__(self) -> _Reloads:
        if self._interval is not None:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._interval is not None:
            self._thread.join()


@pytest.fixture(params=["tmpfs", "disk"])
def output(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """The output directory: in /dev/shm (tmpfs) or under tmp_path (the real disk)."""
    if request.param == "disk":
        path = tmp_path / "in"
        path.mkdir()
        yield path
        return
    if not Path("/dev/shm").is_dir():
        pytest.skip("no tmpfs at /dev/shm")
    path = Path(tempfile.mkdtemp(prefix="dcmrecvd-stress-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _daemon_conf(port: int, out: Path, level: str) -> str:
    # Room for the associations of retired workers still finishing during reloads; a
    # DIMSE timeout past LIMIT, so that a lost response shows as late, not as an abort.
    return conf(
        port, out, f"level = {level}", max_associations="256", dimse_timeout=str(int(4 * LIMIT))
    )


ROUNDS = (
    Round(1, 40, (SMALL,)),
    Round(8, 4, (LARGE,)),
    Round(32, 3, (SMALL, LARGE)),
    Round(64, 2, (LARGE, SMALL)),
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("level", "reload_every"),
    [("warn", None), ("debug", None), ("warn", 0.25), ("debug", 0.5)],
    ids=["warn", "debug", "warn-reloads", "debug-reloads"],
)
def test_every_response_comes_in_time(
    tmp_path: Path, output: Path, level: str, reload_every: float | None
) -> None:
    """ROUNDS twice over: 1 to 64 associations, small and large objects."""
    port = free_port()
    expected: set[str] = set()
    latencies: list[float] = []
    with dcmrecvd(tmp_path, _daemon_conf(port, output, level)) as daemon:
        with _Reloads(daemon, reload_every) as reloads:
            for repetition in range(2):
                for number, round_ in enumerate(ROUNDS):
                    prefix = f"1.2.826.0.1.3680043.9.7777.{repetition + 1}.{number + 1}"
                    outcome = _run(port, round_, prefix)
                    assert outcome.failures == [], round_
                    expected.update(outcome.sent)
                    latencies += outcome.latencies
        assert reload_every is None or reloads.sent > 0
        assert daemon.stop() == 0
    assert len(expected) == 2 * sum(r.associations * r.instances for r in ROUNDS)
    assert set(final_files(output)) == {f"CT.{uid}" for uid in expected}
    assert max(latencies) < LIMIT
    assert "Network timeout reached" not in daemon.log()


# storescu times out a response later than LIMIT, and an association not opened in 10 s.
STORESCU = ("storescu", "-xs", "-ta", "10", "-td", str(int(LIMIT)))


def _ct_file(path: Path, uid: str, pixel_bytes: int) -> Path:
    ds = dicomgen.part10(dicomgen.Spec(dicomgen.CT, uid))
    side = int((pixel_bytes // 2) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = bytes(side * side * 2)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.slow
@pytest.mark.interop
@pytest.mark.parametrize("reload_every", [None, 0.2], ids=["steady", "reloads"])
def test_storescu_processes_store_every_file(tmp_path: Path, reload_every: float | None) -> None:
    """16 storescu at once, 5 files each; a response later than LIMIT fails storescu."""
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    sources = tmp_path / "send"
    sources.mkdir()
    batches = [
        [
            _ct_file(sources / f"{a}-{i}.dcm", f"1.2.826.0.1.3680043.9.7778.{a}.{i}", size)
            for i, size in enumerate((LARGE, SMALL, LARGE, SMALL, LARGE), 1)
        ]
        for a in range(1, 17)
    ]
    with dcmrecvd(tmp_path, _daemon_conf(port, out, "warn")) as daemon:
        with _Reloads(daemon, reload_every):
            senders = [
                subprocess.Popen(
                    [*STORESCU, "-aet", f"SCU{a}", "127.0.0.1", str(port), *map(str, batch)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for a, batch in enumerate(batches, 1)
            ]
            results = [(p.wait(timeout=120), p.communicate()[1]) for p in senders]
        assert daemon.stop() == 0
    assert [(rc, err) for rc, err in results if rc] == []
    stored = set(final_files(out))
    assert stored == {
        f"CT.1.2.826.0.1.3680043.9.7778.{a}.{i}" for a in range(1, 17) for i in range(1, 6)
    }
