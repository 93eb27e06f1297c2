"""Bound what reading one PDU may cost the receiver: its length and its time.

Workaround for two pynetdicom 3.0 limits, kept in this one module, both in how the DUL
reads a PDU (DULServiceProvider._read_pdu_data: a 6-byte header, then the body):
- it reads the body whole into memory at the length the peer announces, never checked
  against the maximum PDU length we negotiated, so a single hostile P-DATA-TF PDU of
  1 GiB would be held in memory whole despite streaming.py;
- it reads on a blocking socket with no timeout, so a peer that stops in the middle of
  a PDU (or sends a byte now and then) holds the DUL thread in recv() for ever: the
  ACSE timeout and the idle timer only act between PDUs, and the association's threads,
  its socket and its place under the association limit are never freed.
AssociationSocket.recv is where every PDU is read; the subclass refuses a read longer
than the limit before it allocates anything, and ends a read that overruns its
deadline. pynetdicom treats either OSError as a closed connection (Evt17): the
association ends and its partial dataset is discarded.

Deadlines, as DCMTK's dcmrecv cuts slow peers: the A-ASSOCIATE-RQ must arrive whole
within the ACSE timeout (-ta) of the connection; every later PDU within the network
timeout (-td, else 60 s) of its first byte, so a legitimate peer needs at least
max PDU / network timeout bytes per second (16 KiB in 60 s: 273 B/s).
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import time

from pynetdicom.transport import AssociationSocket

# Association requests (many contexts, user identity) may exceed a small maximum PDU
# length, which only bounds P-DATA-TF; this much is always allowed.
MINIMUM_LIMIT = 1024 * 1024

# PS3.8 9.3.1: type, reserved, 32-bit length. pynetdicom reads it alone, then the body.
_PDU_HEADER = 6


class LimitedSocket(AssociationSocket):
    """An AssociationSocket with bounded PDU reads (installed by class swap)."""

    _limit: int
    _opened: float
    _reads: int
    _pdu_deadline: float | None

    def recv(self, nr_bytes: int) -> bytearray:
        if nr_bytes > self._limit:
            raise OSError(
                errno.EMSGSIZE,
                f"PDU of {nr_bytes} bytes exceeds the receiver's limit of {self._limit} bytes",
            )
        return self._read(nr_bytes, self._deadline(nr_bytes))

    def _deadline(self, nr_bytes: int) -> float | None:
        assoc = self.assoc
        self._reads += 1
        # The first two reads are the A-ASSOCIATE-RQ's header and body. Counting reads,
        # not asking whether the association is established, keeps a P-DATA that
        # follows the A-ASSOCIATE-AC at once from inheriting the request's deadline.
        if self._reads <= 2:
            return self._opened + assoc.acse_timeout if assoc.acse_timeout else None
        if nr_bytes == _PDU_HEADER or self._pdu_deadline is None:
            timeout = assoc.network_timeout
            self._pdu_deadline = time.monotonic() + timeout if timeout else None
        return self._pdu_deadline

    def _read(self, nr_bytes: int, deadline: float | None) -> bytearray:
        """Up to `nr_bytes` (fewer if the peer closes); TimeoutError past `deadline`.

        Read straight into the PDU's buffer. A plain socket stays blocking and is
        read with MSG_DONTWAIT, waiting in poll() only when nothing is there: a
        timeout set with settimeout() costs two ioctl()s and a poll() per read.
        """
        sock = self.socket
        assert sock is not None  # pynetdicom reads only from an open socket
        data = bytearray(nr_bytes)
        view = memoryview(data)
        received = 0
        if isinstance(sock, ssl.SSLSocket):
            received = _read_tls(sock, view, deadline)
        else:
            while received < nr_bytes:
                try:
                    count = sock.recv_into(view[received:], 0, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    _wait_readable(sock, deadline, received, nr_bytes)
                    continue
                if not count:
                    break  # closed: pynetdicom sees the short read
                received += count
        view.release()
        if received < nr_bytes:
            del data[received:]
        return data


def _wait_readable(
    sock: socket.socket, deadline: float | None, received: int, nr_bytes: int
) -> None:
    """Block until `sock` has something to read; TimeoutError at `deadline`."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
    while not poller.poll(
        None if deadline is None else _remaining(deadline, received, nr_bytes) * 1000
    ):
        pass


def _remaining(deadline: float, received: int, nr_bytes: int) -> float:
    """Seconds left until `deadline`; TimeoutError when none are."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(
            errno.ETIMEDOUT, f"peer sent {received} of {nr_bytes} bytes before the timeout"
        )
    return remaining


def _read_tls(sock: ssl.SSLSocket, view: memoryview, deadline: float | None) -> int:
    """Fill `view` from a TLS socket, whose reads take no flags, under a socket timeout."""
    received = 0
    previous = sock.gettimeout()
    try:
        while received < len(view):
            if deadline is not None:
                sock.settimeout(_remaining(deadline, received, len(view)))
            count = sock.recv_into(view[received:], len(view) - received)
            if not count:
                break
            received += count
    finally:
        sock.settimeout(previous)
    return received


def limit_for(max_pdu: int) -> int | None:
    """The largest PDU body accepted when we advertise `max_pdu` (0 = unlimited: None)."""
    return max(max_pdu, MINIMUM_LIMIT) if max_pdu else None


def install(assoc: object, limit: int) -> None:
    """Bound the PDUs `assoc` reads; call on EVT_CONN_OPEN, before anything is read."""
    sock = assoc.dul.socket  # type: ignore[attr-defined]
    sock._limit = limit
    sock._opened = time.monotonic()
    sock._reads = 0
    sock._pdu_deadline = None
    # The socket is created by pynetdicom's request handler; a class swap is the only
    # way to give it our recv.
    sock.__class__ = LimitedSocket
