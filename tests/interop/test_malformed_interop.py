"""Malformed datasets, sent raw, side by side with DCMTK's dcmrecv (normal and +B).

No sender would send these (every toolkit repairs or refuses them), so the tests send
the bytes themselves: a C-STORE of a malformed dataset, then one of a good dataset on
the same association. DCMTK's dcmrecv 3.6.7 aborts the association on most of them in
normal mode, but answers Success where its parser stops early or reads past the damage,
and stores anything in +B mode (each case says which; the tests check it, so a DCMTK
that changes shows up). Ours answers 0xC000 in both modes with an Error Comment naming
the offset and tag, stores nothing under a final name, and serves the good one that
follows: a difference on purpose (README, "Differences from DCMTK's dcmrecv").
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support import rawpdu
from tests.support.peers import receiver
from tests.support.streaming_peer import temp_files

pytestmark = [pytest.mark.interop, pytest.mark.slow]

DCMTK = "/usr/bin/dcmrecv"
OURS = str(Path(sys.executable).with_name("dcmrecv"))
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
SUCCESS = 0x0000
EXPLICIT_CONTEXT, DEFLATED_CONTEXT, JPEG_CONTEXT = 1, 3, 5
CFG = """\
[[TransferSyntaxes]]
[Both]
TransferSyntax1 = LittleEndianExplicit
TransferSyntax2 = DeflatedLittleEndianExplicit
TransferSyntax3 = JPEGBaseline

[[PresentationContexts]]
[Store]
PresentationContext1 = CTImageStorage\\Both

[[Profiles]]
[Store]
PresentationContexts = Store
"""
PROPOSAL = (
    (EXPLICIT_CONTEXT, rawpdu.CT, (rawpdu.EXPLICIT,)),
    (DEFLATED_CONTEXT, rawpdu.CT, (DEFLATED,)),
    (JPEG_CONTEXT, rawpdu.CT, (JPEG_BASELINE,)),
)


def element(tag: int, vr: bytes, value: bytes, *, length: int | None = None) -> bytes:
    """One Explicit VR Little Endian element; `length` overrides the encoded length."""
    size = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return head + struct.pack("<HL", 0, size) + value
    return head + struct.pack("<H", size) + value


def item(value: bytes, *, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HHL", 0xFFFE, 0xE000, size) + value


SEQUENCE_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
UNDEFINED = 0xFFFFFFFF


def head(instance: str) -> bytes:
    """The dataset's start: SOP Class/Instance UID, Modality."""
    return (
        element(0x00080016, b"UI", rawpdu._ui(rawpdu.CT))
        + element(0x00080018, b"UI", rawpdu._ui(instance))
        + element(0x00080060, b"CS", b"CT")
    )


def sequence(items: bytes) -> bytes:
    """(0008,1115) Referenced Series Sequence, undefined length, with `items` (and no
    delimiter: the caller adds it or, to break the dataset, does not)."""
    return element(0x00081115, b"SQ", items, length=UNDEFINED)


def pixels(value: bytes = b"\x01\x02\x03\x04") -> bytes:
    return element(0x7FE00010, b"OB", value)


def encapsulated(*fragments: bytes, delimited: bool = True) -> bytes:
    body = item(b"") + b"".join(item(f) for f in fragments)
    return element(
        0x7FE00010, b"OB", body + (SEQUENCE_DELIMITER if delimited else b""), length=UNDEFINED
    )


def deflate(data: bytes) -> bytes:
    """Raw deflate, padded to an even length as PS3.5 A.5 asks."""
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = deflater.compress(data) + deflater.flush()
    return stream + b"\0" * (len(stream) % 2)


def corrupt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 8]) + data[middle + 8 :]


@dataclass(frozen=True)
class Case:
    name: str
    context: int
    # The dataset for an instance UID.
    build: Callable[[str], bytes]
    # What DCMTK's dcmrecv 3.6.7 does in normal mode: Success where its parser stops
    # early or reads past the damage (True), else it aborts the association. In +B it
    # stores whatever arrives.
    dcmtk_stores: bool = False

    def dataset(self, instance: str) -> bytes:
        return self.build(instance)


def _whole(instance: str) -> bytes:
    return head(instance) + sequence(item(REFERENCE) + SEQUENCE_DELIMITER) + pixels()


REFERENCE = element(0x00081150, b"UI", b"1.2\0")

