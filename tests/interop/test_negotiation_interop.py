"""Side by side with DCMTK's dcmrecv: same profile, same proposals, same answers.

Nothing here is hard-coded from DCMTK: every expectation is what the real dcmrecv,
started in the test, answers.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcmrecvd.config import asconfig
from dcmrecvd.profiles import BUILTIN_VERIFICATION, Profile
from tests.support.net import free_port
from tests.support.peers import Observed, Proposal, ac_dump, dcmtk_receiver, our_receiver, probe

pytestmark = pytest.mark.interop

STORESCP_CFG = "/etc/dcmtk/storescp.cfg"
VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
PET = "1.2.840.10008.5.1.4.1.1.128"
PRIVATE_SOP = "1.2.3.4.999.1"
PRIVATE_TS = "1.2.3.4.999.2"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
BIG = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
J2K = "1.2.840.10008.1.2.4.91"
RLE = "1.2.840.10008.1.2.5"

CUSTOM_CFG = """\
# A profile exercising everything the asconfig grammar can ask of negotiation.
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = OppositeEndianExplicit
TransferSyntax3 = LittleEndianImplicit
[JpegFirst]
TransferSyntax1 = JPEGBaseline
TransferSyntax2 = LittleEndianExplicit
TransferSyntax3 = LittleEndianImplicit
[Private]
TransferSyntax1 = 1.2.3.4.999.2
TransferSyntax2 = LittleEndianImplicit

[[PresentationContexts]]
[Everything]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = CTImageStorage\\JpegFirst
PresentationContext3 = MRImageStorage\\Uncompressed
PresentationContext4 = SecondaryCaptureImageStorage\\Uncompressed
PresentationContext5 = 1.2.3.4.999.1\\Private
PresentationContext6 = PositronEmissionTomographyImageStorage\\Private
[CTOnly]
PresentationContext1 = CTImageStorage\\Uncompressed

[[SCPSCURoleSelection]]
[Roles]
Role1 = CTImageStorage\\SCU
Role2 = MRImageStorage\\SCP
Role3 = SecondaryCaptureImageStorage\\BOTH

[[ExtendedNegotiation]]
[Ext]
ExtendedNegotiation1 = CTImageStorage\\0100
ExtendedNegotiation2 = PositronEmissionTomographyImageStorage\\01
ExtendedNegotiation3 = SecondaryCaptureImageStorage\\ABCD

