"""dcmrecvd's INI file -> one Settings and the negotiation profile it serves.

The file has a `[receiver]` section (every receiver knob), an optional `[logging]`
section, optional `[metrics]` (the Prometheus endpoint) and `[status]` (the socket that
`dcmrecvd status` reads) sections, and any number of `[profile NAME]` sections. A
profile either lists its SOP classes and transfer syntaxes itself, or points at a DCMTK
asconfig file and one of its profiles. `[completion]`, `[events]` and `[hook NAME]`
sections turn on series and study completion, manifests and hooks (Settings.events);
`[commitment]` turns on Storage Commitment (Settings.commitment).
Nothing is required: an empty file serves Verification and every storage SOP class with
every transfer syntax on port 11112 into ./incoming, so the common case is three lines
(`[receiver]`, `port = ...`, `output-directory = ...`).

Every error names the file, the line and the reason, as `--check-config` prints them.
Unknown sections and keys are errors, so that a typo never silently means a default.
"""

from __future__ import annotations

import configparser
import dataclasses
import enum
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pydicom.uid
import pynetdicom.sop_class

from dcmrecvd import hookcommand, nodename, pathtemplate
from dcmrecvd.config import asconfig
from dcmrecvd.config.access import AccessPolicy, Network, PeerRule, ProxyPolicy
from dcmrecvd.config.uidnames import is_uid, resolve_dcmtk
from dcmrecvd.profiles import (
    AcceptedContext,
    Profile,
    Role,
    all_storage_profile,
    all_storage_sop_classes,
    all_transfer_syntaxes,
)
from dcmrecvd.settings import (
    MAX_PDU,
    MIN_PDU,
    CommitmentSettings,
    CompletionRule,
    CrlCheck,
    DuplicatePolicy,
    EventKind,
    EventSettings,
    Hook,
    LogLevel,
    NamingScheme,
    PeerCertificate,
    ReportDestination,
    Settings,
    StorageMode,
    SubdirMode,
    TlsProfile,
    TlsSettings,
)

DEFAULT_PATH = Path("/etc/dcmrecvd/dcmrecvd.conf")
DEFAULT_PROFILE = "default"
# The name of the configuration that dcmrecvd --no-config gives.
EMBEDDED = "<embedded defaults>"
ALL_STORAGE = "all-storage"
ALL_SYNTAXES = "all"

# The daemon's defaults where they differ from dcmrecv's: larger PDUs, no reverse DNS on
# every association, no DCMTK 128-context cap, and a directory of its own.
DAEMON_DEFAULTS = Settings(
    aetitle="DCMRECVD",
    port=11112,
    output_dir="incoming",
    max_pdu=MAX_PDU,
    host_lookup=False,
    context_list_limit=None,
    log_level=LogLevel.INFO,
    check_sop_uids=True,
)

# Most worker processes [receiver] workers may ask for.
MAX_WORKERS = 64
# Most hooks [events] hook-concurrency may run at once.
MAX_HOOK_CONCURRENCY = 64
# [events] directory when not set, relative to the index file's directory: the leading
# dot keeps it apart from received files when the index is in the output directory.
EVENTS_DIRECTORY = ".events"
# PS3.5 6.2: an AE title is at most 16 characters of the default repertoire, no backslash.
_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")
_LIST_SEPARATORS = re.compile(r"[\s,]+")
# What turns [metrics] port and [status] socket off.
_OFF = ("none", "off")
# sun_path holds 108 bytes with the terminating NUL (unix(7)).
MAX_SOCKET_PATH = 107
# PS3.5 6.2: Modality is a CS value: upper-case letters, digits and _ (no space in a code).
_MODALITY = re.compile(r"[A-Z0-9_]{1,16}")
# Profile and peer names: also asconfig section names, which keep only these.
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_SECTION_LINE = re.compile(r"\s*\[(?P<name>[^\]]+)\]")
_KEY_LINE = re.compile(r"(?P<key>[^\s=:#;][^=:]*?)\s*[=:]")

_T = TypeVar("_T")
_E = TypeVar("_E", bound=enum.Enum)


