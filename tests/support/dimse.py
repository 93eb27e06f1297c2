"""Raw DIMSE requests for the tests that send them by hand, and reading the answers.

Command sets are Implicit VR Little Endian (0000,eeee) elements with their group length;
the contexts are those a raw peer proposes to a receiver serving VERIFY_CT_CFG.
"""

from __future__ import annotations

import struct

from tests.support import rawpdu

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
VERIFICATION_CX = 1
CT_CX = 3
MR_CX = 5  # proposed, not accepted: the profile has no MR
CONTEXTS = [
    (VERIFICATION_CX, rawpdu.VERIFICATION, (rawpdu.IMPLICIT,)),
    (CT_CX, rawpdu.CT, (rawpdu.EXPLICIT,)),
    (MR_CX, MR, (rawpdu.EXPLICIT,)),
]
COMMAND_LAST = rawpdu.COMMAND | rawpdu.LAST
# A C-FIND identifier, Explicit VR Little Endian: Query/Retrieve Level STUDY.
IDENTIFIER = struct.pack("<HH", 0x0008, 0x0052) + b"CS" + struct.pack("<H", 6) + b"STUDY "


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def ui(uid: str) -> bytes:
    raw = uid.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def command(elements: dict[int, bytes]) -> bytes:
    """A command set of (0000,eeee) elements, in order, with its group length."""
    encoded = b"".join(
        struct.pack("<HHL", 0, element, len(value)) + value
        for element, value in sorted(elements.items())
    )
    return struct.pack("<HHLL", 0, 0, 4, len(encoded)) + encoded


def store_command(uid: str, **changes: bytes | None) -> bytes:
    """A C-STORE-RQ of a CT instance, with elements changed (e0700=...) or left out (None)."""
    elements = {
        0x0002: ui(rawpdu.CT),
        0x0100: us(rawpdu.C_STORE_RQ),
        0x0110: us(7),
        0x0700: us(0),
        0x0800: us(rawpdu.DATASET_PRESENT),
        0x1000: ui(uid),
    }
    for name, value in changes.items():
        element = int(name.removeprefix("e"), 16)
        if value is None:
            elements.pop(element, None)
        else:
            elements[element] = value
    return command(elements)


def request(field: int, *, requested: bool = False, dataset: bool = False) -> bytes:
    """A request that a storage SCP does not serve, naming CT and instance 1.2.3.9 as its
    affected (or requested) SOP class and instance."""
    class_element, instance_element = (0x0003, 0x1001) if requested else (0x0002, 0x1000)
    elements = {
        class_element: ui(rawpdu.CT),
        instance_element: ui("1.2.3.9"),
        0x0100: us(field),
        0x0110: us(7),
        0x0800: us(rawpdu.DATASET_PRESENT if dataset else rawpdu.NO_DATASET),
    }
    if field in (0x0010, 0x0020, 0x0021):
        elements[0x0700] = us(0)
    if field == 0x0021:
        elements[0x0600] = b"DEST  "
    if field == 0x0100:
        elements[0x1002] = us(1)
    if field == 0x0130:
        elements[0x1008] = us(1)
    pdus = rawpdu.p_data(rawpdu.pdv(CT_CX, COMMAND_LAST, command(elements)))
    if dataset:
        pdus += rawpdu.p_data(rawpdu.pdv(CT_CX, rawpdu.LAST, IDENTIFIER))
    return pdus


def elements_of(answer: tuple[int, bytes] | None) -> dict[int, bytes]:
    """The command elements of a DIMSE message in one P-DATA-TF PDU (empty if none)."""
    if answer is None or answer[0] != rawpdu.P_DATA_TF:
        return {}
    data = answer[1][6:]
    found = {}
    at = 0
    while at + 8 <= len(data):
        _, element, length = struct.unpack_from("<HHL", data, at)
        found[element] = data[at + 8 : at + 8 + length]
        at += 8 + length
    return found


def number(value: bytes) -> int:
    return int.from_bytes(value, "little")
