"""The listening socket, and the pynetdicom servers that accept associations on it.

A Listener is a process's one listening socket: inherited from systemd or bound here.
It outlives every server that accepts on it: a reload starts a new server on the same
socket before the old one stops accepting, so no connection is ever refused, and the
daemon closes its copy of a systemd socket but never shuts it down.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from typing import Any, Protocol, cast

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from dcmrecvd.negotiation import pynetdicom_contexts
from dcmrecvd.profiles import Profile
from dcmrecvd.settings import Settings

LOG = logging.getLogger("dcmrecv")

# As systemd's socket units do (Backlog= defaults to SOMAXCONN; the kernel caps it at
# net.core.somaxconn). pynetdicom's socketserver default is 5, DCMTK's 50: when more
# peers than that connect at once, the kernel drops the handshakes of the others, and
# they open their associations only after TCP retries of 1, 3, 7 s.
BACKLOG = socket.SOMAXCONN
# How often an accept loop looks at its stop flag (socketserver's poll interval).
POLL_INTERVAL = 0.2


class Listener:
    """A listening TCP socket; `inherited` when systemd passed it in."""

    def __init__(self, sock: socket.socket, *, inherited: bool) -> None:
        self.socket = sock
        self.inherited = inherited
        # Several servers may poll it during a reload; a non-blocking accept() lets the
        # losers of a race go back to polling instead of blocking until the next peer.
        sock.setblocking(False)

    @classmethod
    def bind(cls, address: str, port: int) -> Listener:
        """Bind and listen on (address, port); raises OSError as bind() does."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        return cls(sock, inherited=False)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        # close(), never shutdown(): shutting down a socket that systemd shares makes
        # it fail the .socket unit ("Got POLLHUP on a listening socket").
        self.socket.close()


class _SharedSocketServer(ThreadedAssociationServer):
    """A pynetdicom server that accepts on a Listener's socket it does not own.

    pynetdicom limit: AssociationServer always creates, binds and listens on a socket of
    its own (TCPServer's bind_and_activate is hard-coded), its server_close() shuts that
    socket down, and its shutdown() removes itself from a list of the AE's that
    make_server() never added it to. Its get_request() also runs the TLS handshake in
    the accept loop, so one silent TLS peer would stop every other from connecting: the
    handshake moves to the connection's own thread, bounded by the ACSE timeout. Its
    service_actions() forces a full garbage collection every 60 turns of the accept
    loop. All of these are replaced here, and only here.
    """

    # Request threads only hand the connection to an Association thread.
    block_on_close = False

    def __init__(
        self,
        *args: Any,
        listen_socket: socket.socket,
        handshake_timeout: float,
        on_tls_failure: Callable[[], None],
        **kwargs: Any,
    ) -> None:
        self._listen_socket = listen_socket
        self._handshake_timeout = handshake_timeout
        self._on_tls_failure = on_tls_failure
        # Connections accepted whose request thread has not yet ended: until it starts
        # the Association thread, active_associations does not list the connection.
        self.handing_over = 0
        self._handing_over_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self.socket is not None:
            self.socket.close()  # the one TCPServer.__init__ made, never bound
        self.socket = self._listen_socket
        self.server_address = self._listen_socket.getsockname()

    def server_activate(self) -> None:
        """The Listener is listening already."""

    def server_close(self) -> None:
        """The Listener closes its socket; other servers may still be accepting on it."""

    def shutdown(self) -> None:
        socketserver.BaseServer.shutdown(self)

    def service_actions(self) -> None:
        """Nothing: pynetdicom's runs a full gc.collect() every 60 turns of the accept loop.

        That walked every live association's objects (the copy of the profile's contexts
        each one gets) while holding the GIL, a quarter of a worker's CPU with 100
        associations at once. Python's own collector frees the cycles an ended
        association leaves.
        """

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = self._listen_socket.accept()
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        self._count_handing_over(1)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._count_handing_over(-1)  # no thread started to count it down
            raise

    def _count_handing_over(self, change: int) -> None:
        with self._handing_over_lock:
            self.handing_over += change

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self._hand_over(request, client_address)
        finally:
            self._count_handing_over(-1)

    def _hand_over(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(self._handshake_timeout)
            try:
                request.do_handshake()
            except (OSError, ssl.SSLError) as exc:
                LOG.warning("TLS handshake with %s failed: %s", client_address[0], exc)
                self._on_tls_failure()
                self.shutdown_request(request)
                return
            request.settimeout(None)
        super().process_request_thread(request, client_address)


class Served(Protocol):
    """What a Serving needs of the receiver it serves (dcmrecvd.receiver.Receiver, a layer
    above this one: it is named here, not imported)."""

    ae: AE
    profile: Profile
    settings: Settings

    def handlers(self) -> list[EventHandlerType]:
        """Its EVT_REQUESTED handler sets the acceptor's supported_contexts."""
        ...

    def tls_failed(self) -> None:
        """A TLS handshake failed (before any association)."""
        ...


class Serving:
    """One receiver accepting associations on a Listener, in a background thread."""

    def __init__(
        self, receiver: Served, listener: Listener, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.receiver = receiver
        # make_server() is typed to return its default class; it made one of server_class.
        self.server = cast(
            _SharedSocketServer,
            receiver.ae.make_server(
                listener.address,
                evt_handlers=receiver.handlers(),
                contexts=pynetdicom_contexts(receiver.profile),
                ssl_context=ssl_context,
                server_class=_SharedSocketServer,
                listen_socket=listener.socket,
                handshake_timeout=float(receiver.settings.acse_timeout),
                on_tls_failure=receiver.tls_failed,
            ),
        )
        # The receiver's EVT_REQUESTED handler gives each association its contexts, one
        # list they all share. Left here, pynetdicom would deepcopy the whole profile
        # for every connection first: with a full storage profile, a third of what an
        # association cost the worker (make_server wants them non-empty, so they go after).
        self.server.contexts = []
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name=f"accept:{listener.address[1]}",
            daemon=True,
        )
        self._thread.start()

    @property
    def accepting(self) -> bool:
        return self._thread.is_alive()

    def associations(self) -> list[Association]:
        """The associations this server accepted that are still running."""
        found: list[Association] = self.server.active_associations
        return found

    def connections(self) -> int:
        """Connections accepted and not yet ended: the associations running, and those
        still being handed to an association (a TLS handshake, a thread starting).

        One may be counted twice for a moment, never missed: a request thread starts its
        association before it counts itself down, and the count is read first.
        """
        handing_over = self.server.handing_over
        return handing_over + len(self.associations())

    def stop_accepting(self) -> None:
        """Accept no more associations; those in progress go on."""
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join()
