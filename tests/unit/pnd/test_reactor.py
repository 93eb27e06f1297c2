"""The blocking reactors: installed on every association, idle without waking, clean at the end."""

from __future__ import annotations

import os
import socket
import struct
import threading
from pathlib import Path

import pytest
from pynetdicom.association import Association

from dcmrecvd.pnd import reactor
from dcmrecvd.profiles import Profile
from dcmrecvd.receiver import Receiver
from tests.support import rawpdu
from tests.support.net import LOCALHOST
from tests.support.peers import our_receiver
from tests.support.streaming_peer import association, dataset, final_files, settings, wait_until

# Wake-ups an idle association's two threads may take in IDLE_WINDOW: pynetdicom's
# 1 ms polling takes hundreds; the blocking reactors wake once per second at most.
IDLE_WINDOW = 0.5
IDLE_WAKEUPS = 10


def served(receiver: Receiver) -> Association:
    wait_until(lambda: len(receiver.ae.active_associations) == 1, what="association accepted")
    found: Association = receiver.ae.active_associations[0]
    return found


def context_switches(native_id: int) -> int:
    """Voluntary context switches of one thread of this process so far."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("voluntary_ctxt_switches:"))
    return int(line.split()[1])


def test_every_association_gets_the_blocking_reactors(
    profile: Profile, out: Path, port: int
) -> None:
    with our_receiver(profile, port, settings(port, out)) as receiver, association(port) as a:
        assert a.is_established
        assoc = served(receiver)
        assert isinstance(assoc, reactor.BlockingAssociation)
        assert isinstance(assoc.dul, reactor.BlockingDUL)
        assert a.send_c_store(dataset("1.2.3.4.1")).Status == 0x0000
    assert final_files(out) == ["CT.1.2.3.4.1"]


def test_an_idle_association_does_not_wake_up(profile: Profile, out: Path, port: int) -> None:
    with our_receiver(profile, port, settings(port, out)) as receiver, association(port) as a:
        assert a.is_established
        assoc = served(receiver)
        threads = [assoc.native_id, assoc.dul.native_id]
        assert None not in threads
        before = [context_switches(t) for t in threads if t is not None]
        threading.Event().wait(IDLE_WINDOW)  # the window observed, not a synchronisation
        after = [context_switches(t) for t in threads if t is not None]
        assert sum(after) - sum(before) <= IDLE_WAKEUPS
        # And it still serves at once.
        assert a.send_c_store(dataset("1.2.3.4.2")).Status == 0x0000


def test_threads_end_with_the_association(profile: Profile, out: Path, port: int) -> None:
    with our_receiver(profile, port, settings(port, out)) as receiver:
        with association(port) as a:
            assoc = served(receiver)
            dul = assoc.dul
            assert a.send_c_store(dataset("1.2.3.4.3")).Status == 0x0000
        # released by the peer: both threads finish, the wake-up fd is closed
        assoc.join(10)
        dul.join(10)
        assert not assoc.is_alive()
        assert not dul.is_alive()
        assert assoc.is_released
        assert isinstance(dul, reactor.BlockingDUL)
        assert dul._wakeup.fd == -1


def test_peer_abort_ends_both_threads(profile: Profile, out: Path, port: int) -> None:
    with our_receiver(profile, port, settings(port, out)) as receiver:
        with association(port) as a:
            assoc = served(receiver)
            a.abort()
        assoc.join(10)
        assoc.dul.join(10)
        assert assoc.is_aborted
        assert not assoc.dul.is_alive()


def test_our_abort_from_another_thread_ends_the_association(
    profile: Profile, out: Path, port: int
) -> None:
    with our_receiver(profile, port, settings(port, out)) as receiver, association(port) as a:
        assoc = served(receiver)
        assoc.abort()
        assoc.join(10)
        assert not assoc.is_alive()
        wait_until(lambda: not a.is_alive(), what="the peer sees the abort")
        assert a.is_aborted


def test_a_signal_after_close_writes_nowhere() -> None:
    wakeup = reactor._Wakeup()
    fd = wakeup.fd
    wakeup.close()
    # The fd number may be reused at once; the late signal must not write to it.
    r, w = os.pipe()
    try:
        wakeup.signal()
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 1)
    finally:
        os.close(r)
        os.close(w)
    assert wakeup.fd == -1
    assert fd >= 0


def pdv(context_id: int, control: int, data: bytes, length: int | None = None) -> bytes:
    declared = len(data) + 2 if length is None else length
    return declared.to_bytes(4, "big") + bytes([context_id, control]) + data


def test_p_data_items_are_read_from_the_one_buffer() -> None:
    body = bytearray(pdv(1, 0x03, b"command") + pdv(3, 0x00, b"dataset"))
    primitive = reactor._p_data(body)
    assert primitive is not None
    (cx1, command), (cx3, fragment) = primitive.presentation_data_value_list
    assert (cx1, bytes(command), cx3, bytes(fragment)) == (1, b"\x03command", 3, b"\x00dataset")
    assert isinstance(command, bytes)  # commands go to pynetdicom, which takes bytes
    assert isinstance(fragment, memoryview)  # dataset fragments are not copied
    assert fragment.obj is body


@pytest.mark.parametrize(
    "body",
    [
        pdv(1, 0x03, b"x", length=1),  # no room for the control header
        pdv(1, 0x03, b"x", length=50),  # longer than the PDU
        pdv(1, 0x03, b"x") + b"\x00\x00",  # a truncated item header
    ],
)
def test_malformed_p_data_items_are_refused(body: bytes) -> None:
    assert reactor._p_data(bytearray(body)) is None


def test_a_reset_connection_is_one_line_without_a_traceback(
    profile: Profile, out: Path, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    with our_receiver(profile, port, settings(port, out)) as receiver:
        sock = socket.create_connection((LOCALHOST, port))
        sock.sendall(rawpdu.associate_rq())
        sock.settimeout(10)
        assert sock.recv(1) == bytes([rawpdu.ASSOCIATE_AC])
        assoc = served(receiver)
        # Closed with SO_LINGER 0: a TCP reset, as a balancer's health check ends.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        assoc.join(10)
        assert assoc.is_aborted
    lines = [(r.name, r.getMessage()) for r in caplog.records]
    at = lines.index(("pynetdicom.dul", "Connection closed before the entire PDU was received"))
    assert lines[at + 1] == ("dcmrecvd.reactor", "[Errno 104] Connection reset by peer")
    assert not [r for r in caplog.records if r.exc_info]
