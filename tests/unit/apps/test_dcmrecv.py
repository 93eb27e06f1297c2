"""dcmrecv's command line: DCMTK's OFCommandLine grammar, unit by unit and side by side.

The unit tests state the rules (section 2 of the reference); the interop tests run the
same argument vectors through DCMTK's dcmrecv and ours and compare what comes out.
"""

from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import dcmrecvd
from dcmrecvd.apps import dcmrecv as cli
from dcmrecvd.apps.dcmrecv import Help, UsageError, Version, expand_command_files, parse
from dcmrecvd.settings import (
    CrlCheck,
    DuplicatePolicy,
    KeyFormat,
    LogLevel,
    NamingScheme,
    PeerCertificate,
    Settings,
    StorageMode,
    SubdirMode,
    TlsProfile,
    TlsSettings,
)
from tests.support.net import free_port

# Every test here sets up process-wide logging.
pytestmark = pytest.mark.usefixtures("restore_logging")


def settings(*args: str) -> Settings:
    result = parse(list(args))
    assert isinstance(result, Settings)
    return result


def error(*args: str) -> str:
    with pytest.raises(UsageError) as caught:
        parse(list(args))
    return caught.value.message


# --- Options and their values ----------------------------------------------------------


def test_the_port_alone_gives_dcmtks_defaults() -> None:
    assert settings("104") == Settings(port=104)


TLS_CASES: list[tuple[list[str], dict[str, Any]]] = [
    (["+ps"], {}),
    (["+pw", "secret"], {"password": "secret"}),
    (["-pw"], {"password": ""}),
    (["-pem"], {}),
    (["-der"], {"key_format": KeyFormat.DER}),
    (["+cf", "a.pem", "+cf", "b.pem"], {"ca_files": (Path("a.pem"), Path("b.pem"))}),
    (["+cd", "/etc/ssl/certs"], {"ca_directories": (Path("/etc/ssl/certs"),)}),
    (
        ["+crl", "r.pem"],
        {"crl_files": (Path("r.pem"),), "crl_check": CrlCheck.LEAF},
    ),
    (["+crv"], {"crl_check": CrlCheck.LEAF}),
    (["+cra"], {"crl_check": CrlCheck.CHAIN}),
    (["+py"], {}),
    (["+px"], {"profile": TlsProfile.BCP195}),
    (["+pz"], {"profile": TlsProfile.BCP195_EX}),
    (["+pa"], {"profile": TlsProfile.AES}),
    (["+pn"], {"profile": TlsProfile.NULL}),
    (["+cs", "TLS_X", "+cs", "TLS_Y"], {"ciphers": ("TLS_X", "TLS_Y")}),
    (["+dp", "dh.pem"], {"dh_parameters": Path("dh.pem")}),
    (["+rs", "seed", "+ws"], {}),
    (["+rs", "seed", "+wf", "out"], {}),
    (["-rc"], {}),
    (["-vc"], {"peer_certificate": PeerCertificate.VERIFY}),
    (["-ic"], {"peer_certificate": PeerCertificate.IGNORE}),
]

OPTION_CASES = [
    (["-v"], {"log_level": LogLevel.INFO}),
    (["-d"], {"log_level": LogLevel.DEBUG}),
    (["-q"], {"log_level": LogLevel.FATAL}),
    (["+v", "-v"], {"verbose_pc": True, "log_level": LogLevel.INFO}),
    (["-xf", "a.cfg", "Default"], {"config_file": Path("a.cfg"), "profile_name": "Default"}),
    (["-aet", "ME"], {"aetitle": "ME"}),
    (["-uca"], {"use_called_aetitle": True}),
    (["--check-called-aetitle"], {"check_called_aetitle": True}),
    (["-ta", "5"], {"acse_timeout": 5}),
    (["-td", "7"], {"dimse_timeout": 7}),
    (["-pdu", "5001"], {"max_pdu": 5001}),
    (["-dhl"], {"host_lookup": False}),
    (["-od", "/in"], {"output_dir": "/in"}),
    (["-s"], {"subdir": SubdirMode.NONE}),
    (["+ssd"], {"subdir": SubdirMode.SERIES_DATE}),
    (["+fd"], {"naming": NamingScheme.DEFAULT}),
    (["+fu"], {"naming": NamingScheme.UNIQUE}),
    (["+fsu"], {"naming": NamingScheme.SHORT_UNIQUE}),
    (["+fst"], {"naming": NamingScheme.SYSTEM_TIME}),
    (["-fe", ".dcm"], {"extension": ".dcm"}),
    (["-B"], {"storage": StorageMode.NORMAL}),
    (["+B"], {"storage": StorageMode.BIT_PRESERVING}),
    (["--ignore"], {"storage": StorageMode.IGNORE}),
    (["--duplicates", "keep-first"], {"duplicates": DuplicatePolicy.KEEP_FIRST}),
    (["--reserve-bytes", "1048576"], {"free_space_reserve_bytes": 1048576}),
    (["--reserve-percent", "5"], {"free_space_reserve_percent": 5}),
    (["--benchmark-no-fsync"], {"benchmark_skip_fsync": True}),
    (["--arguments"], {}),
    (["-tls"], {}),
    (["+tls", "k.pem", "c.pem"], {"tls": TlsSettings(Path("k.pem"), Path("c.pem"))}),
    *(
        (["+tls", "k", "c", *args], {"tls": TlsSettings(Path("k"), Path("c"), **fields)})
        for args, fields in TLS_CASES
    ),
]