class ConfigError(Exception):
    """A configuration that cannot be used: where it is wrong and why."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        super().__init__(path, line, reason)
        self.path = path
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class Config:
    """What one reading of the INI file gives the receiver."""

    path: str
    settings: Settings
    profile: Profile
    # The profiles that the file defines, by name (`profile` may be the embedded one).
    profiles: Mapping[str, Profile]
    # The profiles that [peer] rules name, the embedded default among them if named.
    peer_profiles: Mapping[str, Profile] = dataclasses.field(default_factory=dict)


def _keyword_uid(name: str) -> str | None:
    # pynetdicom names every SOP class by keyword, pydicom every transfer syntax.
    for module in (pynetdicom.sop_class, pydicom.uid):
        found = getattr(module, name, None)
        if isinstance(found, pydicom.uid.UID):
            return str(found)
    return None


class _Reader:
    """One parsed INI file with the line of every section and key, for error messages."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.parser = configparser.ConfigParser(
            interpolation=None,
            inline_comment_prefixes=("#", ";"),
            empty_lines_in_values=False,
            default_section="\x00no default section",
        )
        try:
            self.parser.read_string(text, source=path)
        except configparser.Error as exc:
            raise ConfigError(path, getattr(exc, "lineno", None), _parser_reason(exc)) from None
        self.lines: dict[tuple[str, str | None], int] = {}
        section = ""
        for number, line in enumerate(text.splitlines(), 1):
            if match := _SECTION_LINE.match(line):
                section = match["name"].strip()
                self.lines.setdefault((section, None), number)
            elif section and (match := _KEY_LINE.match(line)):
                self.lines.setdefault((section, match["key"].strip().lower()), number)

    def error(self, section: str, key: str | None, reason: str) -> ConfigError:
        line = self.lines.get((section, key)) or self.lines.get((section, None))
        return ConfigError(self.path, line, reason)

    def check_keys(self, section: str, allowed: frozenset[str]) -> None:
        for key in self.parser[section]:
            if key not in allowed:
                raise self.error(section, key, f"unknown key '{key}' in section [{section}]")


def _parser_reason(exc: configparser.Error) -> str:
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"section [{exc.section}] appears twice"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"key '{exc.option}' appears twice in section [{exc.section}]"
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return "a key before the first [section]"
    if isinstance(exc, configparser.ParsingError):
        return "not a [section], a 'key = value' line or a comment"
    return exc.message


# --- values ------------------------------------------------------------------------------


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"not a whole number: '{text}'") from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise ValueError(f"{value} is out of range (must be {bound})")
        return value

    return parse


def _optional_seconds(text: str) -> int | None:
    return None if text.lower() in ("", "none", "unlimited") else _integer(1)(text)


def _boolean(text: str) -> bool:
    value = configparser.ConfigParser.BOOLEAN_STATES.get(text.lower())
    if value is None:
        raise ValueError(f"not yes or no: '{text}'")
    return value


def _choice(choices: Mapping[str, _T]) -> Callable[[str], _T]:
    def parse(text: str) -> _T:
        if text not in choices:
            raise ValueError(f"'{text}' is not one of: {', '.join(choices)}")
        return choices[text]

    return parse


def _aetitle(text: str) -> str:
    if not _AE_TITLE.fullmatch(text) or not text.strip():
        raise ValueError(f"not an AE title (1 to 16 printable ASCII characters, no '\\'): '{text}'")
    return text


def _text(text: str) -> str:
    return text


def _log_destination(text: str) -> str:
    if text not in ("auto", "stderr", "journal", "syslog") and not text.startswith("/"):
        raise ValueError(f"'{text}' is not auto, stderr, journal, syslog or an absolute path")
    return text


_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)(?P<binary>i?)b?", re.IGNORECASE)


def size(text: str) -> int:
    """`500MB`, `1GiB`, `4096` -> bytes."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size (like 500MB, 10GiB): '{text}'")
    power = " kmgt".index(match["unit"].lower() or " ")
    scale = (1024 if match["binary"] else 1000) ** power
    return int(float(match["number"]) * scale)


_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>s|min|h)?", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "min": 60, "h": 3600}


def duration(text: str) -> float:
    """`90`, `90s`, `1.5min`, `2h` -> seconds, more than 0."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration (like 90s, 1.5min, 2h): '{text}'")
    seconds = float(match["number"]) * _UNIT_SECONDS[(match["unit"] or "s").lower()]
    if seconds <= 0:
        raise ValueError(f"must be more than 0: '{text}'")
    return seconds


def _optional_duration(text: str) -> float | None:
    return None if text.lower() == "none" else duration(text)


def _modalities(text: str) -> tuple[str, ...]:
    items = _items(text)
    for item in items:
        if not _MODALITY.fullmatch(item):
            raise ValueError(
                f"not a Modality code (1 to 16 of A-Z, 0-9 and _, like CT or SR): '{item}'"
            )
    return tuple(dict.fromkeys(items))


def _manifests(text: str) -> frozenset[EventKind]:
    items = _items(text)
    if items == ["none"]:
        return frozenset()
    return frozenset(map(_enum(EventKind), items))


def _positive_size(text: str) -> int:
    value = size(text)
    if value <= 0:
        raise ValueError(f"must be more than 0: '{text}'")
    return value


def _optional_text(text: str) -> str | None:
    return text or None


def free_space_reserve(text: str) -> tuple[int, float]:
    """`10GiB`, `5%` or both (`10GiB 5%`) -> (bytes, percent); `0` turns the guard off."""
    reserve_bytes, percent = 0, 0.0
    for item in _items(text):
        if item.endswith("%"):
            try:
                percent = float(item[:-1])
            except ValueError:
                raise ValueError(f"not a percentage: '{item}'") from None
            if not 0 <= percent < 100:
                raise ValueError(f"{item} is out of range (0% to 99%)")
            continue
        if _SIZE.fullmatch(item) is None:
            raise ValueError(f"not a size (like 500MB, 10GiB) or a percentage: '{item}'")
        reserve_bytes = size(item)
    return reserve_bytes, percent


