"""DCMTK association configuration files: lexical rules, errors, profiles, rendering.

The interop tests hand the same files to DCMTK's own dcmrecv: it checks -xf before the
output directory, so exit 45 ("no such directory") means it accepted the configuration,
and exit 66 means it refused it with the E:/F: lines we must reproduce.
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from dcmrecvd.config import asconfig
from dcmrecvd.config.asconfig import AsConfig, AsConfigError, ContextEntry, ProfileRefs
from dcmrecvd.config.uidnames import dcmtk_names
from dcmrecvd.profiles import AcceptedContext, Profile, Role
from tests.support.paths import DATA as TEST_DATA

DATA = TEST_DATA / "asconfig"
STORESCP_CFG = Path("/etc/dcmtk/storescp.cfg")

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
PRIVATE = "1.2.826.0.1.3680043.9.9999.1"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
BIG = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG2000 = "1.2.840.10008.1.2.4.91"

TS = "[[TransferSyntaxes]]\n[TS]\nTransferSyntax1 = LittleEndianImplicit\n"
PC = (
    "[[PresentationContexts]]\n[PC]\n"
    "PresentationContext1 = VerificationSOPClass\\TS\n"
    "PresentationContext2 = CTImageStorage\\TS\n"
)
PROFILE = "[[Profiles]]\n[P]\nPresentationContexts = PC\n"
GOOD = TS + PC + PROFILE
ROLES = "[[SCPSCURoleSelection]]\n[R]\n"
EXT = "[[ExtendedNegotiation]]\n[E]\n"
WITH_LISTS = PROFILE + "SCPSCURoleSelection = R\nExtendedNegotiation = E\n"
ROLE_OK = "Role1 = CTImageStorage\\SCP\n"
EXT_OK = "ExtendedNegotiation1 = CTImageStorage\\01\n"


def with_pc(*entries: str) -> str:
    numbered = "".join(f"PresentationContext{n} = {e}\n" for n, e in enumerate(entries, 1))
    return TS + "[[PresentationContexts]]\n[PC]\n" + numbered + PROFILE


def with_roles(*entries: str) -> str:
    numbered = "".join(f"Role{n} = {e}\n" for n, e in enumerate(entries, 1))
    return TS + PC + ROLES + numbered + EXT + EXT_OK + WITH_LISTS


def with_ext(*entries: str) -> str:
    numbered = "".join(f"ExtendedNegotiation{n} = {e}\n" for n, e in enumerate(entries, 1))
    return TS + PC + ROLES + ROLE_OK + EXT + numbered + WITH_LISTS


def many_contexts(count: int) -> str:
    """A list A of `count` distinct private SOP classes."""
    entries = "".join(f"PresentationContext{n} = 1.2.3.{n}\\TS\n" for n in range(1, count + 1))
    return (
        TS
        + "[[PresentationContexts]]\n[A]\n"
        + entries
        + "[[Profiles]]\n[P]\nPresentationContexts = A\n"
    )


def line_of(text: str, marker: str) -> int:
    return text[: text.index(marker)].count("\n") + 1


def select(text: str, profile: str = "P", path: str = "test.cfg") -> Profile:
    return asconfig.select_profile(asconfig.parse(text, path), profile, path)


@dataclass(frozen=True)
class Case:
    """A configuration, the profile asked for, and DCMTK's verdict on it."""

    id: str
    text: str
    reason: str | None  # None: accepted
    at: str | None = None  # a marker on the offending line
    profile: str = "P"


MISSING_SECTION = "cannot find section [[{}]] in config file"
SCP_PROFILE = 'The association profile named "{}" is not a valid SCP association profile'
NO_PROFILE = (
    'No association profile named "{}" in association configuration,'
    " did you forget to add presentation contexts?"
)
ILLEGAL_CALL = "Illegal call, perhaps wrong parameters"
NOT_IN_CONTEXTS = (
    "abstract syntax defined in role selection list '{}' but not in presentation context list"
    " 'PC': {}"
)
TOO_LONG = (
    "extended negotiation data too long, cannot handle > 1024 bytes"
    " in entry EXTENDEDNEGOTIATION1 in config file"
)