@pytest.mark.parametrize(("args", "fields"), OPTION_CASES)
def test_short_options(args: list[str], fields: dict[str, object]) -> None:
    assert settings(*args, "104") == Settings(port=104, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("args", "fields"), OPTION_CASES)
def test_long_options_mean_the_same(args: list[str], fields: dict[str, object]) -> None:
    long_args = [cli._OPTIONS[arg].long if arg in cli._OPTIONS else arg for arg in args]
    assert settings(*long_args, "104") == settings(*args, "104")


def test_every_option_has_a_case() -> None:
    covered = {cli._OPTIONS[a].long for args, _ in OPTION_CASES for a in args if a in cli._OPTIONS}
    covered |= {"--help", "--version", "--log-level", "--log-config", "--list-ciphers"}
    assert covered == {option.long for option in cli._OPTIONS.values()}


def test_options_and_the_port_come_in_any_order() -> None:
    assert settings("-od", "/in", "104", "-v") == settings("104", "-v", "-od", "/in")


@pytest.mark.parametrize(
    ("args", "field", "value"),
    [
        (["-od", "/a", "-od", "/b"], "output_dir", "/b"),
        (["-aet", "A", "-aet", "B"], "aetitle", "B"),
        (["-ta", "0x", "-ta", "9"], "acse_timeout", 9),  # only the rightmost is read
        (["-xf", "a", "A", "-xf", "b", "B"], "profile_name", "B"),
        (["-fe", ".a", "-fe", ".b"], "extension", ".b"),
        (["-v", "-d"], "log_level", LogLevel.DEBUG),
        (["-d", "-v"], "log_level", LogLevel.INFO),
        (["-v", "-q"], "log_level", LogLevel.FATAL),
        (["-q", "-v"], "log_level", LogLevel.INFO),
        (["+fu", "+fd"], "naming", NamingScheme.DEFAULT),
        (["+fst", "+fu", "+fsu"], "naming", NamingScheme.SHORT_UNIQUE),
        (["+ssd", "-s"], "subdir", SubdirMode.NONE),
        (["-s", "+ssd"], "subdir", SubdirMode.SERIES_DATE),
        (["--ignore", "-B"], "storage", StorageMode.NORMAL),
        (["-B", "--ignore"], "storage", StorageMode.IGNORE),
    ],
)
def test_the_rightmost_wins(args: list[str], field: str, value: object) -> None:
    assert getattr(settings(*args, "104"), field) == value


def test_plus_and_minus_are_different_options() -> None:
    assert settings("-B", "104").storage is StorageMode.NORMAL
    assert settings("+B", "104").storage is StorageMode.BIT_PRESERVING
    assert error("-ssd", "104") == "Unknown option -ssd"


@pytest.mark.parametrize(
    ("args", "aetitle", "use_called"),
    [
        (["-aet", "X", "-uca"], "X", True),
        (["-uca", "-aet", "X"], "X", False),
        (["-aet", "X", "-uca", "-aet", "Y"], "Y", False),
    ],
)
def test_aetitle_block(args: list[str], aetitle: str, use_called: bool) -> None:
    result = settings(*args, "104")
    assert (result.aetitle, result.use_called_aetitle) == (aetitle, use_called)


