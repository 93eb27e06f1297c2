"""A minimal DICOM upper-layer requestor on a plain or TLS socket: associate, C-ECHO,
C-STORE of a Part-10 file's dataset as it is, release.

The latency probe needs to know when the last byte of a dataset left and when its
C-STORE-RSP came back, with nothing between: no requestor thread, no re-encoding, no
fragmenting other than the peer's maximum PDU. PS3.8 section 9.3 gives the PDUs,
PS3.7 section 9.3.1 and annex E the command sets.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_CLASS_UID = "2.25.185877878941896290354200091310918362434"
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
NO_DATASET = 0x0101


class AssociationError(Exception):
    """The peer rejected, aborted or broke the association."""


@dataclass(frozen=True)
class TlsFiles:
    """A key and a self-signed certificate that both sides present and trust."""

    key: Path
    certificate: Path

    def client_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # DICOM peers are named by AE titles, not host names.
        context.check_hostname = False
        context.load_verify_locations(self.certificate)
        context.load_cert_chain(self.certificate, self.key)
        return context

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate, self.key)
        return context


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def _pdu(pdu_type: int, value: bytes) -> bytes:
    return struct.pack(">BxI", pdu_type, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)


def associate_rq(
    calling: str, called: str, abstract_syntaxes: Iterable[str], max_pdu: int
) -> bytes:
    """A-ASSOCIATE-RQ: one context per abstract syntax (ids 1, 3, 5 ...), Explicit VR LE."""
    items = [_item(0x10, APPLICATION_CONTEXT.encode())]
    for number, syntax in enumerate(abstract_syntaxes):
        body = struct.pack(">B3x", 2 * number + 1)
        body += _item(0x30, syntax.encode()) + _item(0x40, EXPLICIT_VR_LE.encode())
        items.append(_item(0x20, body))
    user = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, IMPLEMENTATION_CLASS_UID.encode())
    items.append(_item(0x50, user))
    header = struct.pack(">H2x", 1) + _ae(called) + _ae(calling) + bytes(32)
    return _pdu(0x01, header + b"".join(items))


@dataclass(frozen=True)
class Accepted:
    """What an A-ASSOCIATE-AC granted: context id per abstract syntax, the peer's max PDU."""

    contexts: dict[int, bool]
    max_pdu: int


def parse_associate_ac(body: bytes) -> Accepted:
    """The body of an A-ASSOCIATE-AC (after its 6-byte PDU header)."""
    contexts: dict[int, bool] = {}
    max_pdu = 0
    offset = 68  # version, reserved, AE titles, 32 reserved bytes
    while offset + 4 <= len(body):
        item_type, length = struct.unpack_from(">BxH", body, offset)
        value = body[offset + 4 : offset + 4 + length]
        if item_type == 0x21:
            contexts[value[0]] = value[2] == 0
        elif item_type == 0x50:
            sub = 0
            while sub + 4 <= len(value):
                sub_type, sub_length = struct.unpack_from(">BxH", value, sub)
                if sub_type == 0x51:
                    (max_pdu,) = struct.unpack_from(">I", value, sub + 4)
                sub += 4 + sub_length
        offset += 4 + length
    return Accepted(contexts, max_pdu)