def _path_template(text: str) -> pathtemplate.Template:
    try:
        return pathtemplate.parse(text)
    except pathtemplate.TemplateError as exc:
        raise ValueError(str(exc)) from None


def _enum(enum_type: type[_E]) -> Callable[[str], _E]:
    return _choice({str(member.value): member for member in enum_type})


def _ip_address(text: str) -> str:
    # Resolving a host name at start would make the endpoint depend on the resolver.
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"not an IP address (a host name is not allowed): '{text}'") from None


def _optional_port(text: str) -> int | None:
    return None if text.lower() in _OFF else _integer(1, 65535)(text)


def _socket_path(text: str) -> str | None:
    if text.lower() in _OFF:
        return None
    if not text.startswith("/"):
        raise ValueError(f"not an absolute path: '{text}'")
    if len(text.encode()) > MAX_SOCKET_PATH:
        raise ValueError(
            f"{len(text.encode())} bytes is too long for an AF_UNIX socket path"
            f" (at most {MAX_SOCKET_PATH})"
        )
    return text


# The keys of a listener's PROXY protocol, in [receiver] and [tls].
_PROXY_KEYS = frozenset({"proxy-protocol", "trusted-proxies"})
# [receiver] key -> (Settings field, value parser)
_RECEIVER_KEYS: dict[str, tuple[str, Callable[[str], object]]] = {
    "aetitle": ("aetitle", _aetitle),
    "port": ("port", _integer(1, 65535)),
    "bind-address": ("bind_address", _text),
    "output-directory": ("output_dir", _text),
    "node-name": ("node_name", nodename.check),
    "subdirectories": ("subdir", _enum(SubdirMode)),
    "naming": ("naming", _enum(NamingScheme)),
    "path-template": ("path_template", _path_template),
    "index": ("index_path", _optional_text),
    "extension": ("extension", _text),
    "storage": ("storage", _enum(StorageMode)),
    "max-pdu": ("max_pdu", _integer(MIN_PDU, MAX_PDU)),
    "acse-timeout": ("acse_timeout", _integer(1)),
    "dimse-timeout": ("dimse_timeout", _optional_seconds),
    "max-associations": ("max_associations", _integer(1)),
    "host-lookup": ("host_lookup", _boolean),
    "check-called-aetitle": ("check_called_aetitle", _boolean),
    "duplicates": ("duplicates", _enum(DuplicatePolicy)),
    "stop-grace": ("stop_grace", _integer(0)),
    "workers": ("workers", _integer(1, MAX_WORKERS)),
    "check-sop-uids": ("check_sop_uids", _boolean),
    "quarantine-directory": ("quarantine_dir", _optional_text),
    "quarantine-size": ("quarantine_max_bytes", _positive_size),
}
# Keys that are not one Settings field each.
_RECEIVER_ONLY = frozenset({"profile", "free-space-reserve", "default-policy"}) | _PROXY_KEYS
# A CompletionRule's keys, in [completion], [peer NAME] and [profile NAME].
_RULE_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "expected-series": ("expected_series", _integer(1)),
    "required-modalities": ("required_modalities", _modalities),
}
_RULE_KEYS = frozenset(_RULE_FIELDS)
# A [peer NAME]'s Storage Commitment report destination.
_COMMITMENT_PEER_KEYS = frozenset(
    {"commitment-aetitle", "commitment-host", "commitment-port", "commitment-tls"}
)
_PEER_KEYS = (
    frozenset({"calling-aetitle", "addresses", "called-aetitles", "profile", "max-associations"})
    | _RULE_KEYS
    | _COMMITMENT_PEER_KEYS
)
_LOGGING_KEYS: dict[str, tuple[str, Callable[[str], object]]] = {
    "level": ("log_level", _enum(LogLevel)),
    "destination": ("log_destination", _log_destination),
}
_PROFILE_KEYS = frozenset({"sop-classes", "transfer-syntaxes", "roles", "extended-negotiation"})
_ASCONFIG_KEYS = frozenset({"asconfig", "asconfig-profile"})
_METRICS_KEYS: dict[str, tuple[str, Callable[[str], object]]] = {
    "address": ("metrics_address", _ip_address),
    "port": ("metrics_port", _optional_port),
}
_STATUS_KEYS: dict[str, tuple[str, Callable[[str], object]]] = {
    "socket": ("status_socket", _socket_path),
}
# [completion], [events] (but directory) and [hook NAME] key -> (field, value parser)
_COMPLETION_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "series-quiet": ("series_quiet", duration),
    "study-quiet": ("study_quiet", duration),
    "max-age": ("max_age", _optional_duration),
}
_EVENTS_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "manifests": ("manifests", _manifests),
    "hook-concurrency": ("hook_concurrency", _integer(1, MAX_HOOK_CONCURRENCY)),
}
_HOOK_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "event": ("event", _enum(EventKind)),
    # CommandError is a ValueError: reported at the command's line like any bad value.
    "command": ("command", hookcommand.parse),
    "modalities": ("modalities", _modalities),
    "timeout": ("timeout", duration),
    "retries": ("retries", _integer(0)),
    "retry-delay": ("retry_delay", duration),
}


