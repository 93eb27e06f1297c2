"""+v: the association negotiation dumped line for line as DCMTK's dcmrecv dumps it.

The unit tests pin the layout; the interop test runs DCMTK's dcmrecv and ours with `-v +v`
on the same profile and the same proposals and compares the dumps (all but the two lines
that name the receiver's own implementation).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, build_role
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

from dcmrecvd.dumps import ContextDump, Negotiation, Pdu, dump
from dcmrecvd.negotiation import Result
from tests.support.net import LOCALHOST, free_port
from tests.support.peers import wait_listening

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

NEGOTIATION = Negotiation(
    our_class_uid="2.25.1",
    our_version="OURS_1",
    their_class_uid="1.2.3",
    their_version="THEIRS",
    application_context="1.2.840.10008.3.1.1.1",
    calling="ME",
    called="YOU",
    our_max_pdu=16384,
    their_max_pdu=16382,
    contexts=(
        ContextDump(1, CT, "SCP/SCU", (IMPLICIT, EXPLICIT), Result.ACCEPTANCE, "SCP/SCU", EXPLICIT),
        ContextDump(3, "1.2.3.4.5", "Default", (IMPLICIT,), Result.ABSTRACT_SYNTAX_NOT_SUPPORTED),
    ),
    requested_extended=((MR, b"\x01\x0a"),),
    accepted_extended=((CT, b"\xff"),),
)


def test_request_dump() -> None:
    assert dump(NEGOTIATION, Pdu.RQ).splitlines() == [
        "====================== BEGIN A-ASSOCIATE-RQ =====================",
        "Our Implementation Class UID:      2.25.1",
        "Our Implementation Version Name:   OURS_1",
        "Their Implementation Class UID:    1.2.3",
        "Their Implementation Version Name: THEIRS",
        "Application Context Name:    1.2.840.10008.3.1.1.1",
        "Calling Application Name:    ME",
        "Called Application Name:     YOU",
        "Responding Application Name: ",
        "Our Max PDU Receive Size:    16384",
        "Their Max PDU Receive Size:  16382",
        "Presentation Contexts:",
        "  Context ID:        1 (Proposed)",
        "    Abstract Syntax: =CTImageStorage",
        "    Proposed SCP/SCU Role: SCP/SCU",
        "    Proposed Transfer Syntax(es):",
        "      =LittleEndianImplicit",
        "      =LittleEndianExplicit",
        "  Context ID:        3 (Proposed)",
        "    Abstract Syntax: 1.2.3.4.5",
        "    Proposed SCP/SCU Role: Default",
        "    Proposed Transfer Syntax(es):",
        "      =LittleEndianImplicit",
        "Requested Extended Negotiation:",
        "  =MRImageStorage (1.2.840.10008.5.1.4.1.1.4)",
        "    [0x01, 0x0a]",
        "Accepted Extended Negotiation:  none",
        "Requested User Identity Negotiation: none",
        "User Identity Negotiation Response:  none",
        "======================= END A-ASSOCIATE-RQ ======================",
    ]


def test_acknowledge_dump() -> None:
    lines = dump(NEGOTIATION, Pdu.AC).splitlines()
    assert lines[0] == "====================== BEGIN A-ASSOCIATE-AC ====================="
    assert lines[8] == "Responding Application Name: YOU"
    assert lines[12:22] == [
        "  Context ID:        1 (Accepted)",
        "    Abstract Syntax: =CTImageStorage",
        "    Proposed SCP/SCU Role: SCP/SCU",
        "    Accepted SCP/SCU Role: SCP/SCU",
        "    Accepted Transfer Syntax: =LittleEndianExplicit",
        "  Context ID:        3 (Abstract Syntax Not Supported)",
        "    Abstract Syntax: 1.2.3.4.5",
        "    Proposed SCP/SCU Role: Default",
        "    Accepted SCP/SCU Role: Default",
        "Requested Extended Negotiation:",
    ]
    assert lines[24:27] == [
        "Accepted Extended Negotiation:",
        "  =CTImageStorage (1.2.840.10008.5.1.4.1.1.2)",
        "    [0xff]",
    ]
    assert lines[-1] == "======================= END A-ASSOCIATE-AC ======================"


def test_reject_dump_has_no_accepted_syntax() -> None:
    lines = dump(NEGOTIATION, Pdu.RJ).splitlines()
    assert lines[0].endswith("BEGIN A-ASSOCIATE-RJ =====================")
    assert "    Accepted Transfer Syntax: =LittleEndianExplicit" in lines  # context 1 accepted
    assert lines[-1].endswith("END A-ASSOCIATE-RJ ======================")


# --- side by side with DCMTK -------------------------------------------------------------

PROFILE_CFG = """\
[[TransferSyntaxes]]
[U]
TransferSyntax1 = LittleEndianExplicit
TransferSyntax2 = LittleEndianImplicit

