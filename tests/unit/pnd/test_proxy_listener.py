"""A listener that requires the PROXY protocol: the header read exactly and in time, the
real address used by the policy and the logs, health checks, and every way to fail."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom import AE

from dcmrecvd.config.access import AccessPolicy, Network, PeerRule, ProxyPolicy
from dcmrecvd.logfields import AssociationFields
from dcmrecvd.pnd.server import Listener, Serving
from dcmrecvd.profiles import all_storage_profile
from dcmrecvd.receiver import Receiver
from dcmrecvd.settings import Settings
from dcmrecvd.stats import Identity, Live, Stats
from tests.support import certs, proxyrelay, rawpdu
from tests.support.net import LOCALHOST, free_port
from tests.support.waiting import until

VERIFICATION = "1.2.840.10008.1.1"
TRUSTED = (ipaddress.ip_network("127.0.0.1/32"),)
# Only associations from 10.1.2.0/24 are admitted: what a header says decides.
RULES = AccessPolicy(
    rules=(PeerRule("ct", networks=(ipaddress.ip_network("10.1.2.0/24"),)),),
    accept_unknown=False,
)
HEADERS = {"v1": proxyrelay.v1, "v2": proxyrelay.v2}


@dataclass
class Counted(Stats):
    refused: list[str] = field(default_factory=list)
    checks: int = 0
    opened: list[Identity] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def proxy_refused(self, reason: str) -> None:
        self.refused.append(reason)

    def proxy_check(self) -> None:
        self.checks += 1

    def live(self, association: Identity) -> Live:
        self.opened.append(association)
        return Live()


class Lines(logging.Handler):
    """Each record's message and association fields."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(AssociationFields())
        self.lines: list[tuple[str, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(
            (
                record.getMessage(),
                str(getattr(record, "PEER_ADDR", "")),
                str(getattr(record, "PROXY_ADDR", "")),
            )
        )


@dataclass
class Node:
    port: int
    stats: Counted
    log: Lines


@contextlib.contextmanager
def node(
    tmp_path: Path,
    *,
    trusted: tuple[Network, ...] = TRUSTED,
    context: ssl.SSLContext | None = None,
    host_lookup: bool = False,
) -> Iterator[Node]:
    port = free_port()
    stats = Counted()
    settings = Settings(
        port=port,
        output_dir=str(tmp_path),
        access=RULES,
        host_lookup=host_lookup,
        acse_timeout=5,
    )
    receiver = Receiver(settings, all_storage_profile("default"), stats=stats)
    listener = Listener.bind(LOCALHOST, port)
    serving = Serving(receiver, listener, context, proxy=ProxyPolicy(trusted, header_timeout=0.5))
    lines = Lines()
    logger = logging.getLogger("dcmrecv")
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        yield Node(port, stats, lines)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
        serving.stop_accepting()
        listener.close()
        receiver.stop()


def echo(port: int, tls: ssl.SSLContext | None = None) -> int | None:
    """A C-ECHO's status through `port`; None: no association."""
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate(LOCALHOST, port, tls_args=(tls, "dcmrecvd-test") if tls else None)
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status) if "Status" in status else None


def closed_by_server(sock: socket.socket, within: float = 5.0) -> bool:
    """Whether the server closes `sock` (EOF or reset) within `within` seconds, after
    whatever it answers first (an A-ABORT to bytes after a valid header)."""
    deadline = time.monotonic() + within
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if sock.recv(4096) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        pass
    return False


@pytest.mark.parametrize("coalesce", [False, True], ids=["apart", "one-segment"])
@pytest.mark.parametrize("version", sorted(HEADERS))
def test_the_real_address_is_admitted_logged_and_shown(
    tmp_path: Path, version: str, coalesce: bool
) -> None:
    with (
        node(tmp_path) as n,
        proxyrelay.relay(
            (LOCALHOST, n.port), lambda _: HEADERS[version]("10.1.2.3", 40000), coalesce=coalesce
        ) as relayed,
    ):
        assert echo(relayed) == 0x0000
    assert [(i.address, i.peer) for i in n.stats.opened] == [("10.1.2.3", "ct")]
    received = [line for line in n.log.lines if line[0].startswith("Association Received")]
    assert received == [
        (
            "Association Received 10.1.2.3 (via 127.0.0.1): MODALITY -> ANY-SCP",
            "10.1.2.3",
            LOCALHOST,
        )
    ]
    assert n.stats.refused == [] and n.stats.checks == 0


def test_an_ipv4_mapped_source_is_its_ipv4_address(tmp_path: Path) -> None:
    with (
        node(tmp_path) as n,
        proxyrelay.relay(
            (LOCALHOST, n.port), lambda _: proxyrelay.v2("::ffff:10.1.2.77", 1, "::1")
        ) as relayed,
    ):
        assert echo(relayed) == 0x0000
    assert [i.address for i in n.stats.opened] == ["10.1.2.77"]


def test_a_rule_refuses_by_the_real_address(tmp_path: Path) -> None:
    with (
        node(tmp_path) as n,
        proxyrelay.relay((LOCALHOST, n.port), lambda _: proxyrelay.v2("10.9.9.9", 1)) as relayed,
    ):
        assert echo(relayed) is None
    refusals = [line for line in n.log.lines if line[0].startswith("Refusing Association")]
    assert len(refusals) == 1
    assert "MODALITY from 10.9.9.9" in refusals[0][0]
    assert refusals[0][1:] == ("10.9.9.9", LOCALHOST)


def test_a_peer_that_is_not_a_trusted_proxy_is_closed_at_once(tmp_path: Path) -> None:
    with (
        node(tmp_path, trusted=(ipaddress.ip_network("127.0.0.2/32"),)) as n,
        socket.create_connection((LOCALHOST, n.port)) as sock,
    ):
        sock.sendall(proxyrelay.v2("10.1.2.3", 1))
        started = time.monotonic()
        assert closed_by_server(sock)
        # Refused in the accept loop, not after the header's deadline.
        assert time.monotonic() - started < 0.5
        until(lambda: n.stats.refused == ["untrusted"], what="the refusal counted")
    assert any("Refusing connection from 127.0.0.1" in line[0] for line in n.log.lines)


def test_a_connection_without_a_header_is_refused_not_guessed(tmp_path: Path) -> None:
    with node(tmp_path) as n:
        assert echo(n.port) is None
        until(lambda: n.stats.refused == ["malformed"], what="the refusal counted")
    assert n.stats.opened == []
    assert any("no PROXY protocol header" in line[0] for line in n.log.lines)


@pytest.mark.parametrize(
    ("sent", "reason"),
    [
        (b"PROXY TCP4 10.1.2.3 ", "timeout"),
        (proxyrelay.SIGNATURE_V2[:7], "timeout"),
        (b"", "timeout"),
    ],
)
def test_a_header_not_complete_in_time_is_closed(tmp_path: Path, sent: bytes, reason: str) -> None:
    with node(tmp_path) as n, socket.create_connection((LOCALHOST, n.port)) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        assert closed_by_server(sock)
        assert time.monotonic() - started >= 0.4  # the 0.5 s deadline, less the send
        until(lambda: n.stats.refused == [reason], what="the refusal counted")


def test_a_connection_closed_inside_its_header(tmp_path: Path) -> None:
    with node(tmp_path) as n:
        with socket.create_connection((LOCALHOST, n.port)) as sock:
            sock.sendall(b"PROXY TCP4 10.1.2.3 127.0.0.1 1")
        until(lambda: n.stats.refused == ["closed"], what="the refusal counted")


def test_a_header_that_ends_wrong_is_refused_at_once(tmp_path: Path) -> None:
    with node(tmp_path) as n, socket.create_connection((LOCALHOST, n.port)) as sock:
        # A lone LF: the line does not end with CRLF; the DICOM bytes after it are not read
        # as part of any line.
        sock.sendall(b"PROXY TCP4 10.1.2.3 127.0.0.1 1 104\n" + rawpdu.associate_rq())
        assert closed_by_server(sock, within=0.4)
        until(lambda: n.stats.refused == ["malformed"], what="the refusal counted")


def test_a_local_health_check_is_served_without_rules_and_not_counted(tmp_path: Path) -> None:
    with node(tmp_path) as n, socket.create_connection((LOCALHOST, n.port)) as sock:
        check = rawpdu.associate_rq(((1, VERIFICATION, (rawpdu.IMPLICIT,)),), calling="CHECK")
        sock.sendall(proxyrelay.v2_local() + check)
        sock.settimeout(5)
        assert sock.recv(1) == bytes([rawpdu.ASSOCIATE_AC])
    until(lambda: n.stats.checks == 1, what="the check counted")
    # No peer's association: no live entry, no count, although no [peer] rule matches.
    assert n.stats.opened == [] and n.stats.totals().associations == 0
    assert n.stats.refused == []


def test_the_header_comes_before_the_tls_handshake(tmp_path: Path) -> None:
    key, certificate = certs.self_signed(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certificate, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(certificate)
    client.check_hostname = False
    with (
        node(tmp_path, context=server) as n,
        proxyrelay.relay((LOCALHOST, n.port), lambda _: proxyrelay.v1("10.1.2.9", 5)) as relayed,
    ):
        assert echo(relayed, client) == 0x0000
    assert [(i.address, i.tls) for i in n.stats.opened] == [("10.1.2.9", True)]


@st.composite
def hostile_headers(draw: st.DrawFn) -> bytes:
    """A valid header of either version, then cut, flipped, stretched, and followed by
    anything."""
    data = bytearray(
        draw(
            st.sampled_from(
                [
                    proxyrelay.v1("10.1.2.3", 40000),
                    proxyrelay.v1("fd00::1", 1, "fd00::2"),
                    proxyrelay.v2("10.1.2.3", 40000),
                    proxyrelay.v2("fd00::1", 1, "fd00::2"),
                    proxyrelay.v2_local(),
                ]
            )
        )
    )
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        what = draw(st.sampled_from(["flip", "cut", "insert"]))
        if what == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif what == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data) + draw(st.binary(max_size=64))


def test_hostile_headers_are_closed_and_the_listener_serves_on(tmp_path: Path) -> None:
    with node(tmp_path) as n:
        threads = threading.active_count()

        @settings(max_examples=150, derandomize=True, deadline=None)
        @given(hostile_headers())
        def one(data: bytes) -> None:
            with socket.create_connection((LOCALHOST, n.port)) as sock:
                try:
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR)  # an EOF: no case waits out the deadline
                except OSError:
                    return  # the server closed it already, at the first wrong byte
                assert closed_by_server(sock)

        one()
        with proxyrelay.relay(
            (LOCALHOST, n.port), lambda _: proxyrelay.v2("10.1.2.3", 1)
        ) as relayed:
            assert echo(relayed) == 0x0000
        until(lambda: threading.active_count() <= threads + 1, what="the connections' threads end")
        assert set(n.stats.refused) <= {"malformed", "closed"}
        assert len(n.stats.refused) > 100
    assert not [line for line in n.log.lines if "Exception" in line[0] or "Traceback" in line[0]]


@pytest.mark.parametrize(("level", "lookups"), [(logging.WARNING, 0), (logging.INFO, 1)])
def test_the_host_is_looked_up_only_for_a_line_that_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: int, lookups: int
) -> None:
    """A reverse lookup of a real address may take long (75 ms for an unknown 10.x one on
    the test machine): it is made for the "Association Received" line alone."""
    asked: list[str] = []

    def lookup(address: str) -> tuple[str, list[str], list[str]]:
        asked.append(address)
        return "ct01.example.org", [], [address]

    monkeypatch.setattr(socket, "gethostbyaddr", lookup)
    with node(tmp_path, host_lookup=True) as n:
        logging.getLogger("dcmrecv").setLevel(level)
        with proxyrelay.relay(
            (LOCALHOST, n.port), lambda _: proxyrelay.v2("10.1.2.3", 1)
        ) as relayed:
            assert echo(relayed) == 0x0000
    assert asked == ["10.1.2.3"] * lookups
    received = [line[0] for line in n.log.lines if line[0].startswith("Association Received")]
    assert (
        received
        == ["Association Received ct01.example.org (via 127.0.0.1): MODALITY -> ANY-SCP"] * lookups
    )
