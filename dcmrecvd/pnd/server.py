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
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from dcmrecvd import proxyheader
from dcmrecvd.config.access import ProxyPolicy, ip_of
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


@dataclass(frozen=True)
class Relay:
    """A connection that a trusted balancer relayed, as its PROXY header said."""

    proxy: str  # the balancer's address: the connection's own peer
    # v2 LOCAL: the balancer's own connection, its health check; the association's
    # address is then the balancer's. (A v1 UNKNOWN line, or a v2 PROXY without
    # addresses, leaves the balancer's address too, but is served as any peer.)
    check: bool


# Relayed connections by their socket: an association's handlers find theirs through
# the socket pynetdicom keeps (association.relay). Entries go with their sockets.
_RELAYS: weakref.WeakKeyDictionary[socket.socket, Relay] = weakref.WeakKeyDictionary()
_RELAYS_LOCK = threading.Lock()


def relay_of(sock: socket.socket) -> Relay | None:
    with _RELAYS_LOCK:
        return _RELAYS.get(sock)


class ProxyRefused(Exception):
    """A connection's PROXY header is missing, late or wrong; `reason`: one of
    metrics.snapshot.PROXY_ERRORS."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


# Bytes a read looks ahead: a whole v1 line, or a v2 header with addresses and a few
# TLVs, so that one look and one read take most headers.
_LOOK_AHEAD = 512


def _look(sock: socket.socket, deadline: float) -> bytes:
    """What has arrived on `sock` and is not read yet (at most _LOOK_AHEAD bytes), once
    something has; b"" when the peer closed. The socket stays blocking."""
    try:
        # Mostly there already (a balancer sends the header at once): no wait, no poll.
        return sock.recv(_LOOK_AHEAD, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        pass
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)
    try:
        return sock.recv(_LOOK_AHEAD, socket.MSG_PEEK)
    finally:
        sock.settimeout(None)


def read_proxy_header(sock: socket.socket, timeout: float) -> proxyheader.Header:
    """Read exactly the PROXY header at the start of blocking `sock`'s stream, within
    `timeout` seconds; the bytes after it stay unread. Raises ProxyRefused."""
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while True:
            # Look first, then take the header's bytes only: what follows it is DICOM
            # (or TLS), for pynetdicom to read.
            ahead = _look(sock, deadline)
            if not ahead:
                raise ProxyRefused(
                    "closed", f"the connection closed after {len(data)} bytes of its PROXY header"
                )
            total = proxyheader.needed(data + ahead)
            # Unknown yet (a v1 line without its CRLF, a v2 header short of its length):
            # all that arrived is header.
            take = len(ahead) if total is None else min(total - len(data), len(ahead))
            data += sock.recv(take, socket.MSG_DONTWAIT)  # looked at: there
            if total is not None and len(data) == total:
                return proxyheader.parse(data)
    except proxyheader.ProxyError as exc:
        raise ProxyRefused("malformed", f"malformed PROXY header: {exc}") from None
    except TimeoutError:
        raise ProxyRefused(
            "timeout", f"no complete PROXY header within {timeout:g} s ({len(data)} bytes)"
        ) from None
    except OSError as exc:
        raise ProxyRefused("closed", f"the connection failed in its PROXY header: {exc}") from None


def listen_tcp(address: str, port: int, backlog: int) -> socket.socket:
    """A TCP socket listening on (address, port); raises OSError as bind() does
    (socket.create_server's text would repeat the address)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


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
        return cls(listen_tcp(address, port, BACKLOG), inherited=False)

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
        proxy: ProxyPolicy | None,
        on_proxy_refused: Callable[[str], None],
        **kwargs: Any,
    ) -> None:
        self._listen_socket = listen_socket
        self._handshake_timeout = handshake_timeout
        self._on_tls_failure = on_tls_failure
        self._proxy = proxy
        self._on_proxy_refused = on_proxy_refused
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
        # TLS is wrapped in the connection's own thread, after any PROXY header.
        return self._listen_socket.accept()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """With the PROXY protocol required, only a trusted balancer may connect."""
        if self._proxy is None or self._proxy.trusts(client_address[0]):
            return True
        self._refuse_proxy(
            client_address,
            ProxyRefused(
                "untrusted", "not in trusted-proxies, and this listener requires the PROXY protocol"
            ),
        )
        return False

    def _refuse_proxy(self, client_address: Any, refused: ProxyRefused) -> None:
        LOG.warning(
            "Refusing connection from %s: %s",
            client_address[0],
            refused,
            extra={"PEER_ADDR": client_address[0]},
        )
        self._on_proxy_refused(refused.reason)

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
        relay = None
        if self._proxy is not None:
            try:
                header = read_proxy_header(request, self._proxy.header_timeout)
            except ProxyRefused as refused:
                self._refuse_proxy(client_address, refused)
                self.shutdown_request(request)
                return
            relay = Relay(proxy=client_address[0], check=header.version == 2 and header.local)
            if header.source is not None:
                # The parser gives only valid addresses.
                client_address = (str(ip_of(header.source[0])), header.source[1])
        if self.ssl_context is not None:
            request = self.ssl_context.wrap_socket(
                request, server_side=True, do_handshake_on_connect=False
            )
            request.settimeout(self._handshake_timeout)
            try:
                request.do_handshake()
            except (OSError, ssl.SSLError) as exc:
                LOG.warning("TLS handshake with %s failed: %s", client_address[0], exc)
                self._on_tls_failure()
                self.shutdown_request(request)
                return
            request.settimeout(None)
        if relay is not None:
            with _RELAYS_LOCK:
                _RELAYS[request] = relay
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

    def proxy_refused(self, reason: str) -> None:
        """A connection was closed for its PROXY header; `reason`: snapshot.PROXY_ERRORS."""
        ...


class Serving:
    """One receiver accepting associations on a Listener, in a background thread."""

    def __init__(
        self,
        receiver: Served,
        listener: Listener,
        ssl_context: ssl.SSLContext | None = None,
        proxy: ProxyPolicy | None = None,
    ) -> None:
        """`proxy`: the listener requires the PROXY protocol from these balancers."""
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
                proxy=proxy,
                on_proxy_refused=receiver.proxy_refused,
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
