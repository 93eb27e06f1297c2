"""The `dcmrecv` command line: DCMTK 3.6.7's grammar (OFCommandLine) -> Settings.

The grammar in brief: `+x` and `-x` are different options; options and the port come in
any order; an option swallows its values literally; a single-valued option given twice
uses its rightmost value; `@file` arguments are replaced by the tokens in the file.
Options are checked in the order DCMTK's dcmrecv checks them, so the first error reported
is DCMTK's, with DCMTK's text. Option blocks (mutually exclusive options) keep DCMTK's
quirk: within a block an option counts only if it lies to the right of every option of the
block found before it, and the side-effect check of a losing option still runs
(`+B --ignore +ssd` is an error although --ignore wins).

`parse` is the grammar and touches nothing but the --log-config file it checks;
`expand_command_files` reads @files; `main` does the printing and starts the receiver.
"""

from __future__ import annotations

import dataclasses
import locale
import logging
import os
import platform
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pydicom
import pynetdicom

from dcmrecvd import __version__, logs
from dcmrecvd.config.tls import cipher_list
from dcmrecvd.settings import (
    MAX_PDU,
    MIN_PDU,
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

PROGRAM = "dcmrecv"
DESCRIPTION = "Simple DICOM storage SCP (receiver)"
# DCMTK's "$dcmtk: dcmrecv v3.6.7 2022-04-22 $", naming us instead.
RCSID = f"$dcmrecvd: {PROGRAM} v{__version__} $"

EXIT_OK = 0
EXIT_SYNTAX_ERROR = 1

MAX_PORT = 65535
# sscanf("%lu") on a 64-bit system saturates here.
_ULONG_MAX = 2**64 - 1

VERBOSE_PC_ERROR = "--verbose-pc only allowed with verbose mode"

DEFAULTS = Settings()
LOG = logging.getLogger(logs.LOGGER_NAME)

_T = TypeVar("_T")


class UsageError(Exception):
    """A command line DCMTK rejects; `message` is the text after "error: ".

    `logging` holds the logging settings when the error was found after DCMTK had set up
    its logger: it has then echoed --arguments and, if quiet, prints no error at all.
    `quiet` says that the error must not be printed.
    """

    def __init__(
        self, message: str, *, logging: Settings | None = None, quiet: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.logging = logging
        self.quiet = quiet


@dataclass(frozen=True)
class Help:
    """--help, -h, or no arguments at all."""


@dataclass(frozen=True)
class Version:
    """--version."""


@dataclass(frozen=True)
class ListCiphers:
    """+cc: print the TLS ciphersuites and exit."""


# --- The option table: drives both the parser and --help -----------------------------


@dataclass(frozen=True)
class _Option:
    long: str
    short: str = ""
    values: int = 0
    value_help: str = ""
    help: str = ""


@dataclass(frozen=True)
class _Section:
    """A group (`sub` False) or sub-group of options in --help."""

    title: str
    options: tuple[_Option, ...] = ()
    sub: bool = False
    short_width: int = 4


_LONG_WIDTH = 21
_PARAM_WIDTH = 29

_SECTIONS = (
    _Section(
        "general options:",
        short_width=6,
        options=(
            _Option("--help", "-h", help="print this help text and exit"),
            _Option("--version", help="print version information and exit"),
            _Option("--arguments", help="print expanded command line arguments"),
            _Option("--quiet", "-q", help="quiet mode, print no warnings and errors"),
            _Option("--verbose", "-v", help="verbose mode, print processing details"),
            _Option("--debug", "-d", help="debug mode, print debug information"),
            _Option(
                "--log-level",
                "-ll",
                1,
                "[l]evel: string constant",
                "(fatal, error, warn, info, debug, trace)\nuse level l for the logger",
            ),
            _Option(
                "--log-config",
                "-lc",
                1,
                "[f]ilename: string",
                "use config file f for the logger\n(Python logging.config.fileConfig format)",
            ),
            _Option("--verbose-pc", "+v", help="show presentation contexts in verbose mode"),
        ),
    ),
    _Section("network options:"),
    _Section(
        "association negotiation profile from configuration file:",
        sub=True,
        options=(
            _Option(
                "--config-file",
                "-xf",
                2,
                "[f]ilename, [p]rofile: string",
                "use profile p from configuration file f",
            ),
        ),
    ),
    _Section(
        "application entity title:",
        sub=True,
        options=(
            _Option(
                "--aetitle",
                "-aet",
                1,
                "[a]etitle: string",
                f"set my AE title (default: {DEFAULTS.aetitle})",
            ),
            _Option("--use-called-aetitle", "-uca", help="always respond with called AE title"),
            _Option(
                "--check-called-aetitle",
                help="refuse associations whose called AE title\n"
                "is not my AE title (as DCMTK 3.6.8 does)",
            ),
        ),
    ),
    _Section(
        "other network options:",
        sub=True,
        options=(
            _Option(
                "--acse-timeout",
                "-ta",
                1,
                f"[s]econds: integer (default: {DEFAULTS.acse_timeout})",
                "timeout for ACSE messages",
            ),
            _Option(
                "--dimse-timeout",
                "-td",
                1,
                "[s]econds: integer (default: unlimited)",
                "timeout for DIMSE messages",
            ),
            _Option(
                "--max-pdu",
                "-pdu",
                1,
                f"[n]umber of bytes: integer ({MIN_PDU}..{MAX_PDU})",
                f"set max receive pdu to n bytes (default: {DEFAULTS.max_pdu})",
            ),
            _Option("--disable-host-lookup", "-dhl", help="disable hostname lookup"),
        ),
    ),
    _Section("transport layer security (TLS) options:"),
    _Section(
        "transport protocol stack:",
        sub=True,
        options=(
            _Option("--disable-tls", "-tls", help="use normal TCP/IP connection (default)"),
            _Option(
                "--enable-tls",
                "+tls",
                2,
                "[p]rivate key file, [c]ertificate file: string",
                "use authenticated secure TLS connection",
            ),
        ),
    ),
    _Section(
        "private key password (only with --enable-tls):",
        sub=True,
        options=(
            _Option("--std-passwd", "+ps", help="prompt user to type password on stdin (default)"),
            _Option("--use-passwd", "+pw", 1, "[p]assword: string ", "use specified password"),
            _Option("--null-passwd", "-pw", help="use empty string as password"),
        ),
    ),
    _Section(
        "key and certificate file format:",
        sub=True,
        options=(
            _Option("--pem-keys", "-pem", help="read keys and certificates as PEM file (default)"),
            _Option("--der-keys", "-der", help="read keys and certificates as DER file"),
        ),
    ),
    _Section(
        "certification authority:",
        sub=True,
        options=(
            _Option(
                "--add-cert-file",
                "+cf",
                1,
                "[f]ilename: string",
                "add certificate file to list of certificates",
            ),
            _Option(
                "--add-cert-dir",
                "+cd",
                1,
                "[d]irectory: string",
                "add certificates in d to list of certificates",
            ),
            _Option(
                "--add-crl-file",
                "+crl",
                1,
                "[f]ilename: string",
                "add certificate revocation list file\n(implies --enable-crl-vfy)",
            ),
            _Option("--enable-crl-vfy", "+crv", help="enable leaf CRL verification"),
            _Option("--enable-crl-all", "+cra", help="enable full chain CRL verification"),
        ),
    ),
    _Section(
        "security profile:",
        sub=True,
        options=(
            _Option(
                "--profile-bcp195-nd",
                "+py",
                help="Non-downgrading BCP 195 TLS Profile (default)",
            ),
            _Option("--profile-bcp195", "+px", help="BCP 195 TLS Profile"),
            _Option("--profile-bcp195-ex", "+pz", help="Extended BCP 195 TLS Profile"),
            _Option(
                "--profile-aes",
                "+pa",
                help="AES TLS Secure Transport Connection Profile\n(retired)",
            ),
            _Option(
                "--profile-null",
                "+pn",
                help="Authenticated unencrypted communication\n(retired, was used in IHE ATNA)",
            ),
        ),
    ),
    _Section(
        "ciphersuite:",
        sub=True,
        options=(
            _Option(
                "--list-ciphers",
                "+cc",
                help="show list of supported TLS ciphersuites and exit",
            ),
            _Option(
                "--cipher",
                "+cs",
                1,
                "[c]iphersuite name: string",
                "add ciphersuite to list of negotiated suites\n(not with --profile-bcp195-ex)",
            ),
            _Option(
                "--dhparam",
                "+dp",
                1,
                "[f]ilename: string",
                "read DH parameters for DH/DSS ciphersuites",
            ),
        ),
    ),
    _Section(
        "pseudo random generator:",
        sub=True,
        options=(
            _Option(
                "--seed", "+rs", 1, "[f]ilename: string", "seed random generator with contents of f"
            ),
            _Option("--write-seed", "+ws", help="write back modified seed (only with --seed)"),
            _Option(
                "--write-seed-file",
                "+wf",
                1,
                "[f]ilename: string (only with --seed)",
                "write modified seed to file f",
            ),
        ),
    ),
    _Section(
        "peer authentication:",
        sub=True,
        options=(
            _Option(
                "--require-peer-cert",
                "-rc",
                help="verify peer certificate, fail if absent (default)",
            ),
            _Option("--verify-peer-cert", "-vc", help="verify peer certificate if present"),
            _Option("--ignore-peer-cert", "-ic", help="don't verify peer certificate"),
        ),
    ),
    _Section("output options:"),
    _Section(
        "general:",
        sub=True,
        options=(
            _Option(
                "--output-directory",
                "-od",
                1,
                f'[d]irectory: string (default: "{DEFAULTS.output_dir}")',
                "write received objects to existing directory d",
            ),
        ),
    ),
    _Section(
        "subdirectory generation:",
        sub=True,
        options=(
            _Option("--no-subdir", "-s", help="do not generate any subdirectories (default)"),
            _Option(
                "--series-date-subdir", "+ssd", help="generate subdirectories from series date"
            ),
        ),
    ),
    _Section(
        "filename generation:",
        sub=True,
        options=(
            _Option(
                "--default-filenames", "+fd", help="generate filename from instance UID (default)"
            ),
            _Option("--unique-filenames", "+fu", help="generate unique filename based on new UID"),
            _Option(
                "--short-unique-names", "+fsu", help="generate short pseudo-random unique filename"
            ),
            _Option(
                "--system-time-names", "+fst", help="generate filename from current system time"
            ),
            _Option(
                "--filename-extension",
                "-fe",
                1,
                "[e]xtension: string (default: none)",
                "append e to all generated filenames",
            ),
        ),
    ),
    _Section(
        "storage mode:",
        sub=True,
        options=(
            _Option("--normal", "-B", help="allow implicit format conversions (default)"),
            _Option("--bit-preserving", "+B", help="write dataset exactly as received"),
            _Option("--ignore", help="ignore dataset, receive but do not store it"),
        ),
    ),
    _Section(
        "storage safety (dcmrecvd only):",
        sub=True,
        options=(
            _Option(
                "--duplicates",
                values=1,
                value_help=f"[p]olicy: string (default: {DEFAULTS.duplicates.value})",
                help="(overwrite, keep-first, keep-both, reject)\n"
                "what to do when the file name exists",
            ),
            _Option(
                "--reserve-bytes",
                values=1,
                value_help="[n]umber of bytes: integer (default: 0)",
                help="refuse associations and objects while\nless than n bytes are free",
            ),
            _Option(
                "--reserve-percent",
                values=1,
                value_help="[p]ercent: integer (0..100, default: 0)",
                help="refuse associations and objects while\nless than p % of the disk is free",
            ),
            _Option(
                "--benchmark-no-fsync",
                help="BENCHMARKING ONLY: do not fsync, so Success\n"
                "no longer means the object is on disk",
            ),
        ),
    ),
)

_OPTIONS: dict[str, _Option] = {
    name: option
    for section in _SECTIONS
    for option in section.options
    for name in (option.long, option.short)
    if name
}

# -ll accepts log4cplus's names, compared in ASCII upper case.
_LOG_LEVEL_NAMES: dict[str, LogLevel] = {
    "OFF": LogLevel.FATAL,  # Settings has no "off"; fatal is the nearest (and also quiet)
    "FATAL": LogLevel.FATAL,
    "ERROR": LogLevel.ERROR,
    "WARN": LogLevel.WARN,
    "INFO": LogLevel.INFO,
    "DEBUG": LogLevel.DEBUG,
    "TRACE": LogLevel.TRACE,
    "ALL": LogLevel.TRACE,
}
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_INFO_ENABLED = (LogLevel.INFO, LogLevel.DEBUG, LogLevel.TRACE)


# --- Command files ---------------------------------------------------------------------


def expand_command_files(args: Sequence[str]) -> list[str]:
    """Replace each `@file` argument by the tokens in that file (not recursively)."""
    expanded: list[str] = []
    for arg in args:
        if len(arg) > 1 and arg.startswith("@"):
            expanded += split_command_file(_read_command_file(arg[1:]))
        else:
            expanded.append(arg)
    return expanded


def _read_command_file(name: str) -> str:
    try:
        return os.fsdecode(Path(name).read_bytes())
    except IsADirectoryError:
        return ""  # DCMTK's ifstream opens a directory and reads nothing from it
    except OSError:
        raise UsageError(f"Cannot open command file '{name}'") from None


def split_command_file(text: str) -> list[str]:
    """Tokens of a command file: blanks separate, '...' and "..." group (even nothing)."""
    tokens: list[str] = []
    token = ""
    quote = ""
    for char in text:
        if char in "\"'" and quote in ("", char):
            if quote:
                tokens.append(token)  # a closing quote ends a token, even an empty one
                token = ""
            quote = "" if quote else char
        elif char in " \t\n\r" and not quote:
            if token:
                tokens.append(token)
                token = ""
        else:
            token += char
    if token:
        tokens.append(token)
    return tokens


# --- Scanning: tokens -> options with their values, and parameters ----------------------


@dataclass(frozen=True)
class _Occurrence:
    name: str  # the long name
    values: tuple[str, ...]
    position: int  # index among the options on the command line


@dataclass(frozen=True)
class _CommandLine:
    arguments: tuple[str, ...]  # what --arguments prints: options in their long form
    options: tuple[_Occurrence, ...]
    params: tuple[str, ...]

    def find_all(self, name: str) -> list[_Occurrence]:
        """Every `name`, left to right (options that add to a list)."""
        return [occurrence for occurrence in self.options if occurrence.name == name]

    def find(self, name: str, after: int = -1) -> _Occurrence | None:
        """The rightmost `name` that lies right of option number `after`."""
        for occurrence in reversed(self.options):
            if occurrence.position <= after:
                return None
            if occurrence.name == name:
                return occurrence
        return None


class _Block:
    """DCMTK's option block: each find() looks only right of the last option found."""

    def __init__(self, command: _CommandLine) -> None:
        self._command = command
        self._last = -1

    def find(self, name: str) -> _Occurrence | None:
        occurrence = self._command.find(name, self._last)
        if occurrence is not None:
            self._last = occurrence.position
        return occurrence


def _is_option(arg: str) -> bool:
    # "-5" and "+5" are parameters (numbers), as are "-" and "+".
    return len(arg) >= 2 and arg[0] in "+-" and arg[1] not in "0123456789"


def _scan(args: Sequence[str]) -> _CommandLine | Help | Version | ListCiphers:
    arguments: list[str] = []
    options: list[_Occurrence] = []
    params: list[str] = []
    tokens = iter(args)
    remaining = len(args)
    for arg in tokens:
        remaining -= 1
        if not _is_option(arg):
            params.append(arg)
            arguments.append(arg)
            continue
        option = _OPTIONS.get(arg)
        if option is None:
            raise UsageError(f"Unknown option {arg}")
        if option.values > remaining:
            raise UsageError(f"Missing value for option {option.long}")
        values = tuple(next(tokens) for _ in range(option.values))
        remaining -= option.values
        options.append(_Occurrence(option.long, values, len(options)))
        arguments += (option.long, *values)
    command = _CommandLine(tuple(arguments), tuple(options), tuple(params))
    if not arguments:
        return Help()
    if command.find("--help"):
        return Help()
    if command.find("--version"):
        return Version()
    if command.find("--list-ciphers"):
        return ListCiphers()
    if not params:
        raise UsageError("Missing parameter port")
    if len(params) > 1:
        raise UsageError("Too many parameters")
    return command


# --- Evaluation, in the order DCMTK's dcmrecv checks its options -------------------------


def parse(args: Sequence[str]) -> Settings | Help | Version | ListCiphers:
    """The command line (after @file expansion) -> Settings, or the action it asks for.

    Raises UsageError with DCMTK's message. With --log-config, the --verbose-pc check
    needs the configured loggers, so main() makes it after setting them up.
    """
    command = _scan(args)
    if not isinstance(command, _CommandLine):
        return command
    logging_settings = _logging_options(command)
    try:
        return _settings(command, logging_settings)
    except UsageError as error:
        raise UsageError(error.message, logging=logging_settings) from None


def _logging_options(command: _CommandLine) -> Settings:
    block = _Block(command)
    level = _choose(
        block,
        {"--debug": LogLevel.DEBUG, "--verbose": LogLevel.INFO, "--quiet": LogLevel.FATAL},
    )
    log_level = command.find("--log-level")
    if log_level is not None:
        if level is not None:
            raise UsageError("--log-level not allowed with --verbose, --debug or --quiet")
        level = _LOG_LEVEL_NAMES.get(log_level.values[0].translate(_ASCII_UPPER))
        if level is None:
            raise UsageError("Invalid log level for --log-level option")
    log_config = command.find("--log-config")
    if log_config is None:
        return Settings(log_level=level or DEFAULTS.log_level)
    if log_level is not None:
        raise UsageError("--log-config not allowed with --log-level")
    if level is not None:
        raise UsageError("--log-config not allowed with --verbose, --debug or --quiet")
    problem = logs.config_problem(log_config.values[0])
    if problem is not None:
        raise UsageError(problem)
    return Settings(log_config=Path(log_config.values[0]))


def _settings(command: _CommandLine, logging_settings: Settings) -> Settings:
    verbose_pc = command.find("--verbose-pc") is not None
    if (
        verbose_pc
        and logging_settings.log_config is None
        and logging_settings.log_level not in _INFO_ENABLED
    ):
        raise UsageError(VERBOSE_PC_ERROR)

    config = command.find("--config-file")
    block = _Block(command)
    aetitle = block.find("--aetitle")
    use_called_aetitle = block.find("--use-called-aetitle") is not None
    check_called_aetitle = command.find("--check-called-aetitle") is not None
    acse_timeout = _unsigned(command.find("--acse-timeout"), low=1)
    dimse_timeout = _unsigned(command.find("--dimse-timeout"), low=1)
    max_pdu = _unsigned(command.find("--max-pdu"), low=MIN_PDU, high=MAX_PDU)
    host_lookup = command.find("--disable-host-lookup") is None

    output_dir = command.find("--output-directory")
    subdir = _choose(
        _Block(command),
        {"--no-subdir": SubdirMode.NONE, "--series-date-subdir": SubdirMode.SERIES_DATE},
    )
    naming = _choose(
        _Block(command),
        {
            "--default-filenames": NamingScheme.DEFAULT,
            "--unique-filenames": NamingScheme.UNIQUE,
            "--short-unique-names": NamingScheme.SHORT_UNIQUE,
            "--system-time-names": NamingScheme.SYSTEM_TIME,
        },
    )
    extension = command.find("--filename-extension")
    tls_settings = _tls(command)
    storage = _storage_mode(command, subdir or DEFAULTS.subdir)
    duplicates = _duplicates(command.find("--duplicates"))
    reserve_bytes = _unsigned(command.find("--reserve-bytes"), low=0)
    reserve_percent = _unsigned(command.find("--reserve-percent"), low=0, high=100)
    port = _port(command.params[0])

    return dataclasses.replace(
        logging_settings,
        port=port,
        aetitle=DEFAULTS.aetitle if aetitle is None else aetitle.values[0],
        use_called_aetitle=use_called_aetitle,
        check_called_aetitle=check_called_aetitle,
        acse_timeout=DEFAULTS.acse_timeout if acse_timeout is None else acse_timeout,
        dimse_timeout=dimse_timeout,
        max_pdu=DEFAULTS.max_pdu if max_pdu is None else max_pdu,
        host_lookup=host_lookup,
        config_file=None if config is None else Path(config.values[0]),
        profile_name=None if config is None else config.values[1],
        output_dir=DEFAULTS.output_dir if output_dir is None else output_dir.values[0],
        subdir=subdir or DEFAULTS.subdir,
        naming=naming or DEFAULTS.naming,
        extension=DEFAULTS.extension if extension is None else extension.values[0],
        storage=storage,
        tls=tls_settings,
        duplicates=duplicates,
        free_space_reserve_bytes=reserve_bytes or 0,
        free_space_reserve_percent=reserve_percent or 0,
        benchmark_skip_fsync=command.find("--benchmark-no-fsync") is not None,
        verbose_pc=verbose_pc,
    )


def _choose(block: _Block, choices: dict[str, _T]) -> _T | None:
    """The value of the block's winning option, checked in `choices` order."""
    chosen: _T | None = None
    for name, value in choices.items():
        if block.find(name) is not None:
            chosen = value
    return chosen


def _tls(command: _CommandLine) -> TlsSettings | None:
    """The TLS options, checked as DCMTK's DcmTLSOptions checks them."""
    block = _Block(command)
    block.find("--disable-tls")
    enable = block.find("--enable-tls")

    def needs(option: str, other: str = "--enable-tls", present: bool = enable is not None) -> None:
        if not present:
            raise UsageError(f"{option} only allowed with {other}")

    password: str | None = None
    block = _Block(command)
    for name in ("--std-passwd", "--use-passwd", "--null-passwd"):
        found = block.find(name)
        if found is not None:
            needs(name)
            password = {"--std-passwd": None, "--null-passwd": ""}.get(name, "".join(found.values))
    key_format = KeyFormat.PEM
    block = _Block(command)
    for name, value in (("--pem-keys", KeyFormat.PEM), ("--der-keys", KeyFormat.DER)):
        if block.find(name) is not None:
            needs(name)
            key_format = value
    lists: dict[str, tuple[Path, ...]] = {}
    for name in ("--add-cert-file", "--add-cert-dir", "--add-crl-file"):
        found_all = command.find_all(name)
        if found_all:
            needs(name)
        lists[name] = tuple(Path(o.values[0]) for o in found_all)
    crl_check = CrlCheck.LEAF if lists["--add-crl-file"] else CrlCheck.NONE
    block = _Block(command)
    for name, check in (("--enable-crl-vfy", CrlCheck.LEAF), ("--enable-crl-all", CrlCheck.CHAIN)):
        if block.find(name) is not None:
            needs(name)
            crl_check = check
    profile = TlsProfile.BCP195_ND
    block = _Block(command)
    for name, chosen in _TLS_PROFILES.items():
        if block.find(name) is not None:
            # DCMTK 3.6.7 names +pa by an older name in this one message.
            needs("--profile-basic" if name == "--profile-aes" else name)
            profile = chosen
    ciphers = command.find_all("--cipher")
    if ciphers:
        needs("--cipher")
        if profile is TlsProfile.BCP195_EX:
            raise UsageError("--cipher not allowed with --profile-bcp195-ex")
    dh = command.find("--dhparam")
    if dh is not None:
        needs("--dhparam")
    seed = command.find("--seed")
    if seed is not None:
        needs("--seed")
    block = _Block(command)
    for name in ("--write-seed", "--write-seed-file"):
        if block.find(name) is not None:
            needs(name, "--seed", seed is not None)
    peer = PeerCertificate.REQUIRE
    block = _Block(command)
    for name, mode in _PEER_CERTIFICATE.items():
        if block.find(name) is not None:
            needs(name)
            peer = mode
    if enable is None:
        return None
    return TlsSettings(
        private_key=Path(enable.values[0]),
        certificate=Path(enable.values[1]),
        password=password,
        key_format=key_format,
        ca_files=lists["--add-cert-file"],
        ca_directories=lists["--add-cert-dir"],
        crl_files=lists["--add-crl-file"],
        crl_check=crl_check,
        profile=profile,
        ciphers=tuple(o.values[0] for o in ciphers),
        dh_parameters=None if dh is None else Path(dh.values[0]),
        peer_certificate=peer,
    )


_TLS_PROFILES = {
    "--profile-bcp195-nd": TlsProfile.BCP195_ND,
    "--profile-bcp195": TlsProfile.BCP195,
    "--profile-bcp195-ex": TlsProfile.BCP195_EX,
    "--profile-aes": TlsProfile.AES,
    "--profile-null": TlsProfile.NULL,
}
_PEER_CERTIFICATE = {
    "--require-peer-cert": PeerCertificate.REQUIRE,
    "--verify-peer-cert": PeerCertificate.VERIFY,
    "--ignore-peer-cert": PeerCertificate.IGNORE,
}


def _storage_mode(command: _CommandLine, subdir: SubdirMode) -> StorageMode:
    block = _Block(command)
    mode = StorageMode.NORMAL
    if block.find("--normal") is not None:
        mode = StorageMode.NORMAL
    if block.find("--bit-preserving") is not None:
        # Checked whenever +B is seen, even if a later --ignore wins the block.
        if subdir is SubdirMode.SERIES_DATE:
            raise UsageError("--bit-preserving not allowed with --series-date-subdir")
        mode = StorageMode.BIT_PRESERVING
    if block.find("--ignore") is not None:
        mode = StorageMode.IGNORE
    return mode


def _duplicates(occurrence: _Occurrence | None) -> DuplicatePolicy:
    if occurrence is None:
        return DEFAULTS.duplicates
    try:
        return DuplicatePolicy(occurrence.values[0])
    except ValueError:
        raise UsageError(
            f"Invalid value for option {occurrence.name} ({occurrence.values[0]})"
        ) from None


def _scan_ulong(text: str) -> int | None:
    """The number C's sscanf("%lu") reads from `text`, or None if it reads none."""
    match = re.match(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)", text)
    if match is None:
        return None
    digits = match[2].lstrip("0") or "0"
    if len(digits) > len(str(_ULONG_MAX)) or int(digits) > _ULONG_MAX:
        return _ULONG_MAX
    value = int(digits)
    # strtoul negates in unsigned arithmetic: "-5" is a huge number, not an error.
    return -value % 2**64 if match[1] == "-" else value


def _unsigned(occurrence: _Occurrence | None, low: int, high: int | None = None) -> int | None:
    """An option's integer value, range-checked with DCMTK's messages."""
    if occurrence is None:
        return None
    text = occurrence.values[0]
    value = _scan_ulong(text)
    if value is None or text.lstrip(" ").startswith("-"):
        # DCMTK omits the value from the message when it is empty.
        detail = f" ({text})" if text else ""
        raise UsageError(f"Invalid value for option {occurrence.name}{detail}")
    if value < low:
        raise UsageError(f"Invalid value for option {occurrence.name} (underflow: {text})")
    if high is not None and value > high:
        raise UsageError(f"Invalid value for option {occurrence.name} (overflow: {text})")
    return value


def _port(text: str) -> int:
    # Unlike option values, the parameter is not checked for a minus sign.
    value = _scan_ulong(text)
    if value is None:
        raise UsageError(f"Invalid parameter value {text}")
    if value < 1:
        raise UsageError(f"Invalid parameter value {text} (underflow)")
    if value > MAX_PORT:
        raise UsageError(f"Invalid parameter value {text} (overflow)")
    return value


def arguments_message(program: str, args: Sequence[str]) -> str | None:
    """What --arguments logs (DCMTK's text), or None if it is not on the command line."""
    command = _scan(args)
    if not isinstance(command, _CommandLine) or command.find("--arguments") is None:
        return None
    # DCMTK counts empty arguments but does not print them.
    quoted = "".join(f"'{arg}' " for arg in command.arguments if arg)
    return f"calling '{program}' with {len(command.arguments)} arguments: {quoted}\n"


# --- Texts -------------------------------------------------------------------------------


def _header() -> str:
    return f"{RCSID}\n\n{PROGRAM}: {DESCRIPTION}\n"


def error_text(message: str) -> str:
    """What DCMTK prints on stderr for a command-line error."""
    return f"{_header()}error: {message}\n"


def help_text() -> str:
    """--help, laid out as OFCommandLine does it."""
    params = f"parameters:\n  {'port':<{_PARAM_WIDTH}}  tcp/ip port number to listen on\n"
    options = "".join(_section_text(section) for section in _SECTIONS)
    return f"{_header()}usage: {PROGRAM} [options] port\n\n{params}\n{options}\n"


def _section_text(section: _Section) -> str:
    indent = 4 if section.sub else 2
    short = max([section.short_width, *(len(o.short) for o in section.options)])
    long = max([_LONG_WIDTH, *(len(o.long) for o in section.options)])
    text_column = indent + short + long + 4
    lines = [("  " if section.sub else "") + section.title]
    for option in section.options:
        line = f"{'':{indent}}{option.short:<{short}}  {option.long:<{long}}  "
        if option.value_help:
            line += option.value_help + "\n" + " " * text_column
        lines.append(line + option.help.replace("\n", "\n" + " " * text_column))
    return "".join(line + "\n" for line in lines)


def version_text() -> str:
    """--version: DCMTK's layout, with our platform and the libraries we run on."""
    return (
        f"{_header()}\n"
        f"Host type: {platform.machine()}-{sys.platform}\n"
        f"Character encoding: {locale.getencoding() or 'system default (unknown)'}\n"
        "\n"
        "External libraries used:\n"
        f"- Python {platform.python_version()}\n"
        f"- pynetdicom {pynetdicom.__version__}\n"
        f"- pydicom {pydicom.__version__}\n"
    )


# --- The program -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """dcmrecv: parse `argv` (default: sys.argv[1:]), then run the receiver; the exit code."""
    program = sys.argv[0] if argv is None else PROGRAM
    args = sys.argv[1:] if argv is None else argv
    try:
        return _main(program, args)
    except UsageError as error:
        if not error.quiet:
            sys.stderr.write(error_text(error.message))
        return EXIT_SYNTAX_ERROR


def _main(program: str, args: list[str]) -> int:
    expanded = expand_command_files(args)
    try:
        result = parse(expanded)
    except UsageError as error:
        if error.logging is None:
            raise
        # DCMTK has set up its logger, and echoed --arguments, before it finds this error.
        _start_logging(error.logging, program, expanded)
        raise UsageError(error.message, quiet=_quiet()) from None
    if isinstance(result, Help):
        sys.stdout.write(help_text())
        return EXIT_OK
    if isinstance(result, Version):
        sys.stdout.write(version_text())
        return EXIT_OK
    if isinstance(result, ListCiphers):
        sys.stdout.write(version_text() + "\nSupported TLS ciphersuites are:\n" + cipher_list())
        return EXIT_OK
    _start_logging(result, program, expanded)
    if result.verbose_pc and not LOG.isEnabledFor(logging.INFO):
        # Only with --log-config: parse() checks the level options itself.
        raise UsageError(VERBOSE_PC_ERROR, quiet=_quiet())
    LOG.debug("%s\n", RCSID)
    # Imported here so that the grammar (and --help) does not need the network stack.
    from dcmrecvd.apps import dcmrecv_life  # noqa: PLC0415

    return dcmrecv_life.run(result)


def _start_logging(settings: Settings, program: str, args: Sequence[str]) -> None:
    try:
        logs.setup(settings)
    except logs.LogConfigError as exc:
        raise UsageError(str(exc)) from exc
    message = arguments_message(program, args)
    if message is not None:
        logs.announce(message)


def _quiet() -> bool:
    # DCMTK stops printing errors once its root logger does not show them.
    return not logging.getLogger().isEnabledFor(logging.ERROR)
