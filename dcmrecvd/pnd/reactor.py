"""Blocking reactors for an association's two threads, instead of pynetdicom's polling.

Workaround for three pynetdicom 3.0 limits, kept in this one module:
- DULServiceProvider.run_reactor polls: select() on the socket with a zero timeout,
  then time.sleep(0.001) whenever a turn found nothing to do;
- Association._run_reactor sleeps 0.001 s on every turn before it looks at its queues;
- AssociationSocket.ready, which the DUL polls with, calls select(), which raises
  ValueError for a descriptor >= FD_SETSIZE (1024); pynetdicom takes that for a closed
  connection, so a process with more than ~1000 open files cannot serve associations.
The polls put up to a millisecond on each hand-over between the threads (several per
C-STORE) and cost an idle association about 2 % of a core. A fourth limit lives in the
same loop: the association thread may queue its answer to an A-ASSOCIATE-RQ (Evt7,
Evt8) after the DUL has aborted for a bad PDU (Sta13), where pynetdicom's state machine
has no transition for it and raises, ending the DUL thread with a traceback; such a
late event is dropped instead, with the primitive that raised it (so does any user
primitive there: an A-ABORT from a stop, a response).

`install` swaps in subclasses before the threads start. The DUL thread blocks in
poll() (no FD_SETSIZE) on the socket and on an eventfd that the queues it serves
signal when another thread puts something in them. The association thread blocks on
an Event that the DIMSE message queue, the DUL's queue to the user, kill() and the end
of the DUL thread set, with the network idle timer's deadline as its timeout.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import ssl
import struct
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import TRANSITION_TABLE
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA

from dcmrecvd.pnd.streaming import COMMAND

# pynetdicom's own loggers, so these lines read as they did under its reactors (its texts
# only: tests/unit/pnd/test_pynetdicom_log_lines.py); our own lines go to LOG.
_ASSOCIATION_LOG = logging.getLogger("pynetdicom.association")
_DUL_LOG = logging.getLogger("pynetdicom.dul")
LOG = logging.getLogger("dcmrecvd.reactor")

_T = TypeVar("_T")

# Every input of both loops signals them; this only bounds what a wake-up that was
# missed anyway could cost.
_LONGEST_WAIT = 1.0
# The events that _process_recv_primitive raises for the user's primitive at the head
# of to_provider_queue, which the event's action takes off (an acceptor's: no T-CONNECT).
_USER_EVENTS = frozenset(("Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"))
# The states in which the ARTIM timer is running and its expiry (Evt18) is an event.
_ARTIM_STATES = ("Sta2", "Sta13")
_READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
# PS3.8 9.3: the PDU types; a P-DATA-TF.
_PDU_EVENTS = frozenset(range(0x01, 0x08))
_P_DATA_TF = 0x04
# A PDV item's length, presentation context ID and message control header.
_PDV_ITEM = struct.Struct(">LBB")


class _Wakeup:
    """An eventfd that other threads signal to end a poll(); signalling after close is a no-op."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # Closing under the lock keeps a late signal from writing to a reused fd number.
        self._lock = threading.Lock()

    def signal(self) -> None:
        with self._lock:
            if self.fd >= 0:
                os.eventfd_write(self.fd, 1)

    def clear(self) -> None:
        with suppress(BlockingIOError):
            os.eventfd_read(self.fd)

    def close(self) -> None:
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


class _SignallingQueue(queue.Queue[_T]):
    """A queue that calls `notify` after every put."""

    def __init__(self, notify: Callable[[], None]) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


def _signalling(old: queue.Queue[Any], notify: Callable[[], None]) -> _SignallingQueue[Any]:
    new: _SignallingQueue[Any] = _SignallingQueue(notify)
    while True:
        try:
            new.put(old.get_nowait())
        except queue.Empty:
            return new


