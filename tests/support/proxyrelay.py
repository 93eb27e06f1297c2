"""A stand-in for a load balancer: a TCP relay that starts each connection it forwards
with a PROXY protocol header, so that any DICOM client can talk to a listener that
requires one. Only 127.0.0.0/8 is ever reached.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from tests.support.net import LOCALHOST

SIGNATURE_V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(source: str, port: int, destination: str = "127.0.0.1", dport: int = 104) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {family} {source} {destination} {port} {dport}\r\n".encode()


def v2(source: str, port: int, destination: str = "127.0.0.1", dport: int = 104) -> bytes:
    """A v2 PROXY command over TCP, from (source, port)."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    if src.version != dst.version:
        dst = ipaddress.ip_address(f"::ffff:{dst}") if src.version == 6 else dst
    family = 0x21 if src.version == 6 else 0x11
    body = src.packed + dst.packed + port.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return SIGNATURE_V2 + bytes([0x21, family]) + len(body).to_bytes(2, "big") + body


def v2_local() -> bytes:
    """A v2 LOCAL header, as a balancer's health check sends it (no addresses)."""
    return SIGNATURE_V2 + bytes([0x20, 0x00]) + (0).to_bytes(2, "big")


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    with suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextmanager
def relay(
    target: tuple[str, int],
    header: Callable[[tuple[str, int]], bytes],
    *,
    coalesce: bool = False,
    bind: str = LOCALHOST,
) -> Iterator[int]:
    """Relay connections to a free port on `bind` to `target`, each starting with
    `header(client address)`; `coalesce`: the header and the client's first bytes go out
    in one send, as a balancer may send them. Yields the relay's port."""
    listener = socket.create_server((bind, 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    sockets: list[socket.socket] = []

    def serve(client: socket.socket, address: tuple[str, int]) -> None:
        upstream = socket.create_connection(target, timeout=10)
        upstream.settimeout(None)
        sockets.extend((client, upstream))
        first = header(address)
        if coalesce:
            with suppress(OSError):
                first += client.recv(65536)
        upstream.sendall(first)
        back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        back.start()
        threads.append(back)
        _pipe(client, upstream)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, address = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            thread = threading.Thread(target=serve, args=(client, address), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        acceptor.join()
        listener.close()
        for sock in sockets:
            with suppress(OSError):
                sock.close()
        for thread in threads:
            thread.join(timeout=10)