[[Profiles]]
[Plain]
PresentationContexts = Everything
[WithRolesAndExt]
PresentationContexts = Everything
SCPSCURoleSelection = Roles
ExtendedNegotiation = Ext
[CTOnly]
PresentationContexts = CTOnly
"""

UNCOMPRESSED = (IMPLICIT, EXPLICIT, BIG)

# Proposals that every profile is asked, from the plain to the odd.
PROPOSALS = [
    Proposal(((VERIFICATION, (IMPLICIT,)),)),
    Proposal(((VERIFICATION, (BIG, IMPLICIT)),)),
    Proposal(((VERIFICATION, (EXPLICIT,)), (CT, UNCOMPRESSED))),
    Proposal(((CT, (IMPLICIT, EXPLICIT, JPEG_BASELINE, BIG)),)),
    Proposal(((CT, (IMPLICIT, BIG)),)),
    Proposal(((CT, (J2K, RLE, IMPLICIT)), (CT, (EXPLICIT,)), (CT, (RLE,)))),
    Proposal(((MR, (DEFLATED, IMPLICIT)), (PET, UNCOMPRESSED), (SC, (EXPLICIT, BIG)))),
    Proposal(((PRIVATE_SOP, (EXPLICIT, PRIVATE_TS)), (VERIFICATION, (IMPLICIT,)))),
    Proposal(((PET, UNCOMPRESSED),)),
    Proposal(((CT, (RLE,)),)),
    Proposal(((CT, UNCOMPRESSED),), calling="ANY", called="WHATEVER"),
    Proposal(
        ((CT, UNCOMPRESSED), (MR, UNCOMPRESSED), (SC, UNCOMPRESSED)),
        roles=((CT, True, False), (MR, False, True), (SC, True, True)),
    ),
    Proposal(
        ((CT, UNCOMPRESSED), (MR, UNCOMPRESSED), (SC, UNCOMPRESSED)),
        roles=((CT, False, True), (MR, True, True), (SC, False, True)),
    ),
    Proposal(
        ((CT, UNCOMPRESSED), (SC, UNCOMPRESSED), (VERIFICATION, (IMPLICIT,))),
        roles=((CT, True, True), (SC, True, False)),
        extended=((CT, b"\x07"),),
    ),
    Proposal(((MR, UNCOMPRESSED), (VERIFICATION, (IMPLICIT,))), roles=((MR, True, False),)),
]

# DCMTK refuses a context with result 2 when the requestor keeps the default role and
# the profile grants only SCP; pynetdicom cannot send 2 (negotiation.representable).
ROLE_ONLY_SCP_UNPROPOSED = Proposal(((MR, UNCOMPRESSED), (VERIFICATION, (IMPLICIT,))))


@pytest.fixture(scope="module")
def custom_cfg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "custom.cfg"
    path.write_text(CUSTOM_CFG)
    return path


def load(path: Path | str, name: str) -> Profile:
    return asconfig.select_profile(asconfig.load(path), name, str(path))


def observe_both(
    dcmrecv: str, args: list[str], profile: Profile, proposals: list[Proposal]
) -> Iterator[tuple[Proposal, Observed, Observed]]:
    theirs_port, ours_port = free_port(), free_port()
    with dcmtk_receiver(dcmrecv, args, theirs_port), our_receiver(profile, ours_port):
        for proposal in proposals:
            yield proposal, probe(theirs_port, proposal), probe(ours_port, proposal)


@pytest.mark.parametrize(
    ("cfg", "name"),
    [
        (STORESCP_CFG, "Default"),
        (STORESCP_CFG, "AllDICOM"),
        ("custom", "Plain"),
        ("custom", "CTOnly"),
    ],
)
def test_same_answers_as_dcmrecv(dcmtk_dcmrecv: str, custom_cfg: Path, cfg: str, name: str) -> None:
    path = str(custom_cfg) if cfg == "custom" else cfg
    results = list(observe_both(dcmtk_dcmrecv, ["-xf", path, name], load(path, name), PROPOSALS))
    assert len(results) == len(PROPOSALS)
    for proposal, theirs, ours in results:
        assert ours == theirs, proposal


def test_same_answers_without_a_profile(dcmtk_dcmrecv: str) -> None:
    results = list(observe_both(dcmtk_dcmrecv, [], BUILTIN_VERIFICATION, PROPOSALS))
    assert any(theirs.rejection for _, theirs, _ in results)
    assert any(not theirs.rejection for _, theirs, _ in results)
    for proposal, theirs, ours in results:
        assert ours == theirs, proposal


def pynetdicom_form(theirs: Observed) -> Observed:
    """DCMTK's answer with the two documented changes of negotiation.representable.

    A context refused with result 2, or accepted with a role reply that grants neither
    role, is refused with result 3, without its role and extended items.
    """
    refused = {c[1] for c in theirs.contexts if c[2] == 2}
    refused |= {uid for uid, scu, scp in theirs.roles if not (scu or scp)}
    return Observed(
        theirs.rejection,
        tuple((c[0], c[1], 3, None) if c[1] in refused else c for c in theirs.contexts),
        tuple(r for r in theirs.roles if r[0] not in refused),
        tuple(e for e in theirs.extended if e[0] not in refused),
    )


def test_roles_and_extended_negotiation_as_dcmrecv(dcmtk_dcmrecv: str, custom_cfg: Path) -> None:
    profile = load(custom_cfg, "WithRolesAndExt")
    args = ["-xf", str(custom_cfg), "WithRolesAndExt"]
    proposals = [*PROPOSALS, ROLE_ONLY_SCP_UNPROPOSED]
    results = list(observe_both(dcmtk_dcmrecv, args, profile, proposals))
    assert any(theirs.roles for _, theirs, _ in results)
    assert any(theirs.extended for _, theirs, _ in results)
    # Both documented differences occur in this run: a refusal 2 and a neither-role reply.
    assert any(c[2] == 2 for _, theirs, _ in results for c in theirs.contexts)
    assert any(not (scu or scp) for _, theirs, _ in results for _, scu, scp in theirs.roles)
    for proposal, theirs, ours in results:
        assert ours == pynetdicom_form(theirs), proposal


@pytest.mark.parametrize(
    ("cfg_args", "echo_args"),
    [
        ([], ["-pts", "1"]),
        ([], ["-pts", "3", "-ppc", "2"]),
        ([], ["-pts", "2"]),
        (["-xf", STORESCP_CFG, "Default"], ["-pts", "4", "-ppc", "3"]),
        (["-xf", STORESCP_CFG, "Default"], ["-pts", "1"]),
    ],
)
def test_echoscu_sees_the_same_association(
    dcmtk_dcmrecv: str, cfg_args: list[str], echo_args: list[str]
) -> None:
    profile = load(cfg_args[1], cfg_args[2]) if cfg_args else BUILTIN_VERIFICATION
    outputs = []
    theirs_port, ours_port = free_port(), free_port()
    with dcmtk_receiver(dcmtk_dcmrecv, cfg_args, theirs_port), our_receiver(profile, ours_port):
        for port in (theirs_port, ours_port):
            run = subprocess.run(
                ["echoscu", "-d", *echo_args, "127.0.0.1", str(port)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            outputs.append((run.returncode, ac_dump(run.stdout + run.stderr)))
    assert outputs[0][1], "echoscu printed no A-ASSOCIATE-AC for DCMTK's dcmrecv"
    assert outputs[1] == outputs[0]
