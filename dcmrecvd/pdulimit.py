"""Refuse a PDU longer than the receiver is willing to hold.

Workaround for a pynetdicom 3.0 limit, kept in this one module: the DUL reads every PDU
whole into memory at the length the peer announces (DULServiceProvider._read_pdu_data),
never checked against the maximum PDU length we negotiated, so a single hostile
P-DATA-TF PDU of 1 GiB would be held in memory whole despite streaming.py.
AssociationSocket.recv is where every PDU body is read; the subclass refuses a read
longer than the limit before it allocates anything, and pynetdicom treats the OSError as
a closed connection (Evt17): the association ends and its partial dataset is discarded.
"""

from __future__ import annotations

import errno

from pynetdicom.transport import AssociationSocket

# Association requests (many contexts, user identity) may exceed a small maximum PDU
# length, which only bounds P-DATA-TF; this much is always allowed.
MINIMUM_LIMIT = 1024 * 1024


class LimitedSocket(AssociationSocket):
    """An AssociationSocket that refuses reads over `_limit` bytes (installed by class swap)."""

    _limit: int

    def recv(self, nr_bytes: int) -> bytearray:
        if nr_bytes > self._limit:
            raise OSError(
                errno.EMSGSIZE,
                f"PDU of {nr_bytes} bytes exceeds the receiver's limit of {self._limit} bytes",
            )
        return super().recv(nr_bytes)


def limit_for(max_pdu: int) -> int | None:
    """The largest PDU body accepted when we advertise `max_pdu` (0 = unlimited: None)."""
    return max(max_pdu, MINIMUM_LIMIT) if max_pdu else None


def install(assoc: object, limit: int) -> None:
    """Bound the PDUs `assoc` reads; call on EVT_CONN_OPEN, before anything is read."""
    sock = assoc.dul.socket  # type: ignore[attr-defined]
    sock._limit = limit
    # The socket is created by pynetdicom's request handler; a class swap is the only
    # way to give it our recv.
    sock.__class__ = LimitedSocket
