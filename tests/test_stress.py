"""C-STORE responses arrive in time, whatever the threads' and the workers' timing.

The deterministic tests force the interleavings that lost a response or a connection.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pynetdicom.events import Event

from dcmrecvd import scp
from tests import rawpdu
from tests.conftest import free_port
from tests.peers import our_receiver
from tests.streaming_peer import final_files, settings

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
