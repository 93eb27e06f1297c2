"""The daemon's INI file: values, profiles, and errors that name file, line and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcmrecvd.config import inifile
from dcmrecvd.profiles import VERIFICATION, Role, all_storage_sop_classes, all_transfer_syntaxes
from dcmrecvd.settings import DuplicatePolicy, NamingScheme, StorageMode, SubdirMode

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
STORESCP_CFG = Path("/etc/dcmtk/storescp.cfg")


def parse(text: str) -> inifile.Config:
    return inifile.parse(text, "test.conf")


def error_of(text: str) -> inifile.ConfigError:
    with pytest.raises(inifile.ConfigError) as info:
        parse(text)
    return info.value


def test_empty_file_is_the_embedded_default() -> None:
    found = parse("")
    assert found.settings == inifile.DAEMON_DEFAULTS
    assert found.settings.port == 11112
    assert found.settings.output_dir == "incoming"
    uids = [c.abstract_syntax for c in found.profile.contexts]
    assert uids[0] == VERIFICATION
    assert uids[1:] == list(all_storage_sop_classes())
    assert len(uids) > 128  # the daemon lifts DCMTK's cap
    assert found.profile.contexts[1].transfer_syntaxes == all_transfer_syntaxes()


def test_three_lines_are_the_common_case() -> None:
    found = parse("[receiver]\nport = 104\noutput-directory = /var/lib/dcmrecvd\n")
    assert (found.settings.port, found.settings.output_dir) == (104, "/var/lib/dcmrecvd")
    assert found.profile.name == inifile.DEFAULT_PROFILE


def test_every_receiver_key() -> None:
    found = parse(
        """
[receiver]
aetitle = GATEWAY
port = 4242
bind-address = 127.0.0.1
output-directory = /srv/in  # a trailing comment
subdirectories = series-date
naming = short-unique
extension = .dcm
storage = ignore
max-pdu = 65536
acse-timeout = 10
dimse-timeout = 20
max-associations = 8
host-lookup = yes
check-called-aetitle = on

[logging]
level = debug
"""
    )
    s = found.settings
    assert (s.aetitle, s.port, s.bind_address, s.output_dir) == (
        "GATEWAY",
        4242,
        "127.0.0.1",
        "/srv/in",
    )
    assert (s.subdir, s.naming, s.extension, s.storage) == (
        SubdirMode.SERIES_DATE,
        NamingScheme.SHORT_UNIQUE,
        ".dcm",
        StorageMode.IGNORE,
    )
    assert (s.max_pdu, s.acse_timeout, s.dimse_timeout, s.max_associations) == (65536, 10, 20, 8)
    assert s.host_lookup and s.check_called_aetitle
    assert s.log_level.value == "debug"


def test_dimse_timeout_can_be_unlimited() -> None:
    assert parse("[receiver]\ndimse-timeout = none\n").settings.dimse_timeout is None


def test_listed_profile_resolves_every_kind_of_name() -> None:
    found = parse(
        """
[receiver]
profile = ct

[profile ct]
# a UID, a DCMTK name and a DICOM keyword, over two lines
sop-classes = 1.2.840.10008.1.1,
    CTImageStorage MRImageStorage
