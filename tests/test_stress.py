"""C-STORE responses arrive in time, whatever the threads' and the workers' timing.

The deterministic tests force the interleavings that lost a response or a connection.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from pathlib import Path

import pytest
from pynetdicom import transport
from pynetdicom.events import Event

from dcmrecvd import config, scp, workers
from dcmrecvd.server import Listener
from tests import rawpdu
from tests.conftest import free_port
from tests.peers import LOCALHOST, our_receiver
from tests.streaming_peer import final_files, settings, wait_until

# Bounds every wait of the deterministic tests; far above what any step needs.
STEP = 5.0


def test_a_store_served_before_the_association_thread_marks_it_established_is_answered(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DUL thread sends the A-ASSOCIATE-AC before the association thread sets
    is_established (after EVT_ACCEPTED): a peer's first C-STORE may be served by the fast
    path in between. Here the association thread is held in EVT_ACCEPTED until it is."""
    served = threading.Event()
    serve_store = scp.Receiver._serve_store
    on_accepted = scp.Receiver._on_accepted

    def serving(self: scp.Receiver, *args: object) -> object:
        try:
            return serve_store(self, *args)  # type: ignore[arg-type]
        finally:
            served.set()

    def held(self: scp.Receiver, event: Event) -> None:
        served.wait(STEP)
        on_accepted(self, event)

    monkeypatch.setattr(scp.Receiver, "_serve_store", serving)
    monkeypatch.setattr(scp.Receiver, "_on_accepted", held)
    port = free_port()
    with our_receiver(rawpdu.profile(tmp_path), port, settings(port, out)):
        peer = rawpdu.Peer(port)
        assert peer.associate()
        assert peer.store(1, "1.2.3.4", rawpdu.explicit_dataset("1.2.3.4")) == scp.SUCCESS
        assert served.is_set()
        assert final_files(out) == ["CT.1.2.3.4"]
        peer.close()


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
    # The worker tells its parent, this process, that it stopped accepting.
    previous = signal.signal(workers.STOPPED_ACCEPTING, lambda *_: None)
    port = free_port()
    text = f"[receiver]\nport = {port}\noutput-directory = {out}\n[logging]\ndestination = stderr\n"
    loaded = config.parse(text, "stress.conf")
    listener = Listener.bind(LOCALHOST, port)
    board = workers.Board()
    generation = workers.Generation(loaded, None, {"dicom": listener}, "dicom", "dicom-tls")
    pid, slot = workers.spawn(board, generation)
    try:
        wait_until(lambda: board.accepting(slot), STEP, "the worker accepts")
        peer = rawpdu.Peer(port, timeout=STEP)
        assert peer.send(rawpdu.associate_rq())
        assert select.select([held_r], [], [], STEP)[0], "the connection reached the worker"
        os.kill(pid, signal.SIGUSR1)
        wait_until(lambda: not board.accepting(slot), STEP, "the worker stops accepting")
        os.write(go_w, b".")
        answer = peer.read_pdu(STEP)
        assert answer is not None and answer[0] == rawpdu.ASSOCIATE_AC
        assert peer.store(1, "1.2.3.5", rawpdu.explicit_dataset("1.2.3.5")) == scp.SUCCESS
        assert peer.send(rawpdu.release_rq())
        assert peer.read_pdu(STEP) is not None
        peer.close()
        ended: list[int] = []
        wait_until(lambda: _reaped(pid, ended), STEP, "the worker retired")
        pid = 0
        assert ended == [0]
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        signal.signal(workers.STOPPED_ACCEPTING, previous)
        listener.close()
        for fd in (held_r, held_w, go_r, go_w):
            os.close(fd)
    assert final_files(out) == ["CT.1.2.3.5"]


def _reaped(pid: int, statuses: list[int]) -> bool:
    """Whether `pid` has ended; its exit code is appended to `statuses`."""
    found, status = os.waitpid(pid, os.WNOHANG)
    if found != pid:
        return False
    statuses.append(os.waitstatus_to_exitcode(status))
    return True