CASES = [
    # Lexical rules (OFConfigFile).
    Case("minimal", GOOD, None),
    Case("crlf", GOOD.replace("\n", "\r\n"), None),
    Case("cr", GOOD.replace("\n", "\r"), None),
    Case(
        "names-normalised",
        "[[transfer syntaxes]]\n[my ts.list]\ntransfer syntax1 = LittleEndianImplicit\n"
        "[[Presentation.Contexts]]\n[pc]\nPresentationContext1 = CTImageStorage\\ my ts list\n"
        "[[ PROFILES ]]\n[ P ]\nPresentationContexts = p c\n",
        None,
        profile=" p ",
    ),
    Case(
        "dash-kept-in-names",
        TS + PC.replace("[[PresentationContexts]]", "[[Presentation-Contexts]]") + PROFILE,
        MISSING_SECTION.format("PRESENTATIONCONTEXTS"),
    ),
    Case(
        "trailing-blanks-kept",
        TS.replace("Implicit\n", "Implicit   \n") + PC + PROFILE,
        "not a valid transfer syntax UID: LittleEndianImplicit   ",
        "TransferSyntax1",
    ),
    Case(
        "continuation-joined",
        TS + " JPEGBaseline  \n\n\tx\n" + PC + PROFILE,
        "not a valid transfer syntax UID: LittleEndianImplicit\nJPEGBaseline  \nx",
        "TransferSyntax1",
    ),
    Case(
        "continuation-across-comment",
        TS + "# a comment\n  JPEGBaseline\n" + PC + PROFILE,
        "not a valid transfer syntax UID: LittleEndianImplicit\nJPEGBaseline",
        "TransferSyntax1",
    ),
    Case(
        "nul-is-a-blank",
        TS + "\0JPEGBaseline\n" + PC + PROFILE,
        "not a valid transfer syntax UID: LittleEndianImplicit\nJPEGBaseline",
        "TransferSyntax1",
    ),
    Case(
        "value-on-next-line", TS + PC + "[[Profiles]]\n[P]\nPresentationContexts =\n    PC\n", None
    ),
    Case(
        "key-split-over-lines", TS + PC + "[[Profiles]]\n[P]\nPresentation\nContexts\n= PC\n", None
    ),
    Case(
        "hash-only-in-column-1",
        GOOD + "  # not a comment\n",
        "presentation context key undefined: PC#NOTACOMMENT",
        "PresentationContexts = PC",
    ),
    Case(
        "indented-header-continues-value",
        GOOD + "  [Q]\n",
        "presentation context key undefined: PC[Q]",
        "PresentationContexts = PC",
    ),
    Case(
        "line-without-equals-swallows-next-key",
        TS + PC + "[[Profiles]]\n[P]\njust a note\nPresentationContexts = PC\n",
        "no PRESENTATIONCONTEXTS  entry in section P in config file",
        "[P]",
    ),
    Case(
        "junk-in-header-skipped",
        TS.replace("[[TransferSyntaxes]]", "[[TransferSyntaxes] junk ]") + PC + PROFILE,
        None,
    ),
    Case("numbered-keys-stop-at-gap", TS + "TransferSyntax3 = NoSuchSyntax\n" + PC + PROFILE, None),
    Case("first-duplicate-key-wins", TS + "TransferSyntax1 = NoSuchSyntax\n" + PC + PROFILE, None),
    Case(
        "second-supersection-ignored",
        GOOD + "[[TransferSyntaxes]]\n[X]\nTransferSyntax1 = Bad\n",
        None,
    ),
    Case(
        "entries-outside-sections-dropped",
        "TransferSyntax1 = Bad\n[Nowhere]\n[[TransferSyntaxes]]\nTransferSyntax1 = Bad\n"
        + TS.removeprefix("[[TransferSyntaxes]]\n")
        + PC
        + PROFILE,
        None,
    ),
    Case("numeric-and-prefixed-uids", with_pc("=CTImageStorage\\TS", "1.2.3.\\TS"), None),
    # Structure.
    Case("no-transfer-syntaxes", PC + PROFILE, MISSING_SECTION.format("TRANSFERSYNTAXES")),
    Case("no-presentation-contexts", TS + PROFILE, MISSING_SECTION.format("PRESENTATIONCONTEXTS")),
    Case("no-profiles", TS + PC, MISSING_SECTION.format("PROFILES")),
    Case(
        "ts-list-without-entries",
        "[[TransferSyntaxes]]\n[TS]\nTransferSyntax2 = LittleEndianImplicit\n" + PC + PROFILE,
        "transfer syntax key undefined: TS",
        "PresentationContext1",
    ),
    # Transfer syntaxes.
    Case(
        "bad-transfer-syntax",
        TS + "TransferSyntax2 = ImplicitVRLittleEndian\n" + PC + PROFILE,
        "not a valid transfer syntax UID: ImplicitVRLittleEndian",
        "TransferSyntax2",
    ),
    Case(
        "empty-transfer-syntax",
        TS + "TransferSyntax2 =\n" + PC + PROFILE,
        "not a valid transfer syntax UID: ",
        "TransferSyntax2",
    ),
    # Presentation contexts.
    Case(
        "bad-abstract-syntax",
        with_pc("VerificationSOPClass\\TS", "NoSuchSOPClass\\TS"),
        "not a valid abstract syntax UID: NoSuchSOPClass",
        "PresentationContext2",
    ),
    Case(
        "abstract-syntax-trailing-blank",
        with_pc("CTImageStorage \\TS"),
        "not a valid abstract syntax UID: CTImageStorage ",
        "PresentationContext1",
    ),
    Case(
        "ts-key-undefined",
        with_pc("CTImageStorage\\y"),
        "transfer syntax key undefined: Y",
        "PresentationContext1",
    ),
    Case(
        "ts-key-keeps-punctuation",
        with_pc("CTImageStorage\\T.S"),
        "transfer syntax key undefined: T.S",
        "PresentationContext1",
    ),
    Case(
        "ts-key-empty",
        with_pc("CTImageStorage\\"),
        "transfer syntax key undefined: ",
        "PresentationContext1",
    ),
    Case(
        "pc-missing-backslash",
        with_pc("VerificationSOPClass\\TS", "CTImageStorage"),
        "syntax error: missing '\\' in entry PRESENTATIONCONTEXT2 in config file",
        "PresentationContext2",
    ),
    Case("pc-empty-abstract-syntax", with_pc("\\TS"), ILLEGAL_CALL, "PresentationContext1"),
    Case("pc-list-of-128", many_contexts(128), None),
    Case(
        "pc-list-of-129",
        many_contexts(129),
        "presentation context list too long (> 128 entries): A",
        "PresentationContext129",
    ),
    Case(
        "pc-list-limit-counts-merged-sections",
        many_contexts(100).replace(
            "[[Profiles]]",
            "[a]\n"
            + "".join(f"PresentationContext{n} = 1.2.4.{n}\\TS\n" for n in range(1, 30))
            + "[[Profiles]]",
        ),
        "presentation context list too long (> 128 entries): A",
        "= 1.2.4.29\\",
    ),
    # Role selection.
    Case(
        "roles-and-extended-negotiation",
        with_roles("CTImageStorage\\scp", "VerificationSOPClass\\Both"),
        None,
    ),
    Case(
        "role-missing-backslash",
        with_roles("CTImageStorage"),
        "syntax error: missing '\\' in entry ROLE1 in config file",
        "Role1",
    ),
    Case(
        "role-key-not-trimmed",
        with_roles("CTImageStorage\\ SCP"),
        "syntax error: unknown role key in entry ROLE1 in config file",
        "Role1",
    ),
    Case(
        "role-bad-abstract-syntax",
        with_roles("NoSuchSOPClass\\SCU"),
        "not a valid abstract syntax UID: NoSuchSOPClass",
        "Role1",
    ),
    Case(
        "role-twice",
        with_roles("CTImageStorage\\SCP", f"{CT}\\SCU"),
        f"role selection defined twice for abstract syntax UID: {CT}",
        "Role2",
    ),
    Case(
        "role-not-in-contexts",
        with_roles("CTImageStorage\\SCP", "MRImageStorage\\SCP"),
        NOT_IN_CONTEXTS.format("R", MR),
        "Role2",
    ),
    Case(
        "role-list-undefined",
        TS + PC + "[[Profiles]]\n[P]\nPresentationContexts = PC\nSCPSCURoleSelection = nope\n",
        "role selection key undefined: NOPE",
        "SCPSCURoleSelection",
    ),
    Case(
        "role-list-empty-reference",
        TS + PC + "[[Profiles]]\n[P]\nPresentationContexts = PC\nSCPSCURoleSelection =\n",
        "role selection key undefined: ",
        "SCPSCURoleSelection",
    ),
    # Extended negotiation.
    Case("extneg-1023-bytes", with_ext("CTImageStorage\\" + "ab" * 1023), None),
    Case(
        "extneg-1024-bytes",
        with_ext("CTImageStorage\\" + "ab" * 1024),
        TOO_LONG,
        "ExtendedNegotiation1",
    ),
    Case(
        "extneg-missing-backslash",
        with_ext("CTImageStorage"),
        "syntax error: missing '\\' in entry EXTENDEDNEGOTIATION1 in config file",
        "ExtendedNegotiation1",
    ),
    Case(
        "extneg-odd-digits",
        with_ext("CTImageStorage\\010"),
        "parse error in extended negotiation data in entry EXTENDEDNEGOTIATION1 in config file",
        "ExtendedNegotiation1",
    ),
    Case(
        "extneg-not-hex",
        with_ext("CTImageStorage\\0x"),
        "parse error in extended negotiation data in entry EXTENDEDNEGOTIATION1 in config file",
        "ExtendedNegotiation1",
    ),
    Case("extneg-empty", with_ext("CTImageStorage\\"), ILLEGAL_CALL, "ExtendedNegotiation1"),
    Case(
        "extneg-bad-abstract-syntax",
        with_ext("nope\\01"),
        "not a valid abstract syntax UID: nope",
        "ExtendedNegotiation1",
    ),
    Case(
        "extneg-twice",
        with_ext("CTImageStorage\\01", f"{CT}\\02"),
        f"extended negotiation defined twice for abstract syntax UID: {CT}",
        "ExtendedNegotiation2",
    ),
    Case(
        "extneg-not-in-contexts",
        with_ext("MRImageStorage\\01"),
        NOT_IN_CONTEXTS.format("E", MR),
        "ExtendedNegotiation1",
    ),
    Case(
        "extneg-list-undefined",
        TS + PC + "[[Profiles]]\n[P]\nPresentationContexts = PC\nExtendedNegotiation = nope\n",
        "extended negotiation key undefined: NOPE",
        "ExtendedNegotiation =",
    ),
    # Profiles.
    Case(
        "pc-list-undefined",
        TS + PC + "[[Profiles]]\n[P]\nPresentationContexts = B\n",
        "presentation context key undefined: B",
        "PresentationContexts = B",
    ),
    Case(
        "pc-list-checked-before-roles",
        TS + PC + "[[Profiles]]\n[P]\nSCPSCURoleSelection = x\nPresentationContexts = B\n",
        "presentation context key undefined: B",
        "PresentationContexts = B",
    ),
    Case(
        "no-pc-entry",
        TS + PC + "[[Profiles]]\n[P]\nPresentationContexts = PC\n[Q]\nfoo = bar\n",
        "no PRESENTATIONCONTEXTS  entry in section Q in config file",
        "[Q]",
    ),
    Case(
        "two-profiles",
        GOOD + "[p]\nPresentationContexts = PC\n",
        "two profiles defined for key: PC",
        "[p]",
    ),
    Case("profile-name-normalised", GOOD, None, profile=" p\t"),
    Case("unknown-profile", GOOD, NO_PROFILE.format("nosuch"), profile="nosuch"),
    Case("profile-name-keeps-punctuation", GOOD, NO_PROFILE.format("P."), profile="P."),
    Case("empty-profile-name", GOOD, "Illegal parameter", profile=""),
    Case(
        "repeated-abstract-syntax",
        with_pc("CTImageStorage\\TS", "VerificationSOPClass\\TS", f"{CT}\\TS"),
        SCP_PROFILE.format("P"),
        "PresentationContext3",
    ),
]