transfer-syntaxes = LittleEndianExplicit ImplicitVRLittleEndian
roles = CTImageStorage:scp
extended-negotiation = MRImageStorage:0102
"""
    )
    profile = found.profile
    assert profile.name == "ct"
    assert [c.abstract_syntax for c in profile.contexts] == [VERIFICATION, CT, MR]
    assert all(c.transfer_syntaxes == (EXPLICIT, IMPLICIT) for c in profile.contexts)
    assert profile.roles == ((CT, Role.SCP),)
    assert profile.extended_negotiation == ((MR, b"\x01\x02"),)
    assert set(found.profiles) == {"ct"}


def test_all_storage_and_all_syntaxes_words() -> None:
    found = parse("[profile p]\nsop-classes = all-storage Verification\n[receiver]\nprofile = p\n")
    uids = [c.abstract_syntax for c in found.profile.contexts]
    assert uids == [*all_storage_sop_classes(), VERIFICATION]
    assert found.profile.contexts[0].transfer_syntaxes == all_transfer_syntaxes()


def test_asconfig_profile_loads_storescp_cfg_without_the_128_cap(tmp_path: Path) -> None:
    found = parse(
        f"[receiver]\nprofile = dcmtk\n[profile dcmtk]\nasconfig = {STORESCP_CFG}\n"
        "asconfig-profile = AllDICOM\n"
    )
    assert found.profile.name == "dcmtk"
    assert len(found.profile.contexts) == 128
    big = tmp_path / "big.cfg"
    lines = [f"PresentationContext{n} = 1.2.3.{n}\\TS" for n in range(1, 201)]
    big.write_text(
        "[[TransferSyntaxes]]\n[TS]\nTransferSyntax1 = LittleEndianImplicit\n"
        "[[PresentationContexts]]\n[PC]\n" + "\n".join(lines) + "\n"
        "[[Profiles]]\n[P]\nPresentationContexts = PC\n"
    )
    conf = tmp_path / "d.conf"
    conf.write_text(
        "[receiver]\nprofile = p\n[profile p]\nasconfig = big.cfg\nasconfig-profile = P\n"
    )
    assert len(inifile.load(conf).profile.contexts) == 200  # relative to the INI file


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("[receiver]\nport = abc\n", 2, "port: not a whole number: 'abc'"),
        (
            "[receiver]\n\nport = 70000\n",
            3,
            "port: 70000 is out of range (must be from 1 to 65535)",
        ),
        ("[receiver]\nmax-pdu = 100\n", 2, "max-pdu: 100 is out of range"),
        ("[receiver]\nprot = 104\n", 2, "unknown key 'prot' in section [receiver]"),
        ("\n[recever]\n", 2, "unknown section [recever]"),
        ("port = 104\n", 1, "a key before the first [section]"),
        ("[receiver]\n[receiver]\n", 2, "section [receiver] appears twice"),
        ("[receiver]\nport = 1\nport = 2\n", 3, "key 'port' appears twice"),
        ("[receiver]\nnaming = random\n", 2, "naming: 'random' is not one of: default"),
        ("[receiver]\nhost-lookup = maybe\n", 2, "host-lookup: not yes or no: 'maybe'"),
        ("[receiver]\naetitle = WAY_TOO_LONG_AE_TITLE\n", 2, "aetitle: not an AE title"),
        ("[receiver]\naetitle = A\\B\n", 2, "aetitle: not an AE title"),
        ("[receiver]\nstorage = bit-preserving\nsubdirectories = series-date\n", 2, "bit-pres"),
        ("[receiver]\nprofile = nope\n", 2, "profile: no [profile nope] section"),
        ("[profile x]\nsop-classes = CTImageStorage Nope\n", 2, "unknown UID or name 'Nope'"),
        ("[profile x]\nsop-classes = 1.2.x\n", 2, "unknown UID or name '1.2.x'"),
        ("[profile x]\n\nsop-classes =\n", 3, "sop-classes: empty"),
        ("[profile x]\nsop-classes = CTImageStorage\ncolour = red\n", 3, "unknown key 'colour'"),
        ("[profile x]\nsop-classes = CTImageStorage\nroles = CTImageStorage:XY\n", 3, "'XY'"),
        ("[profile x]\nsop-classes = CTImageStorage\nroles = MRImageStorage:SCP\n", 3, "not in"),
        ("[profile x]\nsop-classes = CTImageStorage\nroles = CTImageStorage\n", 3, "expected"),
        (
            "[profile x]\nsop-classes = CTImageStorage\nextended-negotiation = CTImageStorage:1\n",
            3,
            "'1' is not 1 to 1023 bytes of hex",
        ),
        ("[profile x]\nasconfig = /etc/dcmtk/storescp.cfg\n", 1, "needs asconfig-profile"),
        ("[profile two words]\nsop-classes = CTImageStorage\n", 1, "a profile name is one word"),
        (
            "[profile x]\nasconfig = /nonexistent.cfg\nasconfig-profile = Default\n",
            2,
            "unable to open configuration file: /nonexistent.cfg",
        ),
    ],
)
def test_errors_name_file_line_and_reason(text: str, line: int, reason: str) -> None:
    error = error_of(text)
    assert error.path == "test.conf"
    assert error.line == line
    assert reason in error.reason
    assert str(error).startswith(f"test.conf:{line}: ")


def test_asconfig_errors_point_into_the_asconfig_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text(
        "[[TransferSyntaxes]]\n[TS]\nTransferSyntax1 = NoSuchSyntax\n"
        "[[PresentationContexts]]\n[PC]\nPresentationContext1 = CTImageStorage\\TS\n"
        "[[Profiles]]\n[P]\nPresentationContexts = PC\n"
    )
    with pytest.raises(inifile.ConfigError) as info:
        parse(f"[profile p]\nasconfig = {bad}\nasconfig-profile = P\n")
    assert (info.value.path, info.value.line) == (str(bad), 3)
    assert "not a valid transfer syntax UID: NoSuchSyntax" in info.value.reason


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(inifile.ConfigError) as info:
        inifile.load(tmp_path / "missing.conf")
    reason = "cannot read the configuration file: No such file or directory"
    assert str(info.value) == f"{tmp_path / 'missing.conf'}: {reason}"


def test_resolve_uid() -> None:
    assert inifile.resolve_uid("Verification") == VERIFICATION
    assert inifile.resolve_uid("VerificationSOPClass") == VERIFICATION  # DCMTK's name
    assert inifile.resolve_uid("JPEGBaseline8Bit") == "1.2.840.10008.1.2.4.50"
    assert inifile.resolve_uid("1.2.3.4") == "1.2.3.4"
    assert inifile.resolve_uid("uid_to_service_class") is None  # not a UID constant
    assert inifile.resolve_uid("1.2..x") is None


def test_storage_and_service_keys() -> None:
    found = parse(
        "[receiver]\nduplicates = keep-first\nfree-space-reserve = 2GiB 5%\nstop-grace = 7\n"
        "[logging]\ndestination = /var/log/dcmrecvd.log\n"
    )
    s = found.settings
    assert s.duplicates is DuplicatePolicy.KEEP_FIRST
    assert (s.free_space_reserve_bytes, s.free_space_reserve_percent) == (2 * 1024**3, 5.0)
    assert s.stop_grace == 7
    assert s.log_destination == "/var/log/dcmrecvd.log"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", (0, 0.0)),
        ("500MB", (500_000_000, 0.0)),
        ("500M", (500_000_000, 0.0)),
        ("1.5GiB", (1536 * 1024**2, 0.0)),
        ("10%", (0, 10.0)),
        ("1k, 2.5%", (1000, 2.5)),
    ],
)
def test_free_space_reserve_values(text: str, expected: tuple[int, float]) -> None:
    assert inifile.free_space_reserve(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[receiver]\nfree-space-reserve = lots\n", "not a size"),
        ("[receiver]\nfree-space-reserve = 100%\n", "out of range"),
        ("[receiver]\nfree-space-reserve = x%\n", "not a percentage"),
        ("[receiver]\nduplicates = ignore\n", "'ignore' is not one of: overwrite"),
        ("[logging]\ndestination = logs/here\n", "absolute path"),
        ("[receiver]\nstop-grace = -1\n", "out of range"),
    ],
)
def test_storage_and_service_key_errors(text: str, reason: str) -> None:
    error = error_of(text)
    assert error.line == 2
    assert reason in error.reason


def test_workers_key() -> None:
    assert parse("[receiver]\nworkers = 4\n").settings.workers == 4
    assert parse("").settings.workers is None  # one per CPU core
    assert "out of range" in error_of("[receiver]\nworkers = 0\n").reason


def test_sop_uid_check_is_on_in_the_daemon_and_can_be_turned_off() -> None:
    assert parse("").settings.check_sop_uids
    assert not parse("[receiver]\ncheck-sop-uids = no\n").settings.check_sop_uids
    assert "not yes or no" in error_of("[receiver]\ncheck-sop-uids = maybe\n").reason


def test_quarantine_keys(tmp_path: Path) -> None:
    assert parse("").settings.quarantine_dir is None
    found = parse(
        f"[receiver]\noutput-directory = {tmp_path}/in\n"
        f"quarantine-directory = {tmp_path}/refused\nquarantine-size = 2GiB\n"
    ).settings
    assert (found.quarantine_dir, found.quarantine_max_bytes) == (
        f"{tmp_path}/refused",
        2 * 1024**3,
    )


@pytest.mark.parametrize(
    ("lines", "line", "reason"),
    [
        ("quarantine-directory = {tmp}/in\n", 3, "is inside the output directory"),
        ("quarantine-directory = {tmp}/in/refused\n", 3, "is inside the output directory"),
        ("quarantine-directory = {tmp}\n", 3, "is inside {tmp}"),
        ("quarantine-directory = {tmp}/q\nquarantine-size = 0\n", 4, "must be more than 0"),
        ("quarantine-directory = {tmp}/q\nquarantine-size = big\n", 4, "not a size"),
    ],
)
def test_quarantine_errors(tmp_path: Path, lines: str, line: int, reason: str) -> None:
    error = error_of(f"[receiver]\noutput-directory = {tmp_path}/in\n" + lines.format(tmp=tmp_path))
    assert error.line == line
    assert reason.format(tmp=tmp_path) in error.reason


def test_path_template_key() -> None:
    assert parse("").settings.path_template is None
    found = parse(
        "[receiver]\nnaming = default\nsubdirectories = none\n"
        "path-template = {PatientID}/{StudyDate:%Y/%m}/{SOPInstanceUID}{extension}\n"
    ).settings
    assert found.path_template is not None
    assert found.path_template.tags == {0x00100020, 0x00080020, 0x00080018}


@pytest.mark.parametrize(
    ("lines", "line", "reason"),
    [
        ("path-template = {PatientName2}/{SOPInstanceUID}\n", 2, "column 2: unknown DICOM keyword"),
        ("path-template = {PatientID}\n", 2, "path-template:"),
        ("path-template = /{SOPInstanceUID}\n", 2, "path-template:"),
        ("naming = unique\npath-template = {SOPInstanceUID}\n", 2, "leave naming at default"),
        (
            "subdirectories = series-date\npath-template = {SOPInstanceUID}\n",
            2,
            "leave subdirectories at none",
        ),
    ],
)
def test_path_template_errors(lines: str, line: int, reason: str) -> None:
    error = error_of("[receiver]\n" + lines)
    assert error.line == line
    assert reason in error.reason
