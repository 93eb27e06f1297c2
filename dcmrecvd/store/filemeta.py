"""The Part-10 file preamble and File Meta Information group of a received object.

Encoded by hand (Explicit VR Little Endian, PS3.10 7.1) rather than with pydicom, so
that a hostile UID from the network is written as received instead of failing
pydicom's value validation, and so that no per-object dataset is built.
"""

from __future__ import annotations

import struct

from dcmrecvd import __version__

# A UUID-derived OID (PS3.5 B.2): ours, with no registration needed.
IMPLEMENTATION_CLASS_UID = "2.25.146328007279727971546370156864647650928"
IMPLEMENTATION_VERSION_NAME = "DCMRECVD_" + __version__.replace(".", "")

PREAMBLE = b"\x00" * 128 + b"DICM"


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) > 0xFFFE:
        # A 16-bit length cannot hold it; only a hostile peer sends such a UID.
        raise ValueError(f"value of (0002,{element:04X}) is too long for a File Meta header")
    tag = struct.pack("<HH", 0x0002, element)
    if vr == b"OB":
        return tag + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def _padded(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii", errors="replace")
    return raw + pad if len(raw) % 2 else raw


def encode(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str | None = None,
) -> bytes:
    """Preamble, 'DICM' and the meta group for one object."""
    body = b"".join(
        [
            _element(0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, b"UI", _padded(sop_class_uid, b"\x00")),
            _element(0x0003, b"UI", _padded(sop_instance_uid, b"\x00")),
            _element(0x0010, b"UI", _padded(transfer_syntax_uid, b"\x00")),
            _element(0x0012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\x00")),
            _element(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
        ]
    )
    if source_ae_title is not None:
        body += _element(0x0016, b"AE", _padded(source_ae_title, b" "))
    group_length = _element(0x0000, b"UL", struct.pack("<I", len(body)))
    return PREAMBLE + group_length + body