def test_values_are_taken_literally() -> None:
    result = settings("-aet", "-od", "-fe", "104", "105")
    assert (result.aetitle, result.extension, result.port) == ("-od", "104", 105)
    assert error("-aet", "-od", "/x") == "Invalid parameter value /x"


def test_empty_values_are_accepted() -> None:
    assert settings("-aet", "", "-od", "", "104").aetitle == ""


# --- The bit-preserving quirk ------------------------------------------------------------

BIT_PRESERVING_ERROR = "--bit-preserving not allowed with --series-date-subdir"


@pytest.mark.parametrize(
    "args",
    [
        ["+B", "+ssd"],
        ["+ssd", "+B"],
        ["-s", "+B", "+ssd"],
        ["+B", "--ignore", "+ssd"],  # --ignore wins the block, +B is still checked
        ["--ignore", "+B", "+ssd"],
        ["+B", "+ssd", "--ignore"],
        ["-B", "+B", "+ssd"],
    ],
)
def test_bit_preserving_conflicts_when_seen(args: list[str]) -> None:
    assert error(*args, "104") == BIT_PRESERVING_ERROR


@pytest.mark.parametrize(
    ("args", "storage"),
    [
        (["+ssd", "+B", "-B"], StorageMode.NORMAL),  # -B hides the +B to its left
        (["+B", "-B", "+ssd"], StorageMode.NORMAL),
        (["+B", "+ssd", "-B"], StorageMode.NORMAL),
        (["+ssd", "+B", "-s"], StorageMode.BIT_PRESERVING),  # the final mode is -s
        (["+B", "--ignore"], StorageMode.IGNORE),
    ],
)
def test_bit_preserving_accepted_when_hidden(args: list[str], storage: StorageMode) -> None:
    assert settings(*args, "104").storage is storage


# --- Numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "port"),
    [("1", 1), ("65535", 65535), ("+5", 5), (" 104", 104), ("104abc", 104), ("0104", 104)],
)
def test_ports_read_as_sscanf_reads_them(text: str, port: int) -> None:
    assert settings(text).port == port


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "Invalid parameter value 0 (underflow)"),
        ("-0", "Invalid parameter value -0 (underflow)"),
        ("0x68", "Invalid parameter value 0x68 (underflow)"),
        ("65536", "Invalid parameter value 65536 (overflow)"),
        ("-5", "Invalid parameter value -5 (overflow)"),  # strtoul wraps it around
        ("9" * 5000, f"Invalid parameter value {'9' * 5000} (overflow)"),
        ("abc", "Invalid parameter value abc"),
        ("-", "Invalid parameter value -"),
        ("", "Invalid parameter value "),
    ],
)
def test_bad_ports(text: str, message: str) -> None:
    assert error(text) == message


@pytest.mark.parametrize(
    ("args", "field", "value"),
    [
        (["-pdu", "4096"], "max_pdu", 4096),
        (["-pdu", "131072"], "max_pdu", 131072),
        (["-pdu", "5001"], "max_pdu", 5001),  # rounding is the wire's business
        (["-ta", "1"], "acse_timeout", 1),
        (["-ta", "+5"], "acse_timeout", 5),
        (["-ta", " 5"], "acse_timeout", 5),
        (["-ta", "5x"], "acse_timeout", 5),
        (["-td", "1"], "dimse_timeout", 1),
    ],
)
def test_good_numbers(args: list[str], field: str, value: int) -> None:
    assert getattr(settings(*args, "104"), field) == value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-pdu", "4095"], "Invalid value for option --max-pdu (underflow: 4095)"),
        (["-pdu", "131073"], "Invalid value for option --max-pdu (overflow: 131073)"),
        (["-pdu", "9" * 30], f"Invalid value for option --max-pdu (overflow: {'9' * 30})"),
        (["-pdu", "-4096"], "Invalid value for option --max-pdu (-4096)"),
        (["-pdu", " -4096"], "Invalid value for option --max-pdu ( -4096)"),
        (["-pdu", "abc"], "Invalid value for option --max-pdu (abc)"),
        (["-pdu", ""], "Invalid value for option --max-pdu"),
        (["-ta", "0"], "Invalid value for option --acse-timeout (underflow: 0)"),
        (["-td", "0"], "Invalid value for option --dimse-timeout (underflow: 0)"),
        # Checked in DCMTK's order, not the command line's.
        (["-pdu", "1", "-ta", "0"], "Invalid value for option --acse-timeout (underflow: 0)"),
    ],
)
def test_bad_numbers(args: list[str], message: str) -> None:
    assert error(*args, "104") == message