def _fields_from(
    reader: _Reader, section: str, keys: Mapping[str, tuple[str, Callable[[str], object]]]
) -> dict[str, Any]:
    """The dataclass fields that `section` sets, by field name; none without the section."""
    fields: dict[str, Any] = {}
    for key, (field, parse) in keys.items():
        text = reader.parser.get(section, key, fallback=None)
        if text is None:
            continue
        try:
            fields[field] = parse(text)
        except ValueError as exc:
            raise reader.error(section, key, f"{key}: {exc}") from None
    return fields


def _settings_from(
    reader: _Reader,
    section: str,
    keys: Mapping[str, tuple[str, Callable[[str], object]]],
    settings: Settings,
) -> Settings:
    return dataclasses.replace(settings, **_fields_from(reader, section, keys))


# --- profiles ----------------------------------------------------------------------------


def _items(text: str) -> list[str]:
    return [item for item in _LIST_SEPARATORS.split(text) if item]


def resolve_uid(name: str) -> str | None:
    """A UID, a DCMTK name (CTImageStorage) or a DICOM keyword (CTImageStorage,
    ExplicitVRLittleEndian) -> the UID; None when it is none of these."""
    if name[:1].isdigit():
        return name if is_uid(name) else None
    dcmtk = resolve_dcmtk(name)
    if is_uid(dcmtk):
        return dcmtk
    return _keyword_uid(name)


def _uids(reader: _Reader, section: str, key: str, everything: tuple[str, str]) -> list[str]:
    word, _ = everything
    uids: list[str] = []
    for item in _items(reader.parser[section].get(key, "")):
        found = list(_everything(word)) if item == word else [resolve_uid(item)]
        if found == [None]:
            raise reader.error(section, key, f"{key}: unknown UID or name '{item}'")
        uids.extend(uid for uid in found if uid is not None and uid not in uids)
    if not uids:
        raise reader.error(section, key, f"{key}: empty (use '{word}' for {everything[1]})")
    return uids


def _everything(word: str) -> tuple[str, ...]:
    return all_storage_sop_classes() if word == ALL_STORAGE else all_transfer_syntaxes()


def _pairs(reader: _Reader, section: str, key: str) -> list[tuple[str, str]]:
    pairs = []
    for item in _items(reader.parser[section].get(key, "")):
        name, colon, value = item.rpartition(":")
        uid = resolve_uid(name) if colon else None
        if uid is None:
            raise reader.error(section, key, f"{key}: expected SOPClass:VALUE, got '{item}'")
        pairs.append((uid, value))
    return pairs


def _roles(reader: _Reader, section: str) -> tuple[tuple[str, Role], ...] | None:
    if "roles" not in reader.parser[section]:
        return None
    roles = []
    for uid, value in _pairs(reader, section, "roles"):
        try:
            roles.append((uid, Role(value.upper())))
        except ValueError:
            raise reader.error(
                section, "roles", f"roles: '{value}' is not SCU, SCP or BOTH"
            ) from None
    return tuple(roles)


def _extended(reader: _Reader, section: str) -> tuple[tuple[str, bytes], ...]:
    items = []
    for uid, value in _pairs(reader, section, "extended-negotiation"):
        try:
            data = bytes.fromhex(value)
        except ValueError:
            data = b""
        if not 0 < len(data) <= asconfig.MAX_EXTENDED_NEGOTIATION_BYTES:
            raise reader.error(
                section,
                "extended-negotiation",
                f"extended-negotiation: '{value}' is not 1 to "
                f"{asconfig.MAX_EXTENDED_NEGOTIATION_BYTES} bytes of hex",
            )
        items.append((uid, data))
    return tuple(items)


def _listed_profile(reader: _Reader, section: str, name: str) -> Profile:
    reader.check_keys(section, _PROFILE_KEYS | _RULE_KEYS)
    sop_classes = _uids(reader, section, "sop-classes", (ALL_STORAGE, "every storage class"))
    syntaxes = tuple(
        _uids(reader, section, "transfer-syntaxes", (ALL_SYNTAXES, "every transfer syntax"))
        if "transfer-syntaxes" in reader.parser[section]
        else all_transfer_syntaxes()
    )
    contexts = tuple(AcceptedContext(uid, syntaxes) for uid in sop_classes)
    profile = Profile(name, contexts, _roles(reader, section), _extended(reader, section))
    listed = set(sop_classes)
    for key, uids in (
        ("roles", [uid for uid, _ in profile.roles or ()]),
        ("extended-negotiation", [uid for uid, _ in profile.extended_negotiation]),
    ):
        stray = next((uid for uid in uids if uid not in listed), None)
        if stray is not None:
            raise reader.error(section, key, f"{key}: {stray} is not in sop-classes")
        if len(set(uids)) != len(uids):
            raise reader.error(section, key, f"{key}: a SOP class is listed twice")
    return profile


