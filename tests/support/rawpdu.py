"""Raw DICOM upper-layer bytes for hostile peers: PDUs, PDVs and DIMSE command sets.

Encoded by hand (PS3.8 9.3, PS3.7 E) so that tests can send what no DICOM toolkit
would: wrong lengths, cut messages, bad headers. Only 127.0.0.1 is ever reached.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable

from pynetdicom import AE

from tests.support import dicomgen
from tests.support.net import LOCALHOST

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"

# PDU types (PS3.8 9.3.1).
ASSOCIATE_RQ = 0x01
ASSOCIATE_AC = 0x02
ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
RELEASE_RQ = 0x05
RELEASE_RP = 0x06
ABORT = 0x07

# Message control header bits (PS3.8 E.2).
COMMAND = 0x01
LAST = 0x02

# DIMSE command fields and the "no data set" marker (PS3.7 E.1).
C_STORE_RQ = 0x0001
C_ECHO_RQ = 0x0030
DATASET_PRESENT = 0x0000
NO_DATASET = 0x0101


def good_peer(port: int, sop_instance: str) -> tuple[int, int]:
    """A well-behaved pynetdicom requestor: C-ECHO, then C-STORE; the two statuses.

    -1 stands for "no status" (not associated, or no response).
    """
    ae = AE(ae_title="GOODPEER")
    ae.acse_timeout = 10
    ae.dimse_timeout = 10
    ae.network_timeout = 10
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(CT, EXPLICIT)
    try:
        assoc = ae.associate(LOCALHOST, port, ae_title="ANY-SCP")
        if not assoc.is_established:
            return -1, -1
        echo = assoc.send_c_echo()
        store = assoc.send_c_store(dicomgen.part10(dicomgen.Spec(CT, sop_instance)))
        assoc.release()
        return int(echo.get("Status", -1)), int(store.get("Status", -1))
    finally:
        ae.shutdown()


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBL", kind, 0, len(body)) + body


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _ae(title: str | bytes) -> bytes:
    raw = title.encode("latin-1") if isinstance(title, str) else title
    return raw[:16].ljust(16, b" ")


def associate_rq(
    contexts: Iterable[tuple[int, str, tuple[str, ...]]] = ((1, CT, (EXPLICIT,)),),
    *,
    called: str = "ANY-SCP",
    calling: str | bytes = "FUZZER",
    max_pdu: int = 16384,
) -> bytes:
    """An A-ASSOCIATE-RQ proposing (context id, abstract syntax, transfer syntaxes)."""
    items = _item(0x10, APPLICATION_CONTEXT.encode())
    for context_id, abstract, syntaxes in contexts:
        sub = _item(0x30, abstract.encode())
        sub += b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        items += _item(0x20, bytes([context_id, 0, 0, 0]) + sub)
    user = _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, b"1.2.826.0.1.3680043.9.1")
    items += _item(0x50, user)
    header = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\0" * 32
    return pdu(ASSOCIATE_RQ, header + items)


def dataset_pdus(context_id: int, dataset: bytes, fragment: int = 16000) -> list[bytes]:
    """`dataset` as P-DATA-TF PDUs of one `fragment`-byte PDV each, the last one marked."""
    pieces = [dataset[i : i + fragment] for i in range(0, len(dataset), fragment)]
    return [
        p_data(pdv(context_id, LAST if i == len(pieces) - 1 else 0, piece))
        for i, piece in enumerate(pieces)
    ]


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    """One presentation data value item: length, context id, control header, data."""
    return struct.pack(">LBB", len(data) + 2, context_id, control) + data


def p_data(*values: bytes) -> bytes:
    return pdu(P_DATA_TF, b"".join(values))


def release_rq() -> bytes:
    return pdu(RELEASE_RQ, b"\0" * 4)


def _element(group: int, element: int, value: bytes) -> bytes:
    # Implicit VR Little Endian, as every command set is encoded.
    return struct.pack("<HHL", group, element, len(value)) + value


def _ui(uid: str | bytes) -> bytes:
    raw = uid.encode("latin-1") if isinstance(uid, str) else uid
    return raw + b"\0" if len(raw) % 2 else raw


def command_set(
    field: int,
    *,
    message_id: int = 1,
    sop_class: str | bytes = CT,
    sop_instance: str | bytes | None = None,
    dataset: bool = True,
) -> bytes:
    """A DIMSE request command set with its group length (C-STORE-RQ or C-ECHO-RQ)."""
    body = _element(0x0000, 0x0002, _ui(sop_class))
    body += _element(0x0000, 0x0100, struct.pack("<H", field))
    body += _element(0x0000, 0x0110, struct.pack("<H", message_id))
    if field == C_STORE_RQ:
        body += _element(0x0000, 0x0700, struct.pack("<H", 0))
    body += _element(0x0000, 0x0800, struct.pack("<H", DATASET_PRESENT if dataset else NO_DATASET))
    if sop_instance is not None:
        body += _element(0x0000, 0x1000, _ui(sop_instance))
    return _element(0x0000, 0x0000, struct.pack("<L", len(body))) + body


def explicit_dataset(
    sop_instance: str | bytes, payload: bytes = b"\x01\x02", *, series_date: bytes | None = None
) -> bytes:
    """A small Explicit VR Little Endian CT dataset: SOP Class/Instance, Series Date, pixels.

    Values go out as given, so they may hold bytes no toolkit would encode.
    """

    def short(element: int, vr: bytes, value: bytes) -> bytes:
        return struct.pack("<HH", 0x0008, element) + vr + struct.pack("<H", len(value)) + value

    data = short(0x0016, b"UI", _ui(CT))
    data += short(0x0018, b"UI", _ui(sop_instance))
    if series_date is not None:
        data += short(0x0021, b"DA", series_date + b" " * (len(series_date) % 2))
    data += short(0x0060, b"CS", b"OT")
    padded = payload + b"\0" * (len(payload) % 2)
    data += struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<L", len(padded))
    return data + padded


def response_status(answer: tuple[int, bytes] | None) -> int | None:
    """The Status (0000,0900) of a DIMSE response in one P-DATA-TF PDU, else None."""
    if answer is None or answer[0] != P_DATA_TF:
        return None
    body = answer[1]
    offset = 0
    while offset + 6 <= len(body):
        (length,) = struct.unpack_from(">L", body, offset)
        data = body[offset + 6 : offset + 4 + length]
        offset += 4 + length
        at = 0
        while at + 8 <= len(data):
            group, element, size = struct.unpack_from("<HHL", data, at)
            if (group, element) == (0x0000, 0x0900) and size == 2:
                status: int = struct.unpack_from("<H", data, at + 8)[0]
                return status
            at += 8 + size
    return None


class Peer:
    """A raw TCP peer of the receiver; every call is bounded by a short timeout."""

    def __init__(self, port: int, timeout: float = 2.0) -> None:
        self.sock = socket.create_connection((LOCALHOST, port), timeout=timeout)

    def send(self, data: bytes) -> bool:
        """Send `data`; False if the receiver has closed the connection meanwhile."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def read_pdu(self, timeout: float = 2.0) -> tuple[int, bytes] | None:
        """The next PDU (type, body), or None on close, reset or timeout."""
        self.sock.settimeout(timeout)
        try:
            head = self._exactly(6)
            if head is None:
                return None
            kind, _, length = struct.unpack(">BBL", head)
            body = self._exactly(length)
        except OSError:
            return None
        return None if body is None else (kind, body)

    def _exactly(self, n: int) -> bytes | None:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(min(n - len(data), 65536))
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def associate(self, rq: bytes | None = None) -> bool:
        """Send an A-ASSOCIATE-RQ; True if the answer is an A-ASSOCIATE-AC."""
        if not self.send(rq if rq is not None else associate_rq()):
            return False
        answer = self.read_pdu()
        return answer is not None and answer[0] == ASSOCIATE_AC

    def store(
        self, context_id: int, sop_instance: str | bytes | None, dataset: bytes
    ) -> int | None:
        """Send a C-STORE-RQ and its dataset; the response status, None if none came."""
        command = command_set(C_STORE_RQ, sop_instance=sop_instance)
        pdus = [p_data(pdv(context_id, COMMAND | LAST, command))]
        pdus += dataset_pdus(context_id, dataset)
        if not self.send(b"".join(pdus)):
            return None
        return response_status(self.read_pdu(timeout=10.0))

    def is_open(self) -> bool:
        """True if the receiver has neither closed nor reset the connection (no waiting)."""
        self.sock.settimeout(0)
        try:
            return self.sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    def closed_by_peer(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the receiver to close; True if it did."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                return False
            except OSError:
                return True  # reset

    def close(self) -> None:
        self.sock.close()