class BlockingDUL(DULServiceProvider):
    """A DUL provider whose thread sleeps until the peer or the user has something for it."""

    _wakeup: _Wakeup
    _on_end: Callable[[], None]
    # Set as the thread ends; is_alive() turns False a little later.
    _finished: bool
    _watched: bool | None

    def run(self) -> None:
        # Thread.__init__ bound the polling run_reactor as target; this is the one to run.
        try:
            self.run_reactor()
        finally:
            self._wakeup.close()
            self._finished = True
            self._on_end()

    def kill_dul(self) -> None:
        self._kill_thread = True
        self._wakeup.signal()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state != "Sta1":
            return False
        self.kill_dul()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
        return True

    def run_reactor(self) -> None:
        self._idle_timer.start()
        poller = select.poll()
        poller.register(self._wakeup.fd, select.POLLIN)
        watched = [-1]  # the socket fd registered with `poller`
        self.assoc._dul_ready.set()
        # The queues are peeked at without their locks (an item put meanwhile signals the
        # eventfd, so the poll below returns at once): otherwise every turn, several per
        # PDU, takes two locks and raises and catches queue.Empty or IndexError.
        events = self.event_queue.queue
        primitives = self.to_provider_queue.queue
        while not self._kill_thread:
            if events:
                try:
                    event = self.event_queue.get_nowait()
                except queue.Empty:  # not expected: only this thread takes from it
                    continue
                if self._late(event):
                    LOG.debug("%s dropped: the association is already aborted", event)
                    if event in _USER_EVENTS:
                        # With the primitive that raised it: left queued, it would raise
                        # it again at once, a busy loop until the ARTIM timer ends Sta13.
                        self.to_provider_queue.get_nowait()
                else:
                    self.state_machine.do_action(event)
                continue
            try:
                if self._artim_expired():
                    self.event_queue.put("Evt18")
                # Only with no event pending, so each queued primitive gets one event.
                elif primitives and self._process_recv_primitive():
                    pass
                elif self._transport_event(poller, watched):
                    self._idle_timer.restart()
            except Exception as exc:
                self._abort_after(exc)
                return

    def _late(self, event: str) -> bool:
        state = self.state_machine.current_state
        return state == "Sta13" and (event, state) not in TRANSITION_TABLE

    def _artim_expired(self) -> bool:
        # A stopped Timer still reports expired, so only where Evt18 is an event.
        return self.state_machine.current_state in _ARTIM_STATES and self.artim_timer.expired

    def _timeout(self) -> float:
        timeout = _LONGEST_WAIT
        if self.state_machine.current_state in _ARTIM_STATES:
            timeout = min(timeout, max(0.0, self.artim_timer.remaining))
        return timeout

    def _transport_event(self, poller: select.poll, watched: list[int]) -> bool:
        """Wait for the peer or a wake-up; True if a PDU (or the connection's end) was read."""
        wrapper = self.socket
        sock = wrapper.socket if wrapper is not None else None
        fd = sock.fileno() if sock is not None else -1
        if fd != watched[0]:
            if watched[0] >= 0:
                poller.unregister(watched[0])
            if fd >= 0:
                poller.register(fd, _READABLE)
            watched[0] = fd
        if sock is not None and (fd < 0 or self.state_machine.current_state == "Sta13"):
            # Closed under us (an abort from another thread), or waiting for the peer to
            # close: read what it still sends, else close now.
            assert wrapper is not None
            if fd >= 0 and (_pending(sock) or any(p == fd for p, _ in poller.poll(0))):
                self._read_pdu_data()
            else:
                wrapper.close()
            return True
        if sock is not None and _pending(sock):
            self._read_pdu_data()
            return True
        ready = poller.poll(self._timeout() * 1000)
        if any(polled == self._wakeup.fd for polled, _ in ready):
            self._wakeup.clear()
        if fd >= 0 and any(polled == fd for polled, _ in ready):
            self._read_pdu_data()
            return True
        return False

    def _read_pdu_data(self) -> None:
        """Read one PDU; a P-DATA-TF goes straight into a P-DATA primitive.

        pynetdicom copies a P-DATA-TF's bytes three more times on the way (bytes() of
        the buffer, one copy per PDV item, the primitive) and builds a PDU object per
        PDU. Here the PDVs are views into the one buffer read, unless a handler is
        bound to the raw bytes or the PDU object (EVT_DATA_RECV, EVT_PDU_RECV).
        """
        wrapper = self.socket
        assert wrapper is not None
        try:
            header = wrapper.recv(6)
        except OSError as exc:
            self._closed_mid_pdu(exc)
            return
        if len(header) != 6:
            self.event_queue.put("Evt17")  # closed by the peer
            return
        kind, _, length = struct.unpack(">BBL", header)
        if kind not in _PDU_EVENTS:
            _DUL_LOG.error(f"Unknown PDU type received '0x{kind:02X}'")
            self.event_queue.put("Evt19")
            return
        try:
            body = wrapper.recv(length)
        except OSError as exc:
            self._closed_mid_pdu(exc)
            return
        if len(body) != length:
            _DUL_LOG.error(
                f"The received PDU is shorter than expected ({6 + len(body)} of "
                f"{6 + length} bytes received)"
            )
            self.event_queue.put("Evt17")
            return
        if kind == _P_DATA_TF and not self._raw_pdus_watched():
            primitive = _p_data(body)
            if primitive is None:
                _DUL_LOG.error("Unable to decode the received PDU data")
                self.event_queue.put("Evt19")
                return
            if self.state_machine.current_state == "Sta6" and not self.event_queue.queue:
                # What Sta6 + Evt10 (DT-2) does, without the queues and their wake-ups.
                self.assoc.dimse.receive_primitive(primitive)
                return
            self._recv_pdu.put(cast(Any, _ReadPData(primitive)))
            self.event_queue.put("Evt10")
            return
        try:
            pdu, event = self._decode_pdu(bytearray(header) + body)
        except Exception as exc:
            _DUL_LOG.error("Unable to decode the received PDU data")
            _DUL_LOG.exception(exc)
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _closed_mid_pdu(self, exc: OSError) -> None:
        _DUL_LOG.error("Connection closed before the entire PDU was received")
        # pynetdicom logs the exception with its traceback; a peer that resets its
        # connection (a balancer's health check does, by default) needs none.
        LOG.error("%s", exc)
        self.event_queue.put("Evt17")

    def _raw_pdus_watched(self) -> bool:
        """Whether a handler needs the PDU object, or sees the state machine act on it.

        Asked once: the handlers are bound before the connection opens.
        """
        if self._watched is None:
            watching = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_FSM_TRANSITION)
            self._watched = any(self.assoc.get_handlers(event) for event in watching)
        return self._watched

    def _abort_after(self, exc: Exception) -> None:
        """What pynetdicom does when its reactor fails: A-ABORT past the state machine."""
        _DUL_LOG.error("Exception in DUL.run(), aborting association")
        _DUL_LOG.exception(exc)
        pdu = A_ABORT_RQ()
        pdu.source = 0x02
        pdu.reason_diagnostic = 0x00
        if self.socket is not None:
            self.socket.send(pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


def _pending(sock: object) -> bool:
    # TLS may hold decrypted bytes that the kernel no longer reports as readable.
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


class _ReadPData:
    """What the state machine takes off the DUL's PDU queue: `to_primitive()`."""

    def __init__(self, primitive: P_DATA) -> None:
        self._primitive = primitive

    def to_primitive(self) -> P_DATA:
        return self._primitive


def _p_data(body: bytearray) -> P_DATA | None:
    """The P-DATA of a P-DATA-TF body (PS3.8 9.3.5), or None if its items are malformed.

    A dataset fragment stays a view into `body`; a command fragment, small, is copied.
    """
    view = memoryview(body)
    items: list[tuple[int, bytes | memoryview]] = []
    offset = 0
    size = len(body)
    while offset < size:
        if offset + 6 > size:
            return None
        length, context_id, control = _PDV_ITEM.unpack_from(body, offset)
        end = offset + 4 + length
        if length < 2 or end > size:
            return None  # an item holds a context ID and at least its control header
        data = view[offset + 5 : end]
        items.append((context_id, bytes(data) if control & COMMAND else data))
        offset = end
    primitive = P_DATA()
    # Filled in place, as P_DATA_TF.to_primitive does: the setter takes bytes only.
    primitive.presentation_data_value_list = []
    primitive.presentation_data_value_list.extend(items)  # type: ignore[arg-type]
    return primitive


class BlockingAssociation(Association):
    """An association whose thread sleeps until a request, the DUL or a timer needs it."""

    _activity: threading.Event

    def kill(self) -> None:
        self._kill = True
        self._activity.set()
        super().kill()

    def _run_reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            self._activity.clear()  # before looking: a later set() is never lost
            # release() and the send_*() methods pause the reactor here.
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
                continue
            if self._ended():
                return
            self._activity.wait(min(_LONGEST_WAIT, max(0.0, self.dul._idle_timer.remaining)))

    def _ended(self) -> bool:
        """Act on a release, an abort, a dead DUL or the idle timeout; True when over."""
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            _ASSOCIATION_LOG.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
        elif self.acse.is_aborted():
            if self.acse.is_aborted("a-p-abort"):
                _ASSOCIATION_LOG.info("Association Aborted (A-P-ABORT)")
            else:
                _ASSOCIATION_LOG.info("Association Aborted")
            self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
        elif not self.dul.is_alive() or cast(BlockingDUL, self.dul)._finished:
            pass
        elif self.dul.idle_timer_expired():
            _ASSOCIATION_LOG.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self.release()
            else:
                self.abort()
        else:
            return False
        self.kill()
        return True


def install(assoc: Association) -> None:
    """Give `assoc` the blocking reactors; call on EVT_CONN_OPEN, before its threads start."""
    activity = threading.Event()
    wakeup = _Wakeup()
    dul = assoc.dul
    # Created inside Association.__init__ and started by its thread: a class swap is the
    # only way in, as streaming.install does for the DIMSE provider.
    dul.__class__ = BlockingDUL
    blocking_dul = cast(BlockingDUL, dul)
    blocking_dul._wakeup = wakeup
    blocking_dul._on_end = activity.set
    blocking_dul._finished = False
    blocking_dul._watched = None
    dul.event_queue = _signalling(dul.event_queue, wakeup.signal)
    dul.to_provider_queue = _signalling(dul.to_provider_queue, wakeup.signal)
    dul.to_user_queue = _signalling(dul.to_user_queue, activity.set)
    assoc.dimse.msg_queue = _signalling(assoc.dimse.msg_queue, activity.set)
    assoc.__class__ = BlockingAssociation
    cast(BlockingAssociation, assoc)._activity = activity
