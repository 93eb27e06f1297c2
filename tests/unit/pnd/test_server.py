"""The Listener and the servers that share it: reloads and stops never close the port
for others, and never shut a socket down that systemd also holds."""

from __future__ import annotations

import gc
import socket

import pytest
from pynetdicom import AE, evt

from dcmrecvd.config import inifile
from dcmrecvd.pnd.server import Listener, Serving
from dcmrecvd.receiver import Receiver
from tests.support.net import LOCALHOST

VERIFICATION = "1.2.840.10008.1.1"


def echo(port: int) -> int:
    ae = AE()
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate(LOCALHOST, port)
    try:
        assert assoc.is_established
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def receiver() -> Receiver:
    loaded = inifile.parse("[receiver]\noutput-directory = .\n", "test")
    return Receiver(loaded.settings, loaded.profile)


def test_stopping_never_shuts_down_a_socket_systemd_holds() -> None:
    held_by_systemd = socket.create_server((LOCALHOST, 0))
    port = held_by_systemd.getsockname()[1]
    listener = Listener(held_by_systemd.dup(), inherited=True)
    serving = Serving(receiver(), listener)
    assert echo(port) == 0x0000
    serving.stop_accepting()
    listener.close()
    # shutdown() would have ended listening for systemd's copy too.
    with socket.create_connection((LOCALHOST, port), timeout=5):
        held_by_systemd.settimeout(5)
        accepted, _ = held_by_systemd.accept()
        accepted.close()
    held_by_systemd.close()


def test_a_new_server_takes_over_the_same_socket() -> None:
    listener = Listener.bind(LOCALHOST, 0)
    port = listener.address[1]
    first = Serving(receiver(), listener)
    assert echo(port) == 0x0000
    second = Serving(receiver(), listener)
    first.stop_accepting()
    assert not first.accepting and second.accepting
    assert echo(port) == 0x0000
    second.stop_accepting()
    listener.close()


def test_associations_share_the_receivers_contexts_and_copy_none() -> None:
    listener = Listener.bind(LOCALHOST, 0)
    served = receiver()
    serving = Serving(served, listener)
    seen: list[object] = []
    serving.server.bind(
        evt.EVT_ACCEPTED, lambda event: seen.append(event.assoc.acceptor.supported_contexts)
    )
    try:
        # Nothing for pynetdicom to deepcopy at every connection.
        assert serving.server.contexts == []
        assert echo(listener.address[1]) == 0x0000
        assert echo(listener.address[1]) == 0x0000
    finally:
        serving.stop_accepting()
        listener.close()
    assert len(seen) == 2
    assert seen[0] is seen[1]
    assert [str(cx.abstract_syntax) for cx in seen[0]] == [  # type: ignore[attr-defined]
        c.abstract_syntax for c in served.profile.contexts
    ]


def test_the_accept_loop_forces_no_garbage_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    collections: list[int] = []

    def collect(*args: object) -> int:
        collections.append(1)
        return 0

    monkeypatch.setattr(gc, "collect", collect)
    listener = Listener.bind(LOCALHOST, 0)
    serving = Serving(receiver(), listener)
    try:
        # pynetdicom's own collects in every 60th turn.
        for _ in range(200):
            serving.server.service_actions()
    finally:
        serving.stop_accepting()
        listener.close()
    assert collections == []
