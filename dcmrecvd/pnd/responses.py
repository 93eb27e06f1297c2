"""Encode C-STORE responses by hand instead of through a pydicom Dataset.

Workaround for a pynetdicom 3.0 limit, kept in this one module: DIMSEServiceProvider
send_msg turns every response primitive into a DIMSE message whose command set is a
pydicom Dataset, filled element by element with pydicom's value validation, encoded
twice (once to measure the group length), then split into P-DATA: about a fifth of the
receiver's CPU time per C-STORE. A C-STORE-RSP is a handful of fixed elements, so
`QuickResponseDIMSE` writes its Implicit VR Little Endian bytes directly, in the order
and with the padding pydicom uses. While pynetdicom's own loggers record DEBUG (-ll
trace), responses take pynetdicom's path, whose EVT_DIMSE_SENT handlers dump them.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable
from typing import cast

from pynetdicom.dimse_primitives import C_STORE, DimsePrimitiveType
from pynetdicom.pdu_primitives import P_DATA

from dcmrecvd.pnd.dispatch import StorageOnlyDIMSE

_PYNETDICOM = logging.getLogger("pynetdicom")

_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101
# PS3.8 E.2 message control header: a command, and its last fragment.
_LAST_COMMAND_FRAGMENT = b"\x03"
# PDU type, reserved, length, then one PDV item header (length, context ID, control).
_PDU_OVERHEAD = 6 + 4 + 2


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def _tags(tags: Iterable[int]) -> bytes:
    return b"".join(struct.pack("<HH", tag >> 16, tag & 0xFFFF) for tag in tags)


def encode_store_response(response: C_STORE) -> bytes:
    """The command set of a C-STORE-RSP, Implicit VR Little Endian, group length first."""
    return store_response_command(
        message_id=int(response.MessageIDBeingRespondedTo or 0),
        sop_class_uid=str(response.AffectedSOPClassUID or ""),
        sop_instance_uid=str(response.AffectedSOPInstanceUID or ""),
        status=int(response.Status or 0),
        comment=str(response.ErrorComment or ""),
        offending=tuple(int(tag) for tag in cast(list[int], response.OffendingElement or [])),
    )


def store_response_command(
    *,
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    status: int,
    comment: str = "",
    offending: tuple[int, ...] = (),
) -> bytes:
    """A C-STORE-RSP command set from its values; UnicodeEncodeError if one is not ASCII."""
    elements = []
    if sop_class_uid:
        elements.append(_element(0x0002, _text(sop_class_uid, b"\x00")))
    elements.append(_element(0x0100, struct.pack("<H", _C_STORE_RSP)))
    elements.append(_element(0x0120, struct.pack("<H", message_id)))
    elements.append(_element(0x0800, struct.pack("<H", _NO_DATA_SET)))
    elements.append(_element(0x0900, struct.pack("<H", status)))
    if offending:
        elements.append(_element(0x0901, _tags(offending)))
    if comment:
        elements.append(_element(0x0902, _text(comment, b" ")))
    if sop_instance_uid:
        elements.append(_element(0x1000, _text(sop_instance_uid, b"\x00")))
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body


def sendable(encode: Callable[[], bytes], peer_maximum: int | None) -> bytes | None:
    """The command set `encode` makes, or None where pynetdicom's encoder must decide: a
    value that is not ASCII, or a peer maximum PDU length too small for one fragment
    (it fragments; never for a sane PDU)."""
    try:
        command = encode()
    except UnicodeEncodeError:
        return None
    if peer_maximum and len(command) + _PDU_OVERHEAD > peer_maximum:
        return None
    return command


def p_data_tf(context_id: int, command: bytes) -> bytes:
    """A P-DATA-TF PDU holding `command` as one last command fragment (PS3.8 9.3.5)."""
    item = struct.pack(">LB", len(command) + 2, context_id) + _LAST_COMMAND_FRAGMENT + command
    return struct.pack(">BBL", 0x04, 0x00, len(item)) + item


class QuickResponseDIMSE(StorageOnlyDIMSE):
    """The storage DIMSE provider, sending C-STORE responses without pydicom."""

    def send_msg(self, primitive: DimsePrimitiveType, context_id: int) -> None:
        if (
            not isinstance(primitive, C_STORE)
            or primitive.MessageIDBeingRespondedTo is None
            or _PYNETDICOM.isEnabledFor(logging.DEBUG)
        ):
            super().send_msg(primitive, context_id)
            return
        response = primitive  # narrowed to C_STORE, which the lambda would not keep
        command = sendable(lambda: encode_store_response(response), self.maximum_pdu_size)
        if command is None:
            super().send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list = [[context_id, _LAST_COMMAND_FRAGMENT + command]]  # type: ignore[list-item]
        self.dul.send_pdu(pdata)