@pytest.mark.parametrize("policy", list(DuplicatePolicy))
def test_every_duplicate_policy_by_name(policy: DuplicatePolicy) -> None:
    assert settings("--duplicates", policy.value, "104").duplicates is policy


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duplicates", "ignore", "104"], "Invalid value for option --duplicates (ignore)"),
        (["104", "--duplicates"], "Missing value for option --duplicates"),
        (
            ["--reserve-percent", "101", "104"],
            "Invalid value for option --reserve-percent (overflow: 101)",
        ),
        (["--reserve-bytes", "-1", "104"], "Invalid value for option --reserve-bytes (-1)"),
    ],
)
def test_bad_storage_safety_values(args: list[str], message: str) -> None:
    assert error(*args) == message


def test_storage_safety_defaults_are_dcmtks() -> None:
    parsed = settings("104")
    assert parsed.duplicates is DuplicatePolicy.OVERWRITE
    assert (parsed.free_space_reserve_bytes, parsed.free_space_reserve_percent) == (0, 0)
    assert parsed.benchmark_skip_fsync is False


def test_the_benchmarking_switch_says_so() -> None:
    assert "BENCHMARKING ONLY" in cli.help_text()


def test_option_values_are_checked_before_the_port() -> None:
    assert error("-pdu", "1", "0") == "Invalid value for option --max-pdu (underflow: 1)"


# --- Syntax errors, help and version -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-v"], "Missing parameter port"),
        (["104", "105"], "Too many parameters"),
        (["--bogus", "104"], "Unknown option --bogus"),
        (["104", "--", "105"], "Unknown option --"),
        (["104", "-aet"], "Missing value for option --aetitle"),
        (["-xf", "only-one"], "Missing value for option --config-file"),
        (["--bogus", "-aet"], "Unknown option --bogus"),  # the first from the left
        (["-aet", "--bogus"], "Missing parameter port"),
        (["--help", "--bogus"], "Unknown option --bogus"),
        (["--version", "-x"], "Unknown option -x"),
        (["+", "104"], "Too many parameters"),  # too short to be an option
    ],
)
def test_syntax_errors(args: list[str], message: str) -> None:
    assert error(*args) == message


@pytest.mark.parametrize(
    ("args", "action"),
    [
        ([], Help()),
        (["-h"], Help()),
        (["--help", "1", "2", "3"], Help()),
        (["--version", "-h"], Help()),
        (["--version"], Version()),
        (["--version", "1", "2"], Version()),
        (["-aet", "--help", "104"], Settings(port=104, aetitle="--help")),
    ],
)
def test_help_and_version(args: list[str], action: object) -> None:
    assert parse(args) == action


# --- Logging options -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("fatal", LogLevel.FATAL),
        ("error", LogLevel.ERROR),
        ("WARN", LogLevel.WARN),
        ("Info", LogLevel.INFO),
        ("debug", LogLevel.DEBUG),
        ("trace", LogLevel.TRACE),
        ("all", LogLevel.TRACE),
        ("off", LogLevel.FATAL),
    ],
)
def test_log_levels(value: str, level: LogLevel) -> None:
    assert settings("-ll", value, "104").log_level is level


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-ll", "notset"], "Invalid log level for --log-level option"),
        (["-ll", "warning"], "Invalid log level for --log-level option"),
        (["-ll", "\u0131nfo"], "Invalid log level for --log-level option"),  # ASCII only
        (["-ll", ""], "Invalid log level for --log-level option"),
        (["-v", "-ll", "info"], "--log-level not allowed with --verbose, --debug or --quiet"),
        (["-ll", "info", "-q"], "--log-level not allowed with --verbose, --debug or --quiet"),
        (["-lc", "x", "-ll", "info"], "--log-config not allowed with --log-level"),
        (["-d", "-lc", "x"], "--log-config not allowed with --verbose, --debug or --quiet"),
        (["-lc", "/nonexistent.cfg"], "Specified --log-config file does not exist"),
        (["+v"], "--verbose-pc only allowed with verbose mode"),
        (["+v", "-ll", "warn"], "--verbose-pc only allowed with verbose mode"),
        (["+v", "-v", "-q"], "--verbose-pc only allowed with verbose mode"),
    ],
)
def test_logging_errors(args: list[str], message: str) -> None:
    assert error(*args, "104") == message