def _asconfig_profile(reader: _Reader, section: str, name: str) -> Profile:
    reader.check_keys(section, _ASCONFIG_KEYS | _RULE_KEYS)
    values = reader.parser[section]
    if "asconfig-profile" not in values or "asconfig" not in values:
        raise reader.error(section, None, "asconfig needs asconfig-profile (and the reverse)")
    path = Path(values["asconfig"])
    if not path.is_absolute():
        path = Path(reader.path).parent / path
    try:
        document = asconfig.load(path, context_list_limit=None)
        found = asconfig.select_profile(document, values["asconfig-profile"], str(path))
    except asconfig.AsConfigError as exc:
        if exc.line is not None:
            raise ConfigError(exc.path, exc.line, exc.reason) from None
        raise reader.error(section, "asconfig", f"asconfig: {exc}") from None
    return dataclasses.replace(found, name=name)


def _profiles(reader: _Reader) -> dict[str, Profile]:
    profiles = {}
    for section in reader.parser.sections():
        if section.partition(" ")[0] != "profile":
            continue
        name = _named(reader, section, "profile")
        if _ASCONFIG_KEYS & set(reader.parser[section]):
            profiles[name] = _asconfig_profile(reader, section, name)
        else:
            profiles[name] = _listed_profile(reader, section, name)
    return profiles


# --- TLS -------------------------------------------------------------------------------

_TLS_KEYS = frozenset(
    {
        "port",
        "private-key",
        "certificate",
        "password",
        "ca-certificates",
        "crl",
        "crl-check",
        "peer-certificate",
        "profile",
        "ciphers",
        "dh-parameters",
    }
    | _PROXY_KEYS
)


def _tls(reader: _Reader, settings: Settings) -> Settings:
    """[tls]: the TLS listener; files relative to the INI file's directory."""
    if not reader.parser.has_section("tls"):
        return settings
    reader.check_keys("tls", _TLS_KEYS)
    values = reader.parser["tls"]
    base = Path(reader.path).parent

    def path(text: str) -> Path:
        return base / text

    def value(key: str, parse: Callable[[str], _T], default: _T) -> _T:
        if key not in values:
            return default
        try:
            return parse(values[key])
        except ValueError as exc:
            raise reader.error("tls", key, f"{key}: {exc}") from None

    for key in ("private-key", "certificate"):
        if not values.get(key):
            raise reader.error("tls", None, f"[tls] needs {key}")
    trust = [path(item) for item in _items(values.get("ca-certificates", ""))]
    crls = tuple(path(item) for item in _items(values.get("crl", "")))
    tls_settings = TlsSettings(
        private_key=path(values["private-key"]),
        certificate=path(values["certificate"]),
        # Never a prompt: a daemon has no terminal.
        password=values.get("password", ""),
        ca_files=tuple(p for p in trust if not p.is_dir()),
        ca_directories=tuple(p for p in trust if p.is_dir()),
        crl_files=crls,
        crl_check=value("crl-check", _enum(CrlCheck), CrlCheck.LEAF if crls else CrlCheck.NONE),
        profile=value("profile", _enum(TlsProfile), TlsProfile.BCP195_ND),
        ciphers=tuple(_items(values.get("ciphers", ""))),
        dh_parameters=path(values["dh-parameters"]) if values.get("dh-parameters") else None,
        peer_certificate=value("peer-certificate", _enum(PeerCertificate), PeerCertificate.REQUIRE),
        proxy=_proxy(reader, "tls"),
    )
    port = value("port", _integer(1, 65535), settings.tls_port)
    return dataclasses.replace(settings, tls=tls_settings, tls_port=port)


# --- access control ----------------------------------------------------------------------


def _named(reader: _Reader, section: str, kind: str) -> str:
    name = section.partition(" ")[2].strip()
    if not _NAME.fullmatch(name):
        raise reader.error(
            section, None, f"[{section}]: a {kind} name is one word of letters, digits, - and _"
        )
    return name


def _networks(reader: _Reader, section: str, key: str = "addresses") -> tuple[Network, ...]:
    networks = []
    for item in _items(reader.parser[section].get(key, "")):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise reader.error(
                section, key, f"{key}: not an IP address or CIDR range: '{item}'"
            ) from None
    return tuple(networks)