def _element(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" * (len(raw) % 2)


def command_set(fields: list[tuple[int, bytes]]) -> bytes:
    """A command set in Implicit VR LE from (element of group 0000, value), in tag order."""
    body = b"".join(_element(0x0000, element, value) for element, value in sorted(fields))
    return _element(0x0000, 0x0000, struct.pack("<I", len(body))) + body


def c_store_rq(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    return command_set(
        [
            (0x0002, _ui(sop_class)),
            (0x0100, struct.pack("<H", C_STORE_RQ)),
            (0x0110, struct.pack("<H", message_id)),
            (0x0700, struct.pack("<H", 0)),
            (0x0800, struct.pack("<H", 0)),
            (0x1000, _ui(sop_instance)),
        ]
    )


def c_echo_rq(message_id: int) -> bytes:
    return command_set(
        [
            (0x0002, _ui(VERIFICATION)),
            (0x0100, struct.pack("<H", C_ECHO_RQ)),
            (0x0110, struct.pack("<H", message_id)),
            (0x0800, struct.pack("<H", NO_DATASET)),
        ]
    )


def parse_command(data: bytes) -> dict[int, bytes]:
    """Elements of group 0000 of an Implicit VR LE command set: element number -> value."""
    fields: dict[int, bytes] = {}
    offset = 0
    while offset + 8 <= len(data):
        _group, element, length = struct.unpack_from("<HHI", data, offset)
        fields[element] = data[offset + 8 : offset + 8 + length]
        offset += 8 + length
    return fields


def p_data(context_id: int, data: bytes, command: bool, max_pdu: int) -> bytes:
    """P-DATA-TF PDUs carrying `data` in fragments that fit the peer's max PDU length."""
    # The max PDU length bounds the PDU's variable field: 4 item-length bytes, the context
    # id and the message control header come off each fragment.
    room = max_pdu - 6 if max_pdu else max(len(data), 1)
    pdus = []
    for start in range(0, max(len(data), 1), room):
        last = start + room >= len(data)
        header = (0x01 if command else 0x00) | (0x02 if last else 0x00)
        fragment = data[start : start + room]
        pdv = struct.pack(">IBB", len(fragment) + 2, context_id, header) + fragment
        pdus.append(_pdu(0x04, pdv))
    return b"".join(pdus)


def dataset_of_part10(path: Path) -> bytes:
    """The dataset of a Part-10 file: what follows the File Meta group."""
    data = path.read_bytes()
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise ValueError(f"{path}: not a Part-10 file with a group length first")
    (meta_length,) = struct.unpack_from("<I", data, 140)
    return data[144 + meta_length :]


class Association:
    """One association as requestor; every call blocks until its answer is in."""

    def __init__(
        self,
        port: int,
        abstract_syntaxes: Iterable[str],
        tls: TlsFiles | None = None,
        *,
        calling: str = "LOADPROBE",
        called: str = "ANY-SCP",
        max_pdu: int = 131072,
        timeout: float = 60,
    ) -> None:
        self.syntaxes = list(dict.fromkeys(abstract_syntaxes))
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = raw
        try:
            if tls is not None:
                self.sock = tls.client_context().wrap_socket(raw)
            self.sock.sendall(associate_rq(calling, called, self.syntaxes, max_pdu))
            pdu_type, body = self._read_pdu()
            if pdu_type != 0x02:
                raise AssociationError(f"association refused (PDU type {pdu_type:#04x})")
            accepted = parse_associate_ac(body)
        except BaseException:
            self.sock.close()
            raise
        self.peer_max_pdu = accepted.max_pdu
        self.context_of = {
            syntax: 2 * number + 1
            for number, syntax in enumerate(self.syntaxes)
            if accepted.contexts.get(2 * number + 1)
        }
        self.message_id = 0

    def _read_exactly(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = self.sock.recv(size)
            if not chunk:
                raise AssociationError("connection closed by the peer")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _read_pdu(self) -> tuple[int, bytes]:
        pdu_type, length = struct.unpack(">BxI", self._read_exactly(6))
        body = self._read_exactly(length)
        if pdu_type == 0x07:
            raise AssociationError(f"A-ABORT (source {body[2]}, reason {body[3]})")
        return pdu_type, body

    def _read_command(self) -> dict[int, bytes]:
        """The next command set the peer sends, from its P-DATA-TF fragments."""
        data = b""
        while True:
            pdu_type, body = self._read_pdu()
            if pdu_type != 0x04:
                raise AssociationError(f"expected P-DATA-TF, got PDU type {pdu_type:#04x}")
            offset = 0
            while offset < len(body):
                (length,) = struct.unpack_from(">I", body, offset)
                header = body[offset + 5]
                data += body[offset + 6 : offset + 4 + length]
                offset += 4 + length
                if header & 0x03 == 0x03:
                    return parse_command(data)

    def _status(self, fields: dict[int, bytes], expected_command: int) -> int:
        (command,) = struct.unpack("<H", fields.get(0x0100, b"\0\0"))
        (answered,) = struct.unpack("<H", fields.get(0x0120, b"\0\0"))
        if command != expected_command or answered != self.message_id:
            raise AssociationError(f"unexpected response {command:#06x} to {answered}")
        (status,) = struct.unpack("<H", fields[0x0900])
        return int(status)

    def echo(self) -> int:
        """C-ECHO; returns its status."""
        self.message_id += 1
        context = self.context_of[VERIFICATION]
        self.sock.sendall(p_data(context, c_echo_rq(self.message_id), True, self.peer_max_pdu))
        return self._status(self._read_command(), C_ECHO_RSP)

    def store(self, sop_class: str, sop_instance: str, dataset: bytes) -> tuple[int, float, float]:
        """C-STORE: (status, time the dataset's last byte was sent, time the response was
        read), both time.perf_counter()."""
        self.message_id += 1
        context = self.context_of.get(sop_class)
        if context is None:
            raise AssociationError(f"no accepted presentation context for {sop_class}")
        command = c_store_rq(self.message_id, sop_class, sop_instance)
        self.sock.sendall(
            p_data(context, command, True, self.peer_max_pdu)
            + p_data(context, dataset, False, self.peer_max_pdu)
        )
        sent = time.perf_counter()
        status = self._status(self._read_command(), C_STORE_RSP)
        return status, sent, time.perf_counter()

    def release(self) -> None:
        try:
            self.sock.sendall(_pdu(0x05, bytes(4)))
            pdu_type, _body = self._read_pdu()
            if pdu_type != 0x06:
                raise AssociationError(f"expected A-RELEASE-RP, got PDU type {pdu_type:#04x}")
        finally:
            self.sock.close()

    def __enter__(self) -> Association:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.release()
        else:
            self.sock.close()


def echo(port: int, tls: TlsFiles | None = None, timeout: float = 10) -> bool:
    """Whether a C-ECHO on a fresh association succeeds."""
    try:
        with Association(port, [VERIFICATION], tls, timeout=timeout) as association:
            return association.echo() == 0
    except (OSError, AssociationError, KeyError, struct.error):
        return False