def test_errors_found_after_the_logging_options_carry_them() -> None:
    with pytest.raises(UsageError) as caught:
        parse(["-q", "-pdu", "1", "104"])
    assert caught.value.logging == Settings(log_level=LogLevel.FATAL)
    with pytest.raises(UsageError) as caught:
        parse(["-q", "-ll", "info", "104"])
    assert caught.value.logging is None


LOG_CONFIG = """\
[formatters]
keys =
[handlers]
keys = stderr
[handler_stderr]
class = StreamHandler
args = (sys.stderr,)
[loggers]
keys = root
[logger_root]
level = {level}
handlers = stderr
"""


def log_config(tmp_path: Path, level: str) -> Path:
    path = tmp_path / f"{level}.cfg"
    path.write_text(LOG_CONFIG.format(level=level))
    return path


def test_a_log_config_file_is_kept_and_leaves_verbose_pc_to_main(tmp_path: Path) -> None:
    config = log_config(tmp_path, "WARNING")
    result = settings("-lc", str(config), "+v", "104")
    assert (result.log_config, result.verbose_pc) == (config, True)


# --- Command files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("-aet  X\n\t-od\r\n/in  ", ["-aet", "X", "-od", "/in"]),
        ('-aet "De fault"', ["-aet", "De fault"]),
        ("-aet 'De fault'", ["-aet", "De fault"]),
        ("\"\" ''", ["", ""]),
        ('ab"c d"e', ["abc d", "e"]),  # a closing quote ends the token
        ("'it\"s'", ['it"s']),
        ('"open quote', ["open quote"]),
        ("", []),
    ],
)
def test_command_file_tokens(text: str, tokens: list[str]) -> None:
    assert cli.split_command_file(text) == tokens