def _proxy(reader: _Reader, section: str) -> ProxyPolicy | None:
    """proxy-protocol and trusted-proxies of the listener that `section` configures."""
    values: Mapping[str, str] = reader.parser[section] if reader.parser.has_section(section) else {}
    mode = values.get("proxy-protocol", "off")
    if mode not in ("off", "required"):
        raise reader.error(
            section, "proxy-protocol", f"proxy-protocol: '{mode}' is not off or required"
        )
    trusted = _networks(reader, section, "trusted-proxies") if values else ()
    if mode == "off":
        if "trusted-proxies" in values:
            raise reader.error(
                section,
                "trusted-proxies",
                "trusted-proxies: only read with proxy-protocol = required",
            )
        return None
    if not trusted:
        raise reader.error(
            section,
            "proxy-protocol",
            "proxy-protocol = required needs trusted-proxies (the balancers' addresses):"
            " a header from anyone else would let any client claim any address",
        )
    return ProxyPolicy(trusted)


def _peer(reader: _Reader, section: str, profiles: Mapping[str, Profile]) -> PeerRule:
    reader.check_keys(section, _PEER_KEYS)
    values = reader.parser[section]
    calling = values.get("calling-aetitle")
    called = _items(values.get("called-aetitles", ""))
    for key, titles in (
        ("calling-aetitle", [calling] if calling else []),
        ("called-aetitles", called),
    ):
        for title in titles:
            try:
                _aetitle(title)
            except ValueError as exc:
                raise reader.error(section, key, f"{key}: {exc}") from None
    profile = values.get("profile")
    if profile is not None and profile not in profiles and profile != DEFAULT_PROFILE:
        raise reader.error(section, "profile", f"profile: no [profile {profile}] section")
    limit = None
    if "max-associations" in values:
        try:
            limit = _integer(1)(values["max-associations"])
        except ValueError as exc:
            raise reader.error(section, "max-associations", f"max-associations: {exc}") from None
    return PeerRule(
        name=_named(reader, section, "peer"),
        calling_aetitle=calling or None,
        networks=_networks(reader, section),
        called_aetitles=tuple(called),
        profile=profile,
        max_associations=limit,
    )


def _access(reader: _Reader, profiles: Mapping[str, Profile]) -> AccessPolicy:
    rules = tuple(
        _peer(reader, section, profiles)
        for section in reader.parser.sections()
        if section.partition(" ")[0] == "peer"
    )
    default = reader.parser.get("receiver", "default-policy", fallback="accept")
    if default not in ("accept", "reject"):
        raise reader.error(
            "receiver", "default-policy", f"default-policy: '{default}' is not accept or reject"
        )
    return AccessPolicy(rules, accept_unknown=default == "accept")


# --- completion and events ---------------------------------------------------------------


def _rule(reader: _Reader, section: str) -> CompletionRule:
    return CompletionRule(**_fields_from(reader, section, _RULE_FIELDS))


def _named_rules(reader: _Reader, kind: str) -> tuple[tuple[str, CompletionRule], ...]:
    """The rules of the [peer NAME] or [profile NAME] sections that set one, in file order."""
    rules = []
    for section in reader.parser.sections():
        if section.partition(" ")[0] == kind and not (rule := _rule(reader, section)).empty:
            rules.append((_named(reader, section, kind), rule))
    return tuple(rules)


def _refuse_rules(reader: _Reader) -> None:
    """A rule without completion would silently do nothing."""
    for section in reader.parser.sections():
        if section.partition(" ")[0] not in ("peer", "profile"):
            continue
        key = next((key for key in reader.parser[section] if key in _RULE_KEYS), None)
        if key is not None:
            raise reader.error(
                section,
                key,
                f"{key}: needs a [completion] section (completion is off without"
                " [completion], [events] or a [hook NAME])",
            )


def _hook(reader: _Reader, section: str) -> Hook:
    name = _named(reader, section, "hook")
    reader.check_keys(section, frozenset(_HOOK_FIELDS))
    for key in ("event", "command"):
        if key not in reader.parser[section]:
            raise reader.error(section, None, f"[{section}] needs {key}")
    return Hook(name=name, **_fields_from(reader, section, _HOOK_FIELDS))


def _events_directory(reader: _Reader, index_path: str, output_dir: str) -> str:
    """[events] directory, relative to the index file's directory. Inside the output
    directory, its first component there must start with ".", which no path template or
    naming scheme makes, so that no received file can land in it."""
    text = reader.parser.get("events", "directory", fallback=EVENTS_DIRECTORY)
    if not text:
        raise reader.error("events", "directory", "directory: empty")
    directory = str(Path(index_path).parent / text)
    # Resolved as _check_quarantine resolves: against the daemon's working directory.
    resolved = Path(directory).resolve()
    output = Path(output_dir or ".").resolve()
    if _inside(resolved, output):
        first = next(iter(resolved.relative_to(output).parts), "")
        if not first.startswith("."):
            # Without the key, the default beside the index is at fault: point at index.
            set_here = reader.parser.has_option("events", "directory")
            section, key = ("events", "directory") if set_here else ("receiver", "index")
            raise reader.error(
                section,
                key,
                f"{key}: the events directory {directory} is inside the output directory"
                f" {output_dir or '.'}, where received files could land in it: start its"
                f" first component there with '.' (as the default {EVENTS_DIRECTORY}), which"
                " no path template makes, or put it outside",
            )
    return directory


