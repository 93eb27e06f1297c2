"""PROXY protocol headers (HAProxy's send-proxy and send-proxy-v2): who the real client is
when a trusted balancer relays the connection.

Pure logic, no I/O: the caller reads the first bytes of a connection and asks needed() how
many the header takes, reads until it has them, then parse()s them; the DICOM stream (or
the TLS handshake) starts right after Header.length bytes. Nothing is guessed: a listener
that requires the header refuses a connection that does not start with one, at its first
wrong byte, since otherwise any client could claim any address.

Both versions are taken, v1 (one text line) and v2 (binary), and held to the letter of the
specification (HAProxy's doc/proxy-protocol.txt). Where it leaves room, this module chooses:

- v1: the line is printable US-ASCII and only the first CRLF ends it; a lone CR or LF is
  refused at once, also in the part after UNKNOWN that is otherwise ignored, so that a
  sender ending its line wrongly cannot have DICOM bytes read as part of it. IPv6
  addresses may end in dotted IPv4 (inet_ntop writes ::ffff:a.b.c.d so), never with a
  %zone.
- v2 PROXY: TCP over IPv4 or IPv6, UNIX stream (its paths are not read), or UNSPEC (no
  addresses: the connection's own endpoints hold). UDP and UNIX datagram are valid in the
  specification, but a balancer relaying datagrams to a TCP listener is misconfigured:
  refused, as are family bytes the specification does not list (0x10, 0x01 ...).
- v2 LOCAL (a health check): the family is to be ignored, so no address is read. UNSPEC,
  the family senders are told to use with LOCAL, has no address block, so the rest is
  TLVs (a CRC32C among them is checked); with any other family where the addresses end is
  not known: the rest is skipped unread.
- v2 TLVs fill the rest of the header exactly; they are kept raw, in order. A CRC32C TLV
  is 4 bytes, big-endian like every other v2 number, and there is at most one of it (with
  two, which to zero for the check is undefined).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

SIGNATURE_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_V1 = 107  # the spec's longest line, CRLF included (UNKNOWN with IPv6 fields)
MAX_V2 = 64 * 1024  # a bound for the caller's buffer; the length field allows 16 + 65535

# TLV types the specification names (PP2_TYPE_*), and the sub-TLVs inside PP2_TYPE_SSL.
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_SUBTYPE_SSL_GROUP = 0x26
PP2_SUBTYPE_SSL_SIG_SCHEME = 0x27
PP2_SUBTYPE_SSL_CLIENT_CERT = 0x28
PP2_TYPE_NETNS = 0x30
# Bits of the first byte of a PP2_TYPE_SSL value.
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

_V1_START = b"PROXY "
_V2_FIXED = 16  # signature, version and command, family, length
_LOCAL = 0x0
_PROXY = 0x1
_UNSPEC = 0x00
# Family and transport byte: the family's name and the size of its address block.
_FAMILIES = {_UNSPEC: ("unspec", 0), 0x11: ("tcp4", 12), 0x21: ("tcp6", 36), 0x31: ("unix", 216)}
_DATAGRAMS = {0x12: "UDP over IPv4", 0x22: "UDP over IPv6", 0x32: "UNIX datagram"}
_V1_FAMILIES = {"TCP4": "tcp4", "TCP6": "tcp6"}
_NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]")
_PORT = re.compile(r"0|[1-9][0-9]{0,4}")


class ProxyError(ValueError):
    """A malformed PROXY protocol header; the text says exactly what is wrong."""


@dataclass(frozen=True)
class Header:
    """One PROXY protocol header."""

    version: int  # 1 or 2
    local: bool  # v2 LOCAL (a balancer's health check) or v1 UNKNOWN: no addresses
    family: str  # "tcp4", "tcp6", "unix", "unspec"
    # The real client; None unless tcp4 or tcp6: then the connection's own endpoints hold.
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    tlvs: tuple[tuple[int, bytes], ...]  # v2 (type, value) in order; () for v1
    length: int  # bytes the header took: the stream goes on after them


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


# The standard library has CRC-32 (zlib, binascii) but not CRC-32C (Castagnoli).
_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """The CRC-32C of data (RFC 4960 appendix B; reflected polynomial 0x82F63B78)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC32C_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF


def needed(data: bytes) -> int | None:
    """How many bytes the header at the start of `data` takes in all, or None while that
    cannot be known yet; raises ProxyError as soon as `data` cannot start a valid header."""
    if data[:1] == SIGNATURE_V2[:1]:
        return _needed_v2(data)
    return _needed_v1(data)


def parse(data: bytes) -> Header:
    """The one complete header at the start of `data` (bytes after it are not looked at);
    raises ProxyError for anything the specification does not allow."""
    total = needed(data)
    if total is None or total > len(data):
        wanted = "more" if total is None else str(total)
        raise ProxyError(f"incomplete header: {len(data)} bytes, it takes {wanted}")
    if data[:1] == SIGNATURE_V2[:1]:
        return _parse_v2(data[:total])
    return _parse_v1(data[: total - 2].decode("ascii"), total)


def _no_header(data: bytes) -> ProxyError:
    return ProxyError(
        f"no PROXY protocol header (neither 'PROXY ' nor the v2 signature): "
        f"the connection starts with {data[:16]!r}"
    )


def _needed_v1(data: bytes) -> int | None:
    if not _V1_START.startswith(data[: len(_V1_START)]):
        raise _no_header(data)
    end = data.find(b"\r\n", 0, MAX_V1)
    line = data[:end] if end >= 0 else data[:MAX_V1]
    if end < 0 and line.endswith(b"\r"):
        line = line[:-1]  # the start of a CRLF, or of one too late
    bad = _NOT_PRINTABLE.search(line)
    if bad is not None:
        byte = bad.group()
        if byte in b"\r\n":
            raise ProxyError(
                f"lone {byte!r} at byte {bad.start()} of the v1 line: it must end with CRLF"
            )
        raise ProxyError(
            f"byte {byte!r} at byte {bad.start()} of the v1 line: "
            "only printable US-ASCII is allowed"
        )
    if end >= 0:
        return end + 2
    if len(data) >= MAX_V1:
        raise ProxyError(f"no CRLF in the first {MAX_V1} bytes of the v1 line, its longest")
    return None


def _needed_v2(data: bytes) -> int | None:
    if not SIGNATURE_V2.startswith(data[: len(SIGNATURE_V2)]):
        raise _no_header(data)
    command = data[12] & 0x0F if len(data) > 12 else None
    if command is not None:
        version = data[12] >> 4
        if version != 2:
            raise ProxyError(f"version {version} in the binary header: only 2 is defined")
        if command not in (_LOCAL, _PROXY):
            raise ProxyError(
                f"command {command:#x} in the v2 header: only LOCAL (0x0) and PROXY (0x1) exist"
            )
        if len(data) > 13 and command == _PROXY:
            _family(data[13])
    if len(data) < _V2_FIXED:
        return None
    length = int.from_bytes(data[14:16], "big")
    total = _V2_FIXED + length
    if total > MAX_V2:
        raise ProxyError(f"v2 header of {total} bytes: more than the {MAX_V2} accepted")
    if command == _PROXY:
        name, size = _family(data[13])
        if length < size:
            raise ProxyError(
                f"the {name} address block takes {size} bytes, the v2 length is {length}"
            )
    return total


def _family(byte: int) -> tuple[str, int]:
    """The name and address block size of a PROXY command's family and transport byte."""
    if byte in _DATAGRAMS:
        raise ProxyError(
            f"{_DATAGRAMS[byte]} (family byte {byte:#04x}): dcmrecvd receives over TCP only"
        )
    if byte not in _FAMILIES:
        raise ProxyError(
            f"family byte {byte:#04x} in the v2 header: not one the specification defines"
        )
    return _FAMILIES[byte]