def test_command_files_are_expanded_in_place_but_not_nested(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("-aet X\n@b.txt\n")
    assert expand_command_files(["-v", f"@{tmp_path / 'a.txt'}", "104", "@"]) == (
        ["-v", "-aet", "X", "@b.txt", "104", "@"]
    )


def test_a_missing_command_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    with pytest.raises(UsageError) as caught:
        expand_command_files(["104", f"@{missing}"])
    assert caught.value.message == f"Cannot open command file '{missing}'"


def test_a_directory_is_an_empty_command_file(tmp_path: Path) -> None:
    assert expand_command_files([f"@{tmp_path}", "104"]) == ["104"]


def test_an_empty_command_line_after_expansion_asks_for_help(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n")
    assert parse(expand_command_files([f"@{tmp_path / 'empty.txt'}"])) == Help()


# --- --arguments, --help, --version texts --------------------------------------------------


def test_arguments_message_shows_long_forms_and_counts_empty_arguments() -> None:
    args = ["--arguments", "-aet", "", "-v", "104"]
    assert cli.arguments_message("dcmrecv", args) == (
        "calling 'dcmrecv' with 5 arguments: '--arguments' '--aetitle' '--verbose' '104' \n"
    )
    assert cli.arguments_message("dcmrecv", ["104"]) is None


def test_help_lines_up_like_dcmtk() -> None:
    lines = cli.help_text().splitlines()
    assert lines[:4] == [
        cli.RCSID,
        "",
        "dcmrecv: Simple DICOM storage SCP (receiver)",
        "usage: dcmrecv [options] port",
    ]
    assert "    -pdu  --max-pdu              [n]umber of bytes: integer (4096..131072)" in lines
    assert "          --check-called-aetitle  refuse associations whose called AE title" in lines
    assert lines[-1] == ""


def test_version_names_us_and_our_libraries() -> None:
    lines = cli.version_text().splitlines()
    assert lines[0] == f"$dcmrecvd: dcmrecv v{dcmrecvd.__version__} $"
    assert lines[4].startswith("Host type: ")
    assert lines[-4:-3] == ["External libraries used:"]
    assert [line.split()[1] for line in lines[-3:]] == ["Python", "pynetdicom", "pydicom"]


# --- main ------------------------------------------------------------------------------------


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Stand in for dcmrecvd.apps.dcmrecv_life: records the settings it is run with, returns 45."""
    runs: list[Settings] = []

    def run(settings: Settings) -> int:
        runs.append(settings)
        return 45

    fake = types.ModuleType("dcmrecvd.apps.dcmrecv_life")
    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dcmrecvd.apps.dcmrecv_life", fake)
    monkeypatch.setattr(dcmrecvd.apps, "dcmrecv_life", fake, raising=False)
    return runs


def test_main_runs_the_receiver(
    receiver: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["-v", "104"]) == 45
    assert receiver == [Settings(port=104, log_level=LogLevel.INFO)]
    assert capsys.readouterr() == ("", "")


def test_main_prints_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 0
    assert capsys.readouterr() == (cli.help_text(), "")
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr() == (cli.version_text(), "")


def test_main_reports_errors_as_dcmtk_does(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-pdu", "100", "104"]) == 1
    assert capsys.readouterr() == (
        "",
        f"{cli.RCSID}\n\ndcmrecv: Simple DICOM storage SCP (receiver)\n"
        "error: Invalid value for option --max-pdu (underflow: 100)\n",
    )


@pytest.mark.parametrize("args", [["-q"], ["-ll", "fatal"], ["-v", "+v", "-q"]])
def test_quiet_main_prints_no_late_errors(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*args, "-pdu", "1", "104"]) == 1
    assert capsys.readouterr() == ("", "")


def test_quiet_main_still_prints_syntax_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-q", "--bogus", "104"]) == 1
    assert capsys.readouterr().err.endswith("error: Unknown option --bogus\n")


def test_main_echoes_arguments_before_late_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-q", "--arguments", "-pdu", "1", "104"]) == 1
    assert capsys.readouterr().err == (
        "I: calling 'dcmrecv' with 5 arguments: '--quiet' '--arguments' '--max-pdu' '1' '104' \n"
        "I: \n"
    )


def test_main_takes_the_program_name_from_argv(
    receiver: list[Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/bin/dcmrecv", "--arguments", "104"])
    assert cli.main() == 45
    assert capsys.readouterr().err.startswith("I: calling '/usr/bin/dcmrecv' with 2 arguments")


def test_main_logs_its_identity_at_debug(
    receiver: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["-d", "104"]) == 45
    assert capsys.readouterr().err == f"D: {cli.RCSID}\nD: \n"


def test_main_expands_command_files(
    receiver: list[Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "opts.txt").write_text('-aet "MY AE"\n+fsu\n')
    assert cli.main([f"@{tmp_path / 'opts.txt'}", "104"]) == 45
    assert receiver == [Settings(port=104, aetitle="MY AE", naming=NamingScheme.SHORT_UNIQUE)]
    assert cli.main([f"@{tmp_path / 'none.txt'}", "104"]) == 1
    assert capsys.readouterr().err.endswith(
        f"error: Cannot open command file '{tmp_path / 'none.txt'}'\n"
    )


@pytest.mark.parametrize(("level", "runs"), [("INFO", 1), ("WARNING", 0)])
def test_main_checks_verbose_pc_against_the_configured_loggers(
    receiver: list[Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    level: str,
    runs: int,
) -> None:
    code = cli.main(["-lc", str(log_config(tmp_path, level)), "+v", "104"])
    assert (code, len(receiver)) == (45 if runs else 1, runs)
    if not runs:
        assert capsys.readouterr().err.endswith(
            "error: --verbose-pc only allowed with verbose mode\n"
        )


def test_main_is_quiet_when_the_configured_root_logger_is(
    receiver: list[Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["-lc", str(log_config(tmp_path, "CRITICAL")), "+v", "104"]) == 1
    assert capsys.readouterr().err == ""


def test_main_reports_a_config_file_python_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.cfg"
    config.write_text(LOG_CONFIG.format(level="INFO").replace("StreamHandler", "NoSuchHandler"))
    assert cli.main(["-lc", str(config), "104"]) == 1
    assert "error: Specified --log-config file cannot be used: " in capsys.readouterr().err


# --- Side by side with DCMTK's dcmrecv -------------------------------------------------------

NOWHERE = "/nonexistent/dcmrecvd-cli-test"


@dataclass(frozen=True)
class Files:
    """Command and log-config files the vectors name as {a}, {nested}, ..."""

    root: Path

    def substitute(self, arg: str) -> str:
        names = {
            name: str(self.root / f"{name}.txt")
            for name in ("a", "nested", "quoted", "empty", "missing", "junk")
        }
        port = free_port() if "{port}" in arg else 0
        return arg.format(**names, dir=self.root, port=port)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    (tmp_path / "a.txt").write_text('-aet "De fault" \n -fe\n.dcm\n')
    (tmp_path / "nested.txt").write_text(f"@{tmp_path / 'a.txt'}\n")
    (tmp_path / "quoted.txt").write_text("'x y' \"\" ")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "junk.txt").write_text("foo=bar\n")
    return Files(tmp_path)


# Each needs --enable-tls, and DCMTK says so.
TLS_WITHOUT_TLS = [
    ("+ps", []),
    ("+pw", ["x"]),
    ("-pw", []),
    ("-pem", []),
    ("-der", []),
    ("+cf", ["x"]),
    ("+cd", ["x"]),
    ("+crl", ["x"]),
    ("+crv", []),
    ("+cra", []),
    ("+py", []),
    ("+px", []),
    ("+pz", []),
    ("+pa", []),
    ("+pn", []),
    ("+cs", ["X"]),
    ("+dp", ["x"]),
    ("+rs", ["x"]),
    ("-rc", []),
    ("-vc", []),
    ("-ic", []),
]

ERROR_VECTORS = [
    ["104", "105"],
    ["-v"],
    ["--bogus", "104"],
    ["104", "+x"],
    ["-ssd", "104"],
    ["--", "104"],
    ["-+", "104"],
    ["+", "104"],
    ["104", "-aet"],
    ["-xf", "a"],
    ["-xf", "a", "104"],
    ["-aet", "-od", "/x"],
    ["0"],
    ["-0"],
    ["70000"],
    ["-5"],
    ["abc"],
    [""],
    ["0x68"],
    ["-"],
    ["-pdu", "100", "104"],
    ["-pdu", "4095", "104"],
    ["-pdu", "131073", "104"],
    ["-pdu", "99999999999999999999999", "104"],
    ["-pdu", "-4096", "104"],
    ["-pdu", "abc", "104"],
    ["-pdu", "", "104"],
    ["-ta", "0", "104"],
    ["-ta", "x", "104"],
    ["-ta", "-5", "104"],
    ["-td", "0", "104"],
    ["-pdu", "1", "-ta", "0", "104"],
    ["-pdu", "1", "0"],
    ["+B", "--ignore", "+ssd", "104"],
    ["-s", "+B", "+ssd", "104"],
    ["--ignore", "+B", "+ssd", "104"],
    ["+B", "+ssd", "--ignore", "104"],
    ["+v", "104"],
    ["+v", "-ll", "warn", "104"],
    ["+v", "-v", "-q", "104"],
    ["-q", "-pdu", "1", "104"],
    ["-ll", "fatal", "-pdu", "1", "104"],
    ["-ll", "OFF", "-pdu", "1", "104"],
    ["-ll", "Info", "-pdu", "1", "104"],
    ["-q", "--arguments", "-pdu", "1", "104"],
    ["--arguments", "-aet", "", "-pdu", "1", "104"],
    ["-v", "-ll", "info", "104"],
    ["-ll", "info", "-q", "104"],
    ["-ll", "verbose", "104"],
    *([option, *values, "104"] for option, values in TLS_WITHOUT_TLS),
    ["+tls", "k", "104"],
    ["+tls", "k", "c", "+ws", "104"],
    ["+tls", "k", "c", "+wf", "f", "104"],
    ["+tls", "k", "c", "+cs", "X", "+pz", "104"],
    ["+tls", "k", "c", "+pw", "104"],
    ["-ll", "notset", "104"],
    ["-ll", "", "104"],
    ["-lc", "/nonexistent.cfg", "104"],
    ["-lc", "{dir}", "104"],
    ["-lc", "", "104"],
    ["-lc", "x", "-ll", "info", "104"],
    ["-v", "-lc", "x", "104"],
    ["-lc", "{empty}", "104"],
    ["-lc", "{junk}", "104"],
    ["--bogus", "@{missing}"],
    ["@{missing}", "104"],
    ["@{nested}", "104"],
    ["@{quoted}", "104"],
    ["@", "104"],
    ["-h", "--bogus"],
    ["--version", "--bogus"],
    ["104", "-aet", "X", "-xf"],
]


def dcmtk(dcmrecv: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["dcmrecv", *args],
        executable=dcmrecv,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def ours(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def without_rcsid(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith(("$dcmtk:", "$dcmrecvd:"))]


@pytest.mark.interop
@pytest.mark.parametrize("vector", ERROR_VECTORS, ids=repr)
def test_errors_match_dcmtk(
    vector: list[str], files: Files, dcmtk_dcmrecv: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [files.substitute(arg) for arg in vector]
    theirs = dcmtk(dcmtk_dcmrecv, args)
    code, out, err = ours(args, capsys)
    assert (theirs.returncode, theirs.stdout) == (1, "")
    assert (code, out) == (1, "")
    assert without_rcsid(err) == without_rcsid(theirs.stderr)


VALID_VECTORS = [
    ["{port}"],
    [" {port}"],
    ["{port}abc"],
    ["+ssd", "+B", "-B", "{port}"],
    ["+ssd", "+B", "-s", "{port}"],
    ["+B", "-B", "+ssd", "{port}"],
    ["+B", "+ssd", "-B", "{port}"],
    ["-aet", "X", "-uca", "-aet", "Y", "{port}"],
    ["-aet", "", "{port}"],
    ["-od", "{dir}", "{port}"],  # only the rightmost -od (the one we add) counts
    ["-v", "+v", "{port}"],
    ["-d", "+v", "{port}"],
    ["-ll", "Info", "+v", "{port}"],
    ["-ll", "ALL", "{port}"],
    ["-q", "-v", "{port}"],
    ["-v", "-q", "{port}"],
    ["-pdu", "4096", "-pdu", "131072", "{port}"],
    ["-pdu", "5001", "{port}"],
    ["-ta", "1", "-td", "1", "{port}"],
    ["-ta", "+5", "{port}"],
    ["-ta", " 5", "{port}"],
    ["-ta", "5x", "{port}"],
    ["+fu", "+fd", "+fst", "+fsu", "-fe", ".dcm", "{port}"],
    ["-dhl", "--ignore", "{port}"],
    ["-s", "-B", "+fd", "{port}"],
    ["@{a}", "{port}"],
    ["@{dir}", "{port}"],
    ["{port}", "--arguments", "-d", "@{a}", "-aet", ""],
]


@pytest.mark.interop
@pytest.mark.parametrize("vector", VALID_VECTORS, ids=repr)
def test_valid_command_lines_match_dcmtk(
    vector: list[str],
    files: Files,
    dcmtk_dcmrecv: str,
    receiver: list[Settings],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A missing output directory stops DCMTK right after parsing, with exit code 45.
    args = [*(files.substitute(arg) for arg in vector), "-od", NOWHERE]
    theirs = dcmtk(dcmtk_dcmrecv, args)
    code, _, err = ours(args, capsys)
    assert theirs.returncode == 45
    assert code == 45
    assert receiver[0].output_dir == NOWHERE
    assert calling_lines(err) == calling_lines(theirs.stderr)


def calling_lines(stderr: str) -> list[str]:
    """What --arguments printed."""
    return [line for line in stderr.splitlines() if line.startswith("I: calling ")]


HELP_VECTORS = [[], ["-h"], ["--help", "1", "2"], ["--version", "-h"], ["@{empty}"]]


@pytest.mark.interop
@pytest.mark.parametrize(
    "vector", [*HELP_VECTORS, ["--version"], ["--version", "x", "y"]], ids=repr
)
def test_help_and_version_match_dcmtk(
    vector: list[str], files: Files, dcmtk_dcmrecv: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [files.substitute(arg) for arg in vector]
    theirs = dcmtk(dcmtk_dcmrecv, args)
    code, out, err = ours(args, capsys)
    assert (code, err) == (theirs.returncode, theirs.stderr) == (0, "")
    wanted = "usage: " if vector in HELP_VECTORS else "Host type: "
    assert wanted in theirs.stdout
    assert wanted in out


@pytest.mark.interop
def test_help_text_is_dcmtks(dcmtk_dcmrecv: str) -> None:
    theirs = dcmtk(dcmtk_dcmrecv, ["--help"]).stdout.splitlines()
    theirs = [cli.RCSID, *theirs[1:]]
    # Ours adds one line to --log-config and an option that widens its sub-group.
    mine = cli.help_text().splitlines()
    mine.remove("                                 (Python logging.config.fileConfig format)")
    # ... and a sub-group of its own options at the end of the output options.
    ours_only = mine.index("  storage safety (dcmrecvd only):")
    mine = mine[:ours_only] + mine[mine.index("", ours_only) :]
    aetitle = theirs.index("  application entity title:")
    assert mine[:aetitle] == theirs[:aetitle]
    assert mine[aetitle + 6 :] == theirs[aetitle + 4 :]
