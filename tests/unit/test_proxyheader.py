"""PROXY protocol headers: the specification's examples (v2 ones built byte by byte from its
description), every refusal with its reason, needed() on every prefix, and a property over
random and mutated bytes: nothing but ProxyError is raised, and needed() and parse() agree
on the length."""

from __future__ import annotations

import re
from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcmrecvd.proxyheader import (
    MAX_V1,
    MAX_V2,
    PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    SIGNATURE_V2,
    Header,
    ProxyError,
    crc32c,
    needed,
    parse,
)

# Section 2.2: "\x0D \x0A \x0D \x0A \x00 \x0D \x0A \x51 \x55 \x49 \x54 \x0A".
SIGNATURE = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])
LOCAL, PROXY = 0x0, 0x1
UNSPEC, TCP4, UDP4, TCP6, UDP6, UNIX, UNIX_DGRAM = 0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32
# What follows the header: an A-ASSOCIATE-RQ's first bytes, with a CRLF that a v1 parser
# must not reach.
DICOM = bytes([0x01, 0x00, 0x00, 0x00, 0x00, 0xCD, 0x00, 0x01, 0x0D, 0x0A, 0x0D, 0x0A])

V1_EXAMPLE = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
V1_TCP4_LONGEST = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
FFFF = ":".join(["ffff"] * 8).encode()
V1_TCP6_LONGEST = b"PROXY TCP6 " + FFFF + b" " + FFFF + b" 65535 65535\r\n"
V1_UNKNOWN_LONGEST = b"PROXY UNKNOWN " + FFFF + b" " + FFFF + b" 65535 65535\r\n"


def port(number: int) -> bytes:
    return number.to_bytes(2, "big")


def v2(
    command: int = PROXY,
    family: int = TCP4,
    body: bytes = b"",
    *,
    version: int = 2,
    length: int | None = None,
) -> bytes:
    """A v2 header: signature, version and command, family, length, then the body."""
    size = len(body) if length is None else length
    return SIGNATURE + bytes([version << 4 | command, family]) + size.to_bytes(2, "big") + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def with_crc32c(header: bytes) -> bytes:
    """header with a CRC32C TLV appended, computed as section 2.2.3 says: over the whole
    header with the checksum field zeroed."""
    zeroed = header + tlv(PP2_TYPE_CRC32C, bytes(4))
    zeroed = zeroed[:14] + port(len(zeroed) - 16) + zeroed[16:]
    return zeroed[:-4] + crc32c(zeroed).to_bytes(4, "big")