[[PresentationContexts]]
[P]
PresentationContext1 = VerificationSOPClass\\U
PresentationContext2 = CTImageStorage\\U
PresentationContext3 = MRImageStorage\\U

[[SCPSCURoleSelection]]
[R]
Role1 = CTImageStorage\\BOTH

[[ExtendedNegotiation]]
[E]
ExtendedNegotiation1 = MRImageStorage\\0102

[[Profiles]]
[P]
PresentationContexts = P
SCPSCURoleSelection = R
ExtendedNegotiation = E
"""

OURS = str(Path(sys.executable).with_name("dcmrecv"))


def _extended(uid: str, data: bytes) -> SOPClassExtendedNegotiation:
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = uid
    item.service_class_application_information = data
    return item


def _propose(port: int, scene: str) -> None:
    ae = AE(ae_title="PYSCU")
    items: list[Any]  # pynetdicom's parameter is a list of a union of item types
    if scene == "mixed":
        ae.add_requested_context(CT, [IMPLICIT, EXPLICIT])
        ae.add_requested_context(MR, [JPEG_BASELINE])
        ae.add_requested_context(SC, [IMPLICIT])
        ae.add_requested_context("1.2.3.4.5", [IMPLICIT])
        items = [build_role(CT, scu_role=True, scp_role=True), _extended(MR, b"\x01")]
    elif scene == "extended":
        ae.add_requested_context(CT, [IMPLICIT])
        ae.add_requested_context(MR, [IMPLICIT])
        items = [build_role(CT, scu_role=True), _extended(MR, bytes(range(1, 20)))]
    else:  # nothing acceptable
        ae.add_requested_context(SC)
        items = []
    assoc = ae.associate(LOCALHOST, port, ae_title="ANY-SCP", ext_neg=items or None)
    if assoc.is_established:
        assoc.release()


def _dumps(binary: str, cfg: Path, scene: str) -> list[str]:
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-v", "+v", "-dhl", "-xf", str(cfg), "P", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, proc)
        _propose(port, scene)
    finally:
        proc.terminate()
        _out, raw = proc.communicate(timeout=10)
    err = raw.decode()
    lines = [line for line in err.splitlines() if not line.startswith("I: Our Implementation")]
    # The last request: DCMTK also dumps wait_listening's empty probe connection.
    start = len(lines) - 1 - lines[::-1].index("I: Incoming Association Request:")
    return [line for line in lines[start:] if not line.startswith("I: Received Association")]


@pytest.mark.interop
@pytest.mark.slow
@pytest.mark.parametrize("scene", ["mixed", "extended", "refused"])
def test_same_dump_as_dcmrecv(tmp_path: Path, dcmtk_dcmrecv: str, scene: str) -> None:
    cfg = tmp_path / "p.cfg"
    cfg.write_text(PROFILE_CFG)
    theirs = _dumps(dcmtk_dcmrecv, cfg, scene)
    ours = _dumps(OURS, cfg, scene)
    assert len(theirs) > 20  # the dumps are there at all
    assert ours == theirs
