"""Where dcmrecvd extends pynetdicom per association: one entry point when a connection
opens, one when the policy accepts an association, and the few workarounds the receiver
needs around them. The receiver calls these and touches no pynetdicom internals itself.
"""

from __future__ import annotations

import ssl
from typing import cast

from pynetdicom import register_uid
from pynetdicom.association import Association
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from dcmrecvd.pnd import dispatch, fastpath, pdulimit, quietlog, reactor, server, streaming
from dcmrecvd.profiles import Profile
from dcmrecvd.sink import SinkFactory, StoreCommand

# pynetdicom counts associations per AE, and a reload replaces the AE: the receiver's
# Admission counts them instead, so the AE's own limit is set out of reach.
UNLIMITED_ASSOCIATIONS = 2**31 - 1


def on_connection_open(assoc: Association, maximum_pdu_size: int) -> None:
    """EVT_CONN_OPEN: the blocking reactor, quiet PDU dumps, and the limit on PDU sizes."""
    reactor.install(assoc)
    quietlog.install(assoc)
    limit = pdulimit.limit_for(maximum_pdu_size)
    if limit is not None:
        pdulimit.install(assoc, limit)


def on_accept(
    assoc: Association,
    sinks: SinkFactory,
    refusal: dispatch.Refusal,
    serve: fastpath.Serve,
    action: dispatch.Action | None = None,
) -> None:
    """EVT_REQUESTED, once the policy accepts and before the A-ASSOCIATE-AC: the DIMSE path.

    Datasets stream to sinks from `sinks`, requests other than C-ECHO and C-STORE (and
    N-ACTION when there is an `action` to serve it) are refused (`refusal` logs each),
    plain C-STOREs are served by `serve` and answered quickly. The provider is created
    inside Association.__init__, so a class swap is the only way to give it our methods
    (pynetdicom swaps message classes alike); the one class, FastStoreDIMSE, carries the
    whole chain and is swapped in once.
    """
    dimse = assoc.dimse
    streaming.prepare(dimse, sinks)
    dispatch.prepare(dimse, refusal, action)
    fastpath.prepare(dimse, serve)
    dimse.__class__ = fastpath.FastStoreDIMSE
    # The association thread and pynetdicom's N-EVENT-REPORT thread both call it.
    assoc._serve_request = cast(fastpath.FastStoreDIMSE, dimse).serve_request  # type: ignore[method-assign]


def reject(assoc: Association, rsd: tuple[int, int, int]) -> None:
    """Send an A-ASSOCIATE-RJ (result, source, reason) and end the association."""
    assoc.acse.send_reject(*rsd)
    # Without kill() the reactor closes the socket before the DUL thread has sent
    # the A-ASSOCIATE-RJ (pynetdicom 3.0).
    assoc.kill()


def aborted_by_us(assoc: Association) -> bool:
    """Whether we sent the abort that ended `assoc` (our refusals, the network timeout,
    shutdown). pynetdicom limit: EVT_ABORTED tells neither who aborted nor why;
    Association.abort sets _sent_abort."""
    return bool(getattr(assoc, "_sent_abort", False))


def idle_timed_out(assoc: Association) -> bool:
    """Whether `assoc`'s network timeout has passed (the DUL's idle timer expired)."""
    return bool(assoc.dul.idle_timer_expired())


def interrupted(assoc: Association) -> StoreCommand | None:
    """The C-STORE request whose dataset was being received when `assoc` ended."""
    dimse = assoc.dimse
    return dimse.interrupted() if isinstance(dimse, streaming.StreamingDIMSE) else None


def register_storage_classes(profile: Profile) -> None:
    """Make pynetdicom take every abstract syntax of the profile that it does not know
    (a private one) for a storage class, so that the fast path serves its C-STOREs.

    dispatch.py serves any C-STORE by its command, whatever class it names.
    """
    for context in profile.contexts:
        uid = context.abstract_syntax
        if uid_to_service_class(uid) is ServiceClass:
            register_uid(uid, "DcmrecvdPrivate_" + uid.replace(".", "_"), StorageServiceClass)


def over_tls(assoc: Association) -> bool:
    """Whether the association's connection is a TLS one."""
    # pynetdicom keeps the connection's socket in its DUL's AssociationSocket.
    return isinstance(assoc.dul.socket.socket, ssl.SSLSocket) if assoc.dul.socket else False


def relay(assoc: Association) -> server.Relay | None:
    """What the PROXY header of the association's connection said; None: not relayed."""
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    return server.relay_of(sock) if sock is not None else None