MALFORMED = [
    Case("cut in a value", EXPLICIT_CONTEXT, lambda i: head(i) + pixels(b"\x01" * 64)[:-2]),
    Case("cut in a tag", EXPLICIT_CONTEXT, lambda i: head(i) + pixels()[:4], dcmtk_stores=True),
    Case(
        "cut after a VR and length",
        EXPLICIT_CONTEXT,
        lambda i: head(i) + pixels()[:12],
        dcmtk_stores=True,
    ),
    Case(
        "length past the end",
        EXPLICIT_CONTEXT,
        lambda i: head(i) + element(0x7FE00010, b"OB", b"\x01\x02", length=4096),
    ),
    Case("sequence never closed", EXPLICIT_CONTEXT, lambda i: head(i) + sequence(item(REFERENCE))),
    Case(
        "item never closed",
        EXPLICIT_CONTEXT,
        lambda i: head(i) + sequence(item(REFERENCE, length=UNDEFINED)),
    ),
    Case(
        "item overruns its sequence",
        EXPLICIT_CONTEXT,
        lambda i: head(i) + element(0x00081115, b"SQ", item(REFERENCE), length=8) + pixels(),
        dcmtk_stores=True,
    ),
    Case(
        "encapsulated pixel data without its delimiter",
        JPEG_CONTEXT,
        lambda i: head(i) + encapsulated(b"\xff\xd8\xff\xd9", delimited=False),
    ),
    Case(
        "encapsulated pixel data cut in a fragment",
        JPEG_CONTEXT,
        lambda i: head(i) + encapsulated(b"\xff\xd8" * 32)[: -(8 + 32)],
    ),
    Case("corrupt deflate stream", DEFLATED_CONTEXT, lambda i: corrupt(deflate(_whole(i)))),
    Case(
        "deflate stream cut short",
        DEFLATED_CONTEXT,
        lambda i: deflate(_whole(i))[:-6],
        dcmtk_stores=True,
    ),
]
WELL_FORMED = [
    Case("explicit with sequences", EXPLICIT_CONTEXT, _whole),
    Case("encapsulated", JPEG_CONTEXT, lambda i: head(i) + encapsulated(b"\xff\xd8\xff\xd9")),
    Case("deflated", DEFLATED_CONTEXT, lambda i: deflate(_whole(i))),
]


def store(
    peer: rawpdu.Peer, context: int, instance: str, dataset: bytes
) -> tuple[int | None, bytes]:
    """C-STORE `dataset`: (status or None, the response PDU body)."""
    command = rawpdu.command_set(rawpdu.C_STORE_RQ, sop_instance=instance)
    pdus = [rawpdu.p_data(rawpdu.pdv(context, rawpdu.COMMAND | rawpdu.LAST, command))]
    pdus += rawpdu.dataset_pdus(context, dataset)
    if not peer.send(b"".join(pdus)):
        return None, b""
    answer = peer.read_pdu(timeout=10.0)
    return rawpdu.response_status(answer), answer[1] if answer else b""


@dataclass
class Outcome:
    malformed_status: int | None
    comment: str
    next_status: int | None
    files: list[str]


def send_pair(binary: str, args: list[str], out: Path, case: Case, log: list[str]) -> Outcome:
    """The malformed object, then a good one on the same association (if still open)."""
    out.mkdir()
    with receiver(
        binary, ["-xf", str(out.parent / "store.cfg"), "Store", "-od", str(out), *args], log
    ) as port:
        peer = rawpdu.Peer(port, timeout=10)
        try:
            assert peer.associate(rawpdu.associate_rq(PROPOSAL))
            status, answer = store(peer, case.context, "1.2.3.666.1", case.dataset("1.2.3.666.1"))
            following, _ = (
                store(peer, EXPLICIT_CONTEXT, "1.2.3.777.1", _whole("1.2.3.777.1"))
                if status is not None
                else (None, b"")
            )
            if following is not None:
                peer.send(rawpdu.release_rq())
                peer.read_pdu()
        finally:
            peer.close()
    comment = ""
    marker = struct.pack("<HH", 0x0000, 0x0902)
    if marker in answer:
        at = answer.index(marker)
        (size,) = struct.unpack_from("<L", answer, at + 4)
        comment = answer[at + 8 : at + 8 + size].decode("ascii", "replace").rstrip("\0 ")
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    return Outcome(status, comment, following, files)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """This test's folder, with the asconfig file both receivers read."""
    (tmp_path / "store.cfg").write_text(CFG)
    return tmp_path


@pytest.mark.parametrize("args", [[], ["+B"]], ids=["normal", "bit-preserving"])
@pytest.mark.parametrize("case", MALFORMED, ids=lambda c: c.name)
def test_a_malformed_dataset_is_refused_and_the_association_goes_on(
    dcmtk_dcmrecv: str, work: Path, case: Case, args: list[str]
) -> None:
    theirs = send_pair(DCMTK, args, work / "dcmtk", case, [])
    dcmtk_stores = bool(args) or case.dcmtk_stores
    assert theirs.malformed_status == (SUCCESS if dcmtk_stores else None)
    assert ("CT.1.2.3.666.1" in theirs.files) is dcmtk_stores
    log: list[str] = []
    ours = send_pair(OURS, args, work / "ours", case, log)
    assert ours.malformed_status == 0xC000
    assert ours.comment.startswith("malformed at ") and len(ours.comment) <= 64
    assert ours.next_status == 0x0000
    assert ours.files == ["CT.1.2.3.777.1"]
    assert temp_files(work / "ours") == []
    refusals = [line for line in log if "malformed dataset" in line]
    assert len(refusals) == 1, log
    assert refusals[0].startswith("E: cannot store received object: malformed dataset at ")


@pytest.mark.parametrize("args", [[], ["+B"]], ids=["normal", "bit-preserving"])
@pytest.mark.parametrize("case", WELL_FORMED, ids=lambda c: c.name)
def test_a_well_formed_dataset_is_stored_like_dcmrecv(
    dcmtk_dcmrecv: str, work: Path, case: Case, args: list[str]
) -> None:
    theirs = send_pair(DCMTK, args, work / "dcmtk", case, [])
    ours = send_pair(OURS, args, work / "ours", case, [])
    assert theirs.malformed_status == ours.malformed_status == 0x0000
    assert ours.files == theirs.files == ["CT.1.2.3.666.1", "CT.1.2.3.777.1"]
    stored = dcmread(work / "ours" / "CT.1.2.3.666.1")
    assert stored.SOPInstanceUID == "1.2.3.666.1"