def _check_quiet(reader: _Reader, events: EventSettings) -> None:
    if events.study_quiet < events.series_quiet:
        set_here = reader.parser.has_option("completion", "study-quiet")
        key = "study-quiet" if set_here else "series-quiet"
        raise reader.error(
            "completion",
            key,
            f"{key}: study-quiet ({events.study_quiet:g} s) is shorter than series-quiet"
            f" ({events.series_quiet:g} s); a study cannot complete before its series",
        )


def _event_sections(reader: _Reader) -> list[str]:
    return [
        section
        for section in reader.parser.sections()
        if section in ("completion", "events") or section.partition(" ")[0] == "hook"
    ]


def _events(reader: _Reader, settings: Settings, profile: str) -> EventSettings | None:
    """[completion], [events] and [hook NAME] with the rules of the peers and profiles;
    None without any of these sections. `profile` is the [receiver]'s."""
    sections = _event_sections(reader)
    if not sections:
        _refuse_rules(reader)
        return None
    if settings.index_path is None:
        raise reader.error(
            sections[0],
            None,
            f"[{sections[0]}]: completion and events keep their state in the index;"
            " set index in [receiver]",
        )
    if reader.parser.has_section("completion"):
        reader.check_keys("completion", frozenset(_COMPLETION_FIELDS) | _RULE_KEYS)
    if reader.parser.has_section("events"):
        reader.check_keys("events", frozenset(_EVENTS_FIELDS) | {"directory"})
    profile_rules = _named_rules(reader, "profile")
    events = EventSettings(
        **_fields_from(reader, "completion", _COMPLETION_FIELDS),
        **_fields_from(reader, "events", _EVENTS_FIELDS),
        rule=dict(profile_rules).get(profile, _rule(reader, "completion")),
        peer_rules=_named_rules(reader, "peer"),
        profile_rules=profile_rules,
        directory=_events_directory(reader, settings.index_path, settings.output_dir),
        hooks=tuple(_hook(reader, s) for s in sections if s.partition(" ")[0] == "hook"),
    )
    _check_quiet(reader, events)
    seen: set[str] = set()
    for section in (s for s in sections if s.partition(" ")[0] == "hook"):
        name = _named(reader, section, "hook")
        if name in seen:
            raise reader.error(section, None, f"[{section}]: a second hook named {name}")
        seen.add(name)
    return events


# --- storage commitment ------------------------------------------------------------------

_COMMITMENT_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "verify": ("verify", _boolean),
    "retry-delay": ("retry_delay", duration),
    "give-up-after": ("give_up_after", duration),
}


def _destination(reader: _Reader, section: str, settings: Settings) -> ReportDestination | None:
    """A [peer NAME]'s report destination; None when it sets none."""
    values = reader.parser[section]
    if not _COMMITMENT_PEER_KEYS & set(values):
        return None
    for key in ("commitment-host", "commitment-port"):
        if not values.get(key):
            raise reader.error(
                section,
                next(k for k in _COMMITMENT_PEER_KEYS if k in values),
                f"[{section}]: a report destination needs {key}",
            )
    fields: dict[str, Any] = {"host": values["commitment-host"]}
    for key, field, parse in (
        ("commitment-port", "port", _integer(1, 65535)),
        ("commitment-aetitle", "aetitle", _aetitle),
        ("commitment-tls", "tls", _boolean),
    ):
        if key in values:
            try:
                fields[field] = parse(values[key])
            except ValueError as exc:
                raise reader.error(section, key, f"{key}: {exc}") from None
    if fields.get("tls") and settings.tls is None:
        raise reader.error(
            section,
            "commitment-tls",
            "commitment-tls: needs a [tls] section (its certificate, key and trust)",
        )
    return ReportDestination(**fields)


def _commitment(reader: _Reader, settings: Settings) -> CommitmentSettings | None:
    """[commitment] with the [peer NAME] report destinations; None without the section."""
    peers = [s for s in reader.parser.sections() if s.partition(" ")[0] == "peer"]
    if not reader.parser.has_section("commitment"):
        for section in peers:
            key = next((k for k in reader.parser[section] if k in _COMMITMENT_PEER_KEYS), None)
            if key is not None:
                raise reader.error(
                    section, key, f"{key}: needs a [commitment] section (commitment is off)"
                )
        return None
    reader.check_keys("commitment", frozenset(_COMMITMENT_FIELDS))
    if settings.index_path is None:
        raise reader.error(
            "commitment",
            None,
            "[commitment]: a report says what the index lists as stored; set index in [receiver]",
        )
    destinations = []
    for section in peers:
        destination = _destination(reader, section, settings)
        if destination is not None:
            destinations.append((_named(reader, section, "peer"), destination))
    return CommitmentSettings(
        **_fields_from(reader, "commitment", _COMMITMENT_FIELDS),
        destinations=tuple(destinations),
    )