def _parse_v1(line: str, length: int) -> Header:
    fields = line.split(" ")
    protocol = fields[1]  # the line starts "PROXY " (needed() checked)
    if protocol == "UNKNOWN":
        # The spec: whatever follows UNKNOWN up to the CRLF is ignored.
        return Header(1, True, "unspec", None, None, (), length)
    if "" in fields:
        what = "a space before the CRLF" if line.endswith(" ") else "two spaces in a row"
        raise ProxyError(f"{what} in the v1 line: exactly one space separates the fields")
    if protocol not in _V1_FAMILIES:
        raise ProxyError(f"protocol {protocol!r} in the v1 line: TCP4, TCP6 or UNKNOWN")
    if len(fields) != 6:
        raise ProxyError(
            f"{len(fields) - 2} fields after {protocol} in the v1 line: it takes 4 "
            "(source and destination address, source and destination port)"
        )
    family = _V1_FAMILIES[protocol]
    source = (_v1_address(fields[2], protocol, "source"), _v1_port(fields[4], "source"))
    destination = (
        _v1_address(fields[3], protocol, "destination"),
        _v1_port(fields[5], "destination"),
    )
    return Header(1, False, family, source, destination, (), length)


def _v1_address(text: str, protocol: str, which: str) -> str:
    try:
        if protocol == "TCP4":
            return str(ipaddress.IPv4Address(text))
        # ipaddress takes a %zone after an IPv6 address; the spec's format has none.
        if "%" in text:
            raise ValueError("a %zone is not part of the format")
        return str(ipaddress.IPv6Address(text))
    except ValueError as exc:
        raise ProxyError(f"{which} address {text!r} is not valid for {protocol}: {exc}") from None


def _v1_port(text: str, which: str) -> int:
    if _PORT.fullmatch(text) is None or int(text) > 65535:
        raise ProxyError(
            f"{which} port {text!r}: not a decimal 0-65535 without sign or leading zero"
        )
    return int(text)


def _parse_v2(header: bytes) -> Header:
    length = len(header)
    if header[12] & 0x0F == _LOCAL:
        tlvs = _tlvs(header, _V2_FIXED) if header[13] == _UNSPEC else ()
        return Header(2, True, "unspec", None, None, tlvs, length)
    family, size = _FAMILIES[header[13]]
    tlvs = _tlvs(header, _V2_FIXED + size)
    block = header[_V2_FIXED : _V2_FIXED + size]
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    if family in ("tcp4", "tcp6"):
        width = 4 if family == "tcp4" else 16
        source = (_v2_address(block[:width]), int.from_bytes(block[-4:-2], "big"))
        destination = (_v2_address(block[width : 2 * width]), int.from_bytes(block[-2:], "big"))
    return Header(2, False, family, source, destination, tlvs, length)


def _v2_address(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


def _tlvs(header: bytes, offset: int) -> tuple[tuple[int, bytes], ...]:
    """The TLVs from offset to the end of the header, a CRC32C among them checked."""
    tlvs = []
    checksum_at = None
    while offset < len(header):
        left = len(header) - offset
        if left < 3:
            raise ProxyError(
                f"truncated TLV at byte {offset} of the v2 header: {left} bytes left, "
                "a TLV takes at least 3"
            )
        kind = header[offset]
        size = int.from_bytes(header[offset + 1 : offset + 3], "big")
        start, end = offset + 3, offset + 3 + size
        if end > len(header):
            raise ProxyError(
                f"truncated TLV at byte {offset} of the v2 header: type {kind:#04x} "
                f"says {size} bytes, {left - 3} are left"
            )
        if kind == PP2_TYPE_CRC32C:
            if size != 4:
                raise ProxyError(f"CRC32C TLV of {size} bytes: it takes 4")
            if checksum_at is not None:
                raise ProxyError("two CRC32C TLVs in the v2 header")
            checksum_at = start
        tlvs.append((kind, header[start:end]))
        offset = end
    if checksum_at is not None:
        said = int.from_bytes(header[checksum_at : checksum_at + 4], "big")
        zeroed = header[:checksum_at] + bytes(4) + header[checksum_at + 4 :]
        computed = crc32c(zeroed)
        if computed != said:
            raise ProxyError(
                f"CRC32C mismatch: the header says {said:#010x}, its bytes give {computed:#010x}"
            )
    return tuple(tlvs)