def check(case: Case, path: str = "test.cfg") -> AsConfigError | None:
    """Parse and select as dcmrecv does; the error, if any."""
    try:
        select(case.text, case.profile, path)
    except AsConfigError as exc:
        return exc
    return None


def mutate(text: str, rng: random.Random) -> str:
    """A few random insertions and deletions of characters the lexer treats specially."""
    alphabet = [" ", "\t", "\n", "\r", "\r\n", "#", "[", "]", "=", "\\", "a", ".", "\0", "1"]
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(len(text))
        if rng.random() < 0.6:
            text = text[:pos] + rng.choice(alphabet) + text[pos:]
        else:
            text = text[:pos] + text[pos + rng.randint(1, 3) :]
    return text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_dcmtk_verdict(case: Case) -> None:
    error = check(case)
    if case.reason is None:
        assert error is None
        return
    assert error is not None
    assert error.reason == case.reason
    expected_line = line_of(case.text.replace("\r", "\n"), case.at) if case.at else None
    assert error.line == expected_line


def dcmrecv_verdict(
    binary: str, config: Path, profile: str, port: int
) -> tuple[int, str | None, str]:
    """Exit code and the E:/F: texts of DCMTK's dcmrecv for `config`."""
    run = subprocess.run(
        [binary, "-xf", str(config), profile, "-od", str(config.parent / "missing"), str(port)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    lines = run.stderr.decode("latin-1").splitlines()
    # DCMTK's logger repeats the prefix on every line of a multi-line message.
    errors = [line[3:] for line in lines if line.startswith("E: ")]
    fatals = [line[3:] for line in lines if line.startswith("F: ")]
    return run.returncode, "\n".join(errors) or None, "\n".join(fatals)


@pytest.mark.interop
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_same_verdict_as_dcmrecv(case: Case, dcmtk_dcmrecv: str, tmp_path: Path, port: int) -> None:
    config = tmp_path / "as.cfg"
    config.write_bytes(case.text.encode("latin-1"))
    code, error_line, fatal_line = dcmrecv_verdict(dcmtk_dcmrecv, config, case.profile, port)
    ours = check(case, str(config))
    if ours is None:
        assert (code, error_line) == (45, None)
        return
    assert code == 66
    assert (ours.dcmtk_error, ours.dcmtk_fatal) == (error_line, fatal_line)


@pytest.mark.interop
def test_mutated_files_get_the_same_verdict_as_dcmrecv(
    dcmtk_dcmrecv: str, tmp_path: Path, port: int
) -> None:
    rng = random.Random(367)
    base = (DATA / "full.cfg").read_text("latin-1")
    config = tmp_path / "mutated.cfg"
    verdicts = set()
    for _ in range(150):
        case = Case("mutated", mutate(base, rng), None, profile="store")
        config.write_bytes(case.text.encode("latin-1"))
        code, error_line, fatal_line = dcmrecv_verdict(dcmtk_dcmrecv, config, case.profile, port)
        ours = check(case, str(config))
        if ours is None:
            assert code == 45, case.text
        else:
            assert (code, ours.dcmtk_error, ours.dcmtk_fatal) == (66, error_line, fatal_line), (
                case.text
            )
        verdicts.add(fatal_line)
    # The edits reach many different checks, not just one.
    assert len(verdicts) > 8


# --- lexical details the table cannot show -----------------------------------------------


def test_line_breaks_do_not_change_the_document() -> None:
    text = (DATA / "full.cfg").read_text("latin-1")
    expected = asconfig.parse(text, "lf")
    assert asconfig.parse(text.replace("\n", "\r\n"), "crlf") == expected
    assert asconfig.parse(text.replace("\n", "\r"), "cr") == expected


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_numbers_count_every_kind_of_line_break(newline: str) -> None:
    text = "# comment\n\n" + TS + "TransferSyntax2 = nope\n" + PC + PROFILE
    text = text.replace("\n", newline)
    with pytest.raises(AsConfigError) as caught:
        asconfig.parse(text, "x.cfg")
    assert caught.value.line == 6


def test_lf_after_cr_in_mixed_file_is_one_break() -> None:
    text = "[[TransferSyntaxes]]\r\n\n\r[TS]\n\rTransferSyntax1 = nope\r\n"
    with pytest.raises(AsConfigError) as caught:
        asconfig.parse(text, "x.cfg")
    assert caught.value.line == 6


def test_full_example_document() -> None:
    config = asconfig.load(DATA / "full.cfg")
    assert config.transfer_syntax_lists == {
        "UNCOMPRESSED": (EXPLICIT, IMPLICIT),
        "JPEGFIRST": (JPEG_BASELINE, EXPLICIT),
    }
    assert config.presentation_context_lists["STORAGE"] == (
        ContextEntry(VERIFICATION, "UNCOMPRESSED"),
        ContextEntry(CT, "JPEGFIRST"),
        ContextEntry(PRIVATE, "UNCOMPRESSED"),
    )
    assert config.profiles == {
        "STORE": ProfileRefs("STORAGE", "ROLES", "EXT"),
        "PLAINSTORE": ProfileRefs("STORAGE"),
    }
    store = asconfig.select_profile(config, "store", "full.cfg")
    assert store == Profile(
        name="STORE",
        contexts=(
            AcceptedContext(VERIFICATION, (EXPLICIT, IMPLICIT)),
            AcceptedContext(CT, (JPEG_BASELINE, EXPLICIT)),
            AcceptedContext(PRIVATE, (EXPLICIT, IMPLICIT)),
        ),
        roles=((CT, Role.SCP), (PRIVATE, Role.BOTH)),
        extended_negotiation=((CT, b"\x01\x00\xff"),),
    )
    assert asconfig.select_profile(config, "Plain Store", "full.cfg").roles is None


def test_entries_remember_their_lines() -> None:
    config = asconfig.load(DATA / "full.cfg")
    text = (DATA / "full.cfg").read_text()
    lines = [c.line for c in config.presentation_context_lists["STORAGE"]]
    assert lines == [line_of(text, f"PresentationContext{n}") for n in (1, 2, 3)]
    assert config.role_lists["ROLES"][1].line == line_of(text, "Role2")


def test_duplicate_sections_are_merged_in_file_order() -> None:
    text = (
        "[[TransferSyntaxes]]\n[X]\nTransferSyntax1 = LittleEndianImplicit\n"
        "[Y]\nTransferSyntax1 = JPEGBaseline\n"
        "[x]\nTransferSyntax1 = LittleEndianExplicit\nTransferSyntax2 = BigEndianExplicit\n"
        "[[PresentationContexts]]\n[PC]\nPresentationContext1 = CTImageStorage\\X\n"
        "[pc]\nPresentationContext1 = VerificationSOPClass\\Y\n"
        "[[Profiles]]\n[P]\nPresentationContexts = PC\n"
    )
    profile = select(text)
    assert profile.contexts == (
        AcceptedContext(CT, (IMPLICIT, EXPLICIT, BIG)),
        AcceptedContext(VERIFICATION, (JPEG_BASELINE,)),
    )


def test_endian_names_resolve_for_this_host() -> None:
    config = asconfig.parse(
        "[[TransferSyntaxes]]\n[T]\nTransferSyntax1 = LocalEndianExplicit\n"
        "TransferSyntax2 = OppositeEndianExplicit\n"
        "[[PresentationContexts]]\n[[Profiles]]\n",
        "x",
    )
    # The suite runs on little-endian hosts (x86, arm64).
    assert config.transfer_syntax_lists["T"] == (EXPLICIT, BIG)


def test_empty_reference_to_an_existing_unnamed_list_means_no_list() -> None:
    text = TS + PC + ROLES.replace("[R]", "[ ]") + ROLE_OK
    text += "[[Profiles]]\n[P]\nPresentationContexts = PC\nSCPSCURoleSelection =\n"
    assert select(text).roles is None


# --- the limit ----------------------------------------------------------------------------


def test_limit_can_be_lifted() -> None:
    config = asconfig.parse(many_contexts(300), "x", context_list_limit=None)
    assert len(asconfig.select_profile(config, "P", "x").contexts) == 300


def test_limit_is_configurable() -> None:
    with pytest.raises(AsConfigError) as caught:
        asconfig.parse(many_contexts(3), "x", context_list_limit=2)
    assert caught.value.reason == "presentation context list too long (> 2 entries): A"


def test_transfer_syntax_lists_are_not_limited_in_scp_mode() -> None:
    # DCMTK caps transfer-syntax lists only when it proposes (SCU side).
    entries = "".join(f"TransferSyntax{n} = 1.2.3.{n}\n" for n in range(1, 201))
    text = "[[TransferSyntaxes]]\n[TS]\n" + entries + PC + PROFILE
    assert len(select(text).contexts[0].transfer_syntaxes) == 200


# --- errors -------------------------------------------------------------------------------


def test_error_texts_for_a_file_error() -> None:
    with pytest.raises(AsConfigError) as caught:
        asconfig.parse(with_pc("CTImageStorage\\y"), "my.cfg")
    error = caught.value
    assert str(error) == "my.cfg:6: transfer syntax key undefined: Y"
    assert error.path == "my.cfg"
    assert error.dcmtk_error == (
        "Unable to parse association configuration file: my.cfg: transfer syntax key undefined: Y"
    )
    assert (
        error.dcmtk_fatal
        == "cannot load association configuration: transfer syntax key undefined: Y"
    )


def test_error_texts_for_an_unknown_profile() -> None:
    with pytest.raises(AsConfigError) as caught:
        select(GOOD, "nosuchprofile", "my.cfg")
    error = caught.value
    assert str(error) == f"my.cfg: {NO_PROFILE.format('nosuchprofile')}"
    assert error.line is None
    assert error.dcmtk_error == NO_PROFILE.format("nosuchprofile")
    assert error.dcmtk_fatal == (
        "cannot load association configuration: Invalid or non-existing SCP Association Profile"
    )


def test_load_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.cfg")
    with pytest.raises(AsConfigError) as caught:
        asconfig.load(missing)
    assert caught.value.reason == f"unable to open configuration file: {missing}"
    assert caught.value.dcmtk_error == (
        f"Unable to parse association configuration file: {missing}: {caught.value.reason}"
    )


def test_load_directory_reads_as_empty(tmp_path: Path) -> None:
    with pytest.raises(AsConfigError) as caught:
        asconfig.load(tmp_path)
    assert caught.value.reason == MISSING_SECTION.format("TRANSFERSYNTAXES")


def test_load_empty_path() -> None:
    with pytest.raises(AsConfigError) as caught:
        asconfig.load("")
    assert (caught.value.dcmtk_error, caught.value.dcmtk_fatal) == (
        None,
        "cannot load association configuration: Invalid filename",
    )


def test_load_reads_bytes_as_latin1(tmp_path: Path) -> None:
    config = tmp_path / "x.cfg"
    config.write_bytes(with_pc("CT\xe9\\TS").encode("latin-1"))
    with pytest.raises(AsConfigError) as caught:
        asconfig.load(config)
    assert caught.value.reason == "not a valid abstract syntax UID: CT\xe9"


@pytest.mark.interop
@pytest.mark.parametrize("name", ["", "nope.cfg", "."])
def test_file_errors_match_dcmrecv(
    name: str, dcmtk_dcmrecv: str, tmp_path: Path, port: int
) -> None:
    path = str(tmp_path / name) if name else ""
    run = subprocess.run(
        [dcmtk_dcmrecv, "-xf", path, "P", "-od", str(tmp_path / "missing"), str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    with pytest.raises(AsConfigError) as caught:
        asconfig.load(path)
    printed = [caught.value.dcmtk_fatal]
    if caught.value.dcmtk_error is not None:
        printed.insert(0, caught.value.dcmtk_error)
    assert run.returncode == 66
    assert [line[3:] for line in run.stderr.splitlines() if line[:3] in ("E: ", "F: ")] == printed


# --- Debian's storescp.cfg ----------------------------------------------------------------


@pytest.fixture(scope="module")
def storescp() -> AsConfig:
    return asconfig.load(STORESCP_CFG)


@pytest.mark.parametrize("name", ["Default", "AllDICOM"])
def test_storescp_profiles(storescp: AsConfig, name: str) -> None:
    profile = asconfig.select_profile(storescp, name, str(STORESCP_CFG))
    assert profile.name == name.upper()
    assert len(profile.contexts) == 128
    syntaxes = {c.abstract_syntax: c.transfer_syntaxes for c in profile.contexts}
    assert syntaxes[VERIFICATION] == (EXPLICIT, BIG, IMPLICIT)
    assert syntaxes[CT][0] == JPEG2000
    assert len(syntaxes[CT]) == 21
    assert profile.roles is None
    assert profile.extended_negotiation == ()


def test_storescp_has_exactly_two_profiles(storescp: AsConfig) -> None:
    assert list(storescp.profiles) == ["DEFAULT", "ALLDICOM"]


def test_storescp_round_trip(storescp: AsConfig) -> None:
    assert asconfig.parse(asconfig.render(storescp), "rendered") == storescp


# --- rendering and from_profiles ------------------------------------------------------------


def sample_profiles() -> list[Profile]:
    return [
        Profile(
            name="Store",
            contexts=(
                AcceptedContext(VERIFICATION, (EXPLICIT, IMPLICIT)),
                AcceptedContext(CT, (JPEG_BASELINE, EXPLICIT, IMPLICIT)),
                AcceptedContext(PRIVATE, (EXPLICIT, IMPLICIT)),
            ),
            roles=((CT, Role.SCP), (PRIVATE, Role.BOTH)),
            extended_negotiation=((CT, b"\x01\x00"), (PRIVATE, b"\xff" * 1023)),
        ),
        Profile(
            name="ECHO_ONLY",
            contexts=(AcceptedContext(VERIFICATION, (EXPLICIT, IMPLICIT)),),
        ),
    ]


def test_from_profiles_shares_transfer_syntax_lists() -> None:
    config = asconfig.from_profiles(sample_profiles())
    assert config.transfer_syntax_lists == {
        "TS1": (EXPLICIT, IMPLICIT),
        "TS2": (JPEG_BASELINE, EXPLICIT, IMPLICIT),
    }
    assert config.profiles == {
        "STORE": ProfileRefs("STORE", "STORE", "STORE"),
        "ECHO_ONLY": ProfileRefs("ECHO_ONLY"),
    }


def test_from_profiles_round_trip() -> None:
    profiles = sample_profiles()
    config = asconfig.from_profiles(profiles)
    reparsed = asconfig.parse(asconfig.render(config), "rendered")
    assert reparsed == config
    selected = [asconfig.select_profile(reparsed, p.name, "rendered") for p in profiles]
    assert selected == [
        Profile(p.name.upper(), p.contexts, p.roles, p.extended_negotiation) for p in profiles
    ]


def test_render_uses_dcmtk_names_and_numeric_uids() -> None:
    text = asconfig.render(asconfig.from_profiles(sample_profiles()))
    assert text.startswith("#")
    assert "PresentationContext2 = CTImageStorage\\TS2\n" in text
    assert f"PresentationContext3 = {PRIVATE}\\TS1\n" in text
    assert "TransferSyntax1 = JPEGBaseline\n" in text
    assert "Role2 = 1.2.826.0.1.3680043.9.9999.1\\BOTH\n" in text
    assert "ExtendedNegotiation1 = CTImageStorage\\0100\n" in text


def test_empty_roles_mean_no_role_list() -> None:
    profile = Profile("P", (AcceptedContext(CT, (IMPLICIT,)),), roles=())
    config = asconfig.from_profiles([profile])
    assert config.role_lists == {}
    assert "SCPSCURoleSelection" not in asconfig.render(config)


def bad(**changes: object) -> Profile:
    fields: dict[str, object] = {
        "name": "P",
        "contexts": (AcceptedContext(CT, (IMPLICIT,)),),
        "roles": None,
        "extended_negotiation": (),
    }
    fields.update(changes)
    return Profile(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "profiles",
    [
        [bad(name="my.profile")],
        [bad(name="")],
        [bad(name="p"), bad(name="P")],
        [bad(contexts=())],
        [bad(contexts=(AcceptedContext(CT, ()),))],
        [bad(contexts=(AcceptedContext("CTImageStorage", (IMPLICIT,)),))],
        [bad(contexts=(AcceptedContext(CT, ("x",)),))],
        [bad(contexts=(AcceptedContext(CT, (IMPLICIT,)), AcceptedContext(CT, (EXPLICIT,))))],
        [bad(roles=((MR, Role.SCP),))],
        [bad(roles=((CT, Role.SCP), (CT, Role.SCU)))],
        [bad(extended_negotiation=((CT, b""),))],
        [bad(extended_negotiation=((CT, b"x" * 1024),))],
        [bad(extended_negotiation=((MR, b"x"),))],
    ],
    ids=[
        "name-punctuation",
        "name-empty",
        "name-twice",
        "no-contexts",
        "no-transfer-syntax",
        "name-not-uid",
        "bad-transfer-syntax",
        "repeated-abstract-syntax",
        "role-not-a-context",
        "role-twice",
        "extneg-empty",
        "extneg-too-long",
        "extneg-not-a-context",
    ],
)
def test_from_profiles_refuses_what_dcmtk_cannot_load(profiles: list[Profile]) -> None:
    with pytest.raises(ValueError):
        asconfig.from_profiles(profiles)


def assert_dcmrecv_accepts(
    binary: str, text: str, profiles: list[str], directory: Path, port: int
) -> None:
    config = directory / "rendered.cfg"
    config.write_text(text, "latin-1")
    for profile in profiles:
        assert dcmrecv_verdict(binary, config, profile, port) == (
            45,
            None,
            "cannot specify output directory: Directory does not exist",
        )


@pytest.mark.interop
def test_dcmrecv_accepts_rendered_storescp(
    storescp: AsConfig, dcmtk_dcmrecv: str, tmp_path: Path, port: int
) -> None:
    text = asconfig.render(storescp)
    assert_dcmrecv_accepts(dcmtk_dcmrecv, text, ["Default", "AllDICOM"], tmp_path, port)


@pytest.mark.interop
def test_dcmrecv_accepts_rendered_profiles(dcmtk_dcmrecv: str, tmp_path: Path, port: int) -> None:
    text = asconfig.render(asconfig.from_profiles(sample_profiles()))
    assert_dcmrecv_accepts(dcmtk_dcmrecv, text, ["Store", "echo_only"], tmp_path, port)


@pytest.mark.interop
def test_dcmrecv_knows_every_name_we_render(dcmtk_dcmrecv: str, tmp_path: Path, port: int) -> None:
    # DCMTK checks transfer-syntax entries only for UID syntax, so one list can carry
    # every UID of the name table, each rendered by its DCMTK name.
    every_uid = tuple(dict.fromkeys(dcmtk_names().values()))
    profile = Profile("ALL", (AcceptedContext(VERIFICATION, every_uid),))
    text = asconfig.render(asconfig.from_profiles([profile]))
    assert text.count("TransferSyntax") > 400
    assert_dcmrecv_accepts(dcmtk_dcmrecv, text, ["ALL"], tmp_path, port)