# 192.168.0.1:56324 -> 192.168.0.11:443, the specification's v1 example, in binary.
IPV4_BLOCK = bytes([192, 168, 0, 1, 192, 168, 0, 11]) + port(56324) + port(443)
IPV6_BLOCK = (
    bytes.fromhex("20010db8000000000000000000000001")
    + bytes.fromhex("20010db80000000000000000000000ff")
    + port(50000)
    + port(104)
)
UNIX_BLOCK = b"/run/haproxy/pacs.sock".ljust(108, b"\0") + b"/run/dcmrecvd.sock".ljust(108, b"\0")
SSL_VALUE = bytes([0x01]) + bytes(4) + tlv(PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3")
TLVS = (
    (PP2_TYPE_ALPN, b"dicom"),
    (PP2_TYPE_AUTHORITY, b"pacs.example.org"),
    (PP2_TYPE_NOOP, b""),
    (PP2_TYPE_UNIQUE_ID, bytes(range(32))),
    (PP2_TYPE_SSL, SSL_VALUE),
    (0xE0, b"custom"),
)
TLV_BYTES = b"".join(tlv(kind, value) for kind, value in TLVS)
WITH_CRC = with_crc32c(v2(PROXY, TCP4, IPV4_BLOCK + TLV_BYTES))
WITH_CRC_TCP6 = with_crc32c(v2(PROXY, TCP6, IPV6_BLOCK))
EXAMPLE_SOURCE = ("192.168.0.1", 56324)
EXAMPLE_DESTINATION = ("192.168.0.11", 443)

VALID: list[tuple[bytes, Header]] = [
    (V1_EXAMPLE, Header(1, False, "tcp4", EXAMPLE_SOURCE, EXAMPLE_DESTINATION, (), 47)),
    (
        V1_TCP4_LONGEST,
        Header(1, False, "tcp4", ("255.255.255.255", 65535), ("255.255.255.255", 65535), (), 56),
    ),
    (
        V1_TCP6_LONGEST,
        Header(1, False, "tcp6", (FFFF.decode(), 65535), (FFFF.decode(), 65535), (), 104),
    ),
    (
        b"PROXY TCP6 2001:DB8::1 2001:0db8:0:0:0:0:0:ff 0 104\r\n",
        Header(1, False, "tcp6", ("2001:db8::1", 0), ("2001:db8::ff", 104), (), 53),
    ),
    # inet_ntop writes IPv4-mapped addresses so; Python 3.13 started to show them so too.
    (
        b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n",
        Header(1, False, "tcp6", (str(IPv6Address("::ffff:192.0.2.1")), 1), ("::1", 2), (), 37),
    ),
    (b"PROXY UNKNOWN\r\n", Header(1, True, "unspec", None, None, (), 15)),
    (V1_UNKNOWN_LONGEST, Header(1, True, "unspec", None, None, (), 107)),
    (b"PROXY UNKNOWN  anything, ignored \r\n", Header(1, True, "unspec", None, None, (), 35)),
    (
        v2(PROXY, TCP4, IPV4_BLOCK),
        Header(2, False, "tcp4", EXAMPLE_SOURCE, EXAMPLE_DESTINATION, (), 28),
    ),
    (
        v2(PROXY, TCP6, IPV6_BLOCK),
        Header(2, False, "tcp6", ("2001:db8::1", 50000), ("2001:db8::ff", 104), (), 52),
    ),
    (v2(PROXY, UNIX, UNIX_BLOCK), Header(2, False, "unix", None, None, (), 232)),
    (v2(PROXY, UNSPEC), Header(2, False, "unspec", None, None, (), 16)),
    # Health checks: the connection's own endpoints hold, whatever the family says.
    (v2(LOCAL, UNSPEC), Header(2, True, "unspec", None, None, (), 16)),
    (v2(LOCAL, TCP4, IPV4_BLOCK), Header(2, True, "unspec", None, None, (), 28)),
    (v2(LOCAL, TCP4), Header(2, True, "unspec", None, None, (), 16)),
    (v2(LOCAL, UDP6, IPV6_BLOCK), Header(2, True, "unspec", None, None, (), 52)),
    (v2(LOCAL, 0x45, b"not read"), Header(2, True, "unspec", None, None, (), 24)),
    (v2(LOCAL, TCP4, IPV4_BLOCK + b"\x04"), Header(2, True, "unspec", None, None, (), 29)),
    (
        v2(LOCAL, UNSPEC, tlv(PP2_TYPE_UNIQUE_ID, b"check-1")),
        Header(2, True, "unspec", None, None, ((PP2_TYPE_UNIQUE_ID, b"check-1"),), 26),
    ),
    (
        v2(PROXY, TCP4, IPV4_BLOCK + TLV_BYTES),
        Header(2, False, "tcp4", EXAMPLE_SOURCE, EXAMPLE_DESTINATION, TLVS, 28 + len(TLV_BYTES)),
    ),
    (
        WITH_CRC,
        Header(
            2,
            False,
            "tcp4",
            EXAMPLE_SOURCE,
            EXAMPLE_DESTINATION,
            (*TLVS, (PP2_TYPE_CRC32C, WITH_CRC[-4:])),
            len(WITH_CRC),
        ),
    ),
    (
        WITH_CRC_TCP6,
        Header(
            2,
            False,
            "tcp6",
            ("2001:db8::1", 50000),
            ("2001:db8::ff", 104),
            ((PP2_TYPE_CRC32C, WITH_CRC_TCP6[-4:]),),
            59,
        ),
    ),
]


def test_signature() -> None:
    assert SIGNATURE_V2 == SIGNATURE
    # Section 2.2: the 13 bytes that tell version 2.
    assert v2(LOCAL)[:13] == b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a\x20"


def test_crc32c() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc32c(b"") == 0


def test_the_spec_line_lengths() -> None:
    lengths = (len(V1_TCP4_LONGEST), len(V1_TCP6_LONGEST), len(V1_UNKNOWN_LONGEST))
    assert lengths == (56, 104, MAX_V1)


@pytest.mark.parametrize(("data", "header"), VALID)
def test_parse(data: bytes, header: Header) -> None:
    assert parse(data) == header
    assert header.length == len(data)
    # What follows is the caller's; it is not looked at.
    assert parse(data + DICOM) == header
    assert parse(data + b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n") == header


@pytest.mark.parametrize(("data", "header"), VALID)
def test_needed_on_every_prefix(data: bytes, header: Header) -> None:
    stream = data + DICOM
    # v2 tells its length in its first 16 bytes; v1 only at its CRLF.
    known = 16 if header.version == 2 else header.length
    for size in range(len(stream) + 1):
        assert needed(stream[:size]) == (None if size < known else header.length), size
        if size < header.length:
            with pytest.raises(ProxyError, match="incomplete header"):
                parse(stream[:size])


def test_the_largest_v2_header() -> None:
    noop = tlv(PP2_TYPE_NOOP, bytes(MAX_V2 - 16 - 12 - 3 - 7))
    data = with_crc32c(v2(PROXY, TCP4, IPV4_BLOCK + noop))
    assert len(data) == MAX_V2
    assert needed(data[:16]) == MAX_V2
    assert parse(data).length == MAX_V2


def test_crc32c_mismatch() -> None:
    # 192.168.0.1 -> 192.168.0.2: what the checksum is for.
    tampered = WITH_CRC[:19] + b"\x02" + WITH_CRC[20:]
    with pytest.raises(ProxyError, match=r"CRC32C mismatch: the header says 0x[0-9a-f]{8}, its"):
        parse(tampered)
    wrong = WITH_CRC[:-4] + bytes(4)
    with pytest.raises(ProxyError, match="CRC32C mismatch: the header says 0x00000000"):
        parse(wrong)
    local = with_crc32c(v2(LOCAL, UNSPEC))
    assert parse(local).local
    with pytest.raises(ProxyError, match="CRC32C mismatch"):
        parse(local[:-1] + bytes([local[-1] ^ 1]))


LINE = b"PROXY TCP4 192.168.0.1 192.168.0.11 "

REFUSED = [
    # Not a header at all: no guessing.
    (b"\x16\x03\x01\x02\x00\x01", "no PROXY protocol header (neither 'PROXY ' nor the v2"),
    (DICOM, r"the connection starts with b'\x01\x00\x00"),
    (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
    (b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "no PROXY protocol header"),
    (b"PROXY\r\n", "no PROXY protocol header"),
    (SIGNATURE[:11] + b"\x0b\x21\x11\x00\x00", "no PROXY protocol header"),
    # v2 fixed part.
    (v2(PROXY, TCP4, IPV4_BLOCK, version=1), "version 1 in the binary header: only 2"),
    (v2(PROXY, TCP4, IPV4_BLOCK, version=3), "version 3 in the binary header"),
    (v2(0x2, TCP4, IPV4_BLOCK), "command 0x2 in the v2 header: only LOCAL (0x0) and PROXY"),
    (v2(0xF, UNSPEC), "command 0xf in the v2 header"),
    (v2(PROXY, UDP4, IPV4_BLOCK), "UDP over IPv4 (family byte 0x12): dcmrecvd receives over TCP"),
    (v2(PROXY, UDP6, IPV6_BLOCK), "UDP over IPv6 (family byte 0x22)"),
    (v2(PROXY, UNIX_DGRAM, UNIX_BLOCK), "UNIX datagram (family byte 0x32)"),
    (v2(PROXY, 0x10, IPV4_BLOCK), "family byte 0x10 in the v2 header: not one the spec"),
    (v2(PROXY, 0x41), "family byte 0x41"),
    (v2(PROXY, 0x13, IPV4_BLOCK), "family byte 0x13"),
    (v2(length=0xFFFF), f"v2 header of 65551 bytes: more than the {MAX_V2} accepted"),
    # v2 address block and TLVs.
    (v2(PROXY, TCP4, IPV4_BLOCK[:8]), "the tcp4 address block takes 12 bytes, the v2 length is 8"),
    (v2(PROXY, TCP6, IPV4_BLOCK), "the tcp6 address block takes 36 bytes, the v2 length is 12"),
    (v2(PROXY, UNIX, IPV6_BLOCK), "the unix address block takes 216 bytes, the v2 length is 36"),
    (
        v2(PROXY, TCP4, IPV4_BLOCK + b"\x04\x00"),
        "truncated TLV at byte 28 of the v2 header: 2 bytes left, a TLV takes at least 3",
    ),
    (
        v2(PROXY, TCP4, IPV4_BLOCK + tlv(PP2_TYPE_AUTHORITY, b"pacs") + b"\x00"),
        "truncated TLV at byte 35 of the v2 header: 1 bytes left",
    ),
    (
        v2(PROXY, TCP4, IPV4_BLOCK + tlv(PP2_TYPE_AUTHORITY, b"pacs.example")[:-1]),
        "truncated TLV at byte 28 of the v2 header: type 0x02 says 12 bytes, 11 are left",
    ),
    (v2(PROXY, UNSPEC, b"\x20"), "truncated TLV at byte 16"),
    (v2(LOCAL, UNSPEC, b"\x05\x00\x09id"), "truncated TLV at byte 16"),
    (v2(PROXY, TCP4, IPV4_BLOCK + tlv(PP2_TYPE_CRC32C, bytes(3))), "CRC32C TLV of 3 bytes"),
    (
        with_crc32c(v2(PROXY, TCP4, IPV4_BLOCK + tlv(PP2_TYPE_CRC32C, bytes(4)))),
        "two CRC32C TLVs",
    ),
    # v1 framing.
    (b"PROXY UNKNOWN " + b"x" * 93, "no CRLF in the first 107 bytes of the v1 line"),
    (b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", "no CRLF in the first 107 bytes"),
    (LINE + b"56324 443\n" + DICOM, r"lone b'\n' at byte 45 of the v1 line: it must end with CRLF"),
    (LINE + b"56324 443\r" + DICOM, r"lone b'\r' at byte 45"),
    (b"PROXY UNKNOWN\n\r\n", r"lone b'\n' at byte 13"),
    (b"PROXY UNKNOWN \x00\r\n", r"byte b'\x00' at byte 14 of the v1 line: only printable US-ASCII"),
    (b"PROXY UNKNOWN \xc3\xa9\r\n", r"byte b'\xc3' at byte 14"),
    (b"PROXY TCP4\t1.2.3.4 1.2.3.4 1 2\r\n", r"byte b'\t' at byte 10"),
    # v1 fields.
    (b"PROXY TCP4  192.168.0.1 192.168.0.11 56324 443\r\n", "two spaces in a row in the v1 line"),
    (b"PROXY  TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", "two spaces in a row"),
    (LINE + b"56324  443\r\n", "two spaces in a row"),
    (LINE + b"56324 443 \r\n", "a space before the CRLF in the v1 line: exactly one space"),
    (b"PROXY \r\n", "a space before the CRLF"),
    (
        b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
        "protocol 'TCP5' in the v1 line: TCP4, TCP6 or UNKNOWN",
    ),
    (b"PROXY tcp4 1.2.3.4 1.2.3.4 1 2\r\n", "protocol 'tcp4'"),
    (b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", "protocol 'UDP4'"),
    (b"PROXY UNKNOWNX\r\n", "protocol 'UNKNOWNX'"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "3 fields after TCP4 in the v1 line: it takes 4"),
    (LINE + b"56324 443 80\r\n", "5 fields after TCP4"),
    (b"PROXY TCP4\r\n", "0 fields after TCP4"),
    # v1 addresses.
    (b"PROXY TCP4 ::1 ::1 1 2\r\n", "source address '::1' is not valid for TCP4"),
    (b"PROXY TCP4 1.2.3.4 2001:db8::1 1 2\r\n", "destination address '2001:db8::1' is not valid"),
    (b"PROXY TCP6 192.168.0.1 ::1 1 2\r\n", "source address '192.168.0.1' is not valid for TCP6"),
    (b"PROXY TCP4 192.168.000.1 1.2.3.4 1 2\r\n", "source address '192.168.000.1' is not valid"),
    (b"PROXY TCP4 192.168.0.01 1.2.3.4 1 2\r\n", "Leading zeros are not permitted"),
    (b"PROXY TCP4 256.1.1.1 1.2.3.4 1 2\r\n", "source address '256.1.1.1'"),
    (b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", "source address '1.2.3'"),
    (b"PROXY TCP4 0x1.2.3.4 1.2.3.4 1 2\r\n", "source address '0x1.2.3.4'"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "source address 'fe80::1%eth0' is not valid for TCP6"),
    (b"PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n", "source address '1:2:3:4:5:6:7'"),
    (b"PROXY TCP6 ::1::2 ::1 1 2\r\n", "source address '::1::2'"),
    (b"PROXY TCP6 12345::1 ::1 1 2\r\n", "source address '12345::1'"),
    # v1 ports.
    (LINE + b"65536 443\r\n", "source port '65536': not a decimal 0-65535 without sign or"),
    (LINE + b"56324 +443\r\n", "destination port '+443'"),
    (LINE + b"-1 443\r\n", "source port '-1'"),
    (LINE + b"056324 443\r\n", "source port '056324'"),
    (LINE + b"00 443\r\n", "source port '00'"),
    (LINE + b"0x50 443\r\n", "source port '0x50'"),
    (LINE + b"1_000 443\r\n", "source port '1_000'"),
    (LINE + b"999999 443\r\n", "source port '999999'"),
]


@pytest.mark.parametrize(("data", "message"), REFUSED)
def test_refused(data: bytes, message: str) -> None:
    with pytest.raises(ProxyError, match=re.escape(message)):
        parse(data + DICOM)


@pytest.mark.parametrize(
    ("data", "at"),
    [
        (b"\x16\x03\x01", 1),
        (DICOM, 1),
        (b"PROXX", 5),
        (b"PROXY\r\n", 6),
        (SIGNATURE[:5] + b"X", 6),
        (v2(PROXY, version=1), 13),
        (v2(0x2), 13),
        (v2(PROXY, UDP4, IPV4_BLOCK), 14),
        (v2(PROXY, 0x10, IPV4_BLOCK), 14),
        (v2(PROXY, TCP4, IPV4_BLOCK[:8]), 16),
        (v2(length=MAX_V2 - 15), 16),
        (b"PROXY TCP4 1.2.3.4\n", 19),
        (b"PROXY TCP4 1.2.3.4\r1", 20),
        (b"PROXY UNKNOWN " + b"x" * 200, MAX_V1),
    ],
)
def test_needed_refuses_at_the_first_wrong_byte(data: bytes, at: int) -> None:
    assert needed(data[: at - 1]) is None
    with pytest.raises(ProxyError):
        needed(data[:at])


def _agree(data: bytes) -> None:
    """needed() and parse() raise nothing but ProxyError and agree."""
    try:
        total = needed(data)
    except ProxyError:
        with pytest.raises(ProxyError):
            parse(data)
        return
    if total is None or total > len(data):
        with pytest.raises(ProxyError, match="incomplete header"):
            parse(data)
        return
    try:
        header = parse(data)
    except ProxyError:
        return
    assert header.length == total
    assert parse(data[:total]) == header
    for size in range(total):
        assert needed(data[:size]) in (None, total)


STARTS = [b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", SIGNATURE]
STARTS += [
    SIGNATURE + bytes([0x20 | command, family])
    for command in (0, 1)
    for family in (0, 0x11, 0x21, 0x31)
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(STARTS), st.binary(max_size=120))
def test_random_bytes(start: bytes, data: bytes) -> None:
    _agree(start + data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid header (with DICOM after it) with a few bytes changed, cut or added."""
    data = bytearray(draw(st.sampled_from([data for data, _ in VALID])) + DICOM)
    for _ in range(draw(st.integers(0, 3))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=8))


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_mutated_headers(data: bytes) -> None:
    _agree(data)
