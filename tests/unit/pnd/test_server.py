"""The Listener and the servers that share it: reloads and stops never close the port
for others, and never shut a socket down that systemd also holds."""

from __future__ import annotations

import socket

from pynetdicom import AE

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