# --- the file ----------------------------------------------------------------------------


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _check_quarantine(reader: _Reader, settings: Settings) -> None:
    """Refused objects never land where final files do (an archiver would take them)."""
    if settings.quarantine_dir is None:
        return
    # Relative paths are relative to the daemon's working directory, as output-directory.
    quarantine = Path(settings.quarantine_dir).resolve()
    output = Path(settings.output_dir or ".").resolve()
    if _inside(quarantine, output):
        raise reader.error(
            "receiver",
            "quarantine-directory",
            f"quarantine-directory: {settings.quarantine_dir} is inside the output directory"
            f" {settings.output_dir}",
        )
    if _inside(output, quarantine):
        raise reader.error(
            "receiver",
            "quarantine-directory",
            f"quarantine-directory: the output directory {settings.output_dir} is inside"
            f" {settings.quarantine_dir}",
        )


_SECTIONS = (
    "receiver",
    "logging",
    "tls",
    "completion",
    "events",
    "metrics",
    "status",
    "commitment",
)
_NAMED_SECTIONS = ("profile", "peer", "hook")


def parse(text: str, path: str) -> Config:
    """Check an INI document; raise ConfigError on the first problem found."""
    reader = _Reader(path, text)
    for section in reader.parser.sections():
        if section not in _SECTIONS and section.partition(" ")[0] not in _NAMED_SECTIONS:
            raise reader.error(
                section,
                None,
                f"unknown section [{section}] ({', '.join(_SECTIONS)},"
                f" {', '.join(f'{kind} NAME' for kind in _NAMED_SECTIONS)})",
            )
    if reader.parser.has_section("receiver"):
        reader.check_keys("receiver", frozenset(_RECEIVER_KEYS) | _RECEIVER_ONLY)
    for section, keys in (
        ("logging", _LOGGING_KEYS),
        ("metrics", _METRICS_KEYS),
        ("status", _STATUS_KEYS),
    ):
        if reader.parser.has_section(section):
            reader.check_keys(section, frozenset(keys))
    settings = _settings_from(reader, "receiver", _RECEIVER_KEYS, DAEMON_DEFAULTS)
    settings = _settings_from(reader, "logging", _LOGGING_KEYS, settings)
    settings = _settings_from(reader, "metrics", _METRICS_KEYS, settings)
    settings = _settings_from(reader, "status", _STATUS_KEYS, settings)
    reserve = reader.parser.get("receiver", "free-space-reserve", fallback=None)
    if reserve is not None:
        try:
            reserve_bytes, percent = free_space_reserve(reserve)
        except ValueError as exc:
            raise reader.error(
                "receiver", "free-space-reserve", f"free-space-reserve: {exc}"
            ) from None
        settings = dataclasses.replace(
            settings, free_space_reserve_bytes=reserve_bytes, free_space_reserve_percent=percent
        )
    if settings.storage is StorageMode.BIT_PRESERVING and settings.subdir is SubdirMode.SERIES_DATE:
        raise reader.error(
            "receiver",
            "storage",
            "storage = bit-preserving does not go with series-date subdirectories",
        )
    if settings.path_template is not None:
        conflicting = {
            "naming": settings.naming is not NamingScheme.DEFAULT,
            "subdirectories": settings.subdir is not SubdirMode.NONE,
        }
        for key, other in conflicting.items():
            if other:
                raise reader.error(
                    "receiver",
                    key,
                    f"{key}: path-template names the files and directories; leave {key} at"
                    f" {'default' if key == 'naming' else 'none'}",
                )
    _check_quarantine(reader, settings)
    settings = dataclasses.replace(settings, proxy=_proxy(reader, "receiver"))
    profiles = _profiles(reader)
    chosen = reader.parser.get("receiver", "profile", fallback=DEFAULT_PROFILE)
    if chosen in profiles:
        profile = profiles[chosen]
    elif chosen == DEFAULT_PROFILE:
        profile = all_storage_profile(DEFAULT_PROFILE)
    else:
        raise reader.error(
            "receiver", "profile", f"profile: no [profile {chosen}] section in this file"
        )
    settings = _tls(reader, settings)
    access = _access(reader, profiles)
    named = {rule.profile for rule in access.rules if rule.profile is not None}
    peer_profiles = {
        name: profiles.get(name) or all_storage_profile(DEFAULT_PROFILE) for name in named
    }
    settings = dataclasses.replace(
        settings,
        access=access,
        events=_events(reader, settings, chosen),
        commitment=_commitment(reader, settings),
    )
    return Config(path, settings, profile, profiles, peer_profiles)


def load(path: str | Path) -> Config:
    """Read and check the INI file at `path`."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(name, None, f"cannot read the configuration file: {reason}") from None
    return parse(text, name)


def read(path: str) -> Config:
    """The configuration in the file at `path`, or the built-in defaults for EMBEDDED."""
    return parse("", EMBEDDED) if path == EMBEDDED else load(path)
