"""DCMTK association configuration files ("asconfig", dcmrecv -xf): parse, check, render.

The reader follows DCMTK 3.6.7 exactly: OFConfigFile's lexical rules, then
DcmAssociationConfigurationFile's passes (transfer syntaxes, presentation contexts, role
selection, extended negotiation, profiles), failing on the first error with DCMTK's text.
`select_profile` then resolves one profile into the `Profile` the receiver uses.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from dcmrecvd.config.uidnames import dcmtk_name_of, is_uid, resolve_dcmtk
from dcmrecvd.profiles import AcceptedContext, Profile, Role
from dcmrecvd.settings import DCMTK_CONTEXT_LIST_LIMIT

_FATAL = "cannot load association configuration: "
_INVALID_PROFILE = "Invalid or non-existing SCP Association Profile"

# OFConfigFile keeps only these characters of a (super)section or key name.
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
# C isspace() in the "C" locale; DCMTK drops these from section references.
_C_SPACE = frozenset(" \t\n\v\f\r")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

# DCMTK rejects extended negotiation values of more than 2047 hex digits (the check
# counts the separator too), so 1023 bytes is the real maximum.
MAX_EXTENDED_NEGOTIATION_BYTES = 1023

_ROLES = {"SCU": Role.SCU, "SCP": Role.SCP, "BOTH": Role.BOTH}


class AsConfigError(Exception):
    """A configuration file or profile that DCMTK's dcmrecv refuses (exit 66).

    `dcmtk_error` and `dcmtk_fatal` are the texts dcmrecv logs after "E: " and "F: "
    (`dcmtk_error` is None when dcmrecv logs no error line).
    """

    def __init__(
        self,
        path: str,
        reason: str,
        *,
        line: int | None = None,
        dcmtk_error: str | None,
        dcmtk_fatal: str,
    ) -> None:
        super().__init__(path, reason)
        self.path = path
        self.line = line
        self.reason = reason
        self.dcmtk_error = dcmtk_error
        self.dcmtk_fatal = dcmtk_fatal

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.reason}"


def _unparsable(path: str, reason: str, line: int | None = None) -> AsConfigError:
    """An error of DcmAssociationConfigurationFile::initialize."""
    return AsConfigError(
        path,
        reason,
        line=line,
        dcmtk_error=f"Unable to parse association configuration file: {path}: {reason}",
        dcmtk_fatal=_FATAL + reason,
    )


def _bad_profile(path: str, message: str, line: int | None = None) -> AsConfigError:
    """An error of DcmSCPConfig::checkAssociationProfile."""
    return AsConfigError(
        path, message, line=line, dcmtk_error=message, dcmtk_fatal=_FATAL + _INVALID_PROFILE
    )


def _bare(path: str, condition: str) -> AsConfigError:
    """A condition dcmrecv reports with no error line of its own."""
    return AsConfigError(path, condition, dcmtk_error=None, dcmtk_fatal=_FATAL + condition)


# --- the document model ---------------------------------------------------------------


@dataclass(frozen=True)
class ContextEntry:
    """PresentationContextN = <abstract syntax>\\<transfer-syntax list>."""

    abstract_syntax: str
    transfer_syntax_list: str
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RoleEntry:
    """RoleN = <abstract syntax>\\SCU|SCP|BOTH."""

    abstract_syntax: str
    role: Role
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ExtendedNegotiationEntry:
    """ExtendedNegotiationN = <abstract syntax>\\<hex bytes>."""

    abstract_syntax: str
    data: bytes
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ProfileRefs:
    """One [[Profiles]] section: the names of the lists it uses."""

    presentation_contexts: str
    role_selection: str | None = None
    extended_negotiation: str | None = None


@dataclass(frozen=True)
class AsConfig:
    """A checked asconfig document: every name normalised, every UID numeric.

    Lists keep file order (sections of the same name merged, entries appended).
    Line numbers ride along on the entries but take no part in equality.
    """

    transfer_syntax_lists: Mapping[str, tuple[str, ...]]
    presentation_context_lists: Mapping[str, tuple[ContextEntry, ...]]
    role_lists: Mapping[str, tuple[RoleEntry, ...]]
    extended_negotiation_lists: Mapping[str, tuple[ExtendedNegotiationEntry, ...]]
    profiles: Mapping[str, ProfileRefs]


_T = TypeVar("_T")


def _frozen(lists: Mapping[str, list[_T]]) -> Mapping[str, tuple[_T, ...]]:
    return MappingProxyType({name: tuple(items) for name, items in lists.items()})


# --- OFConfigFile: the lexical layer -----------------------------------------------------


def _ascii_upper(text: str) -> str:
    return text.translate(_ASCII_UPPER)


def _squeeze(text: str) -> str:
    """DCMTK's mangling of a section reference or profile name: drop blanks, upper-case."""
    return _ascii_upper("".join(c for c in text if c not in _C_SPACE))


def _section_name(text: str) -> str:
    """The name OFConfigFile gives a section header or key spelt `text`."""
    return "".join(c for c in _ascii_upper(text) if c in _NAME_CHARS)


class _Reader:
    """OFConfigFile's character stream: comments dropped, line breaks unified."""

    def __init__(self, text: str) -> None:
        # CR, LF and CRLF all end a line; OFConfigFile reads NUL as a blank.
        self._text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", " ")
        self._pos = 0
        self._line = 1
        self._at_line_start = True
        self.char_line = 1

    def char(self) -> str | None:
        """The next character, None at the end; a '#' in column 1 drops its whole line."""
        in_comment = False
        while self._pos < len(self._text):
            c = self._text[self._pos]
            self._pos += 1
            if c == "\n":
                self._line += 1
                self._at_line_start = True
                if in_comment:
                    # The line break ending a comment is dropped with it.
                    in_comment = False
                    continue
                return c
            if c == "#" and self._at_line_start:
                in_comment = True
                self._at_line_start = False
            elif not in_comment:
                self._at_line_start = False
                self.char_line = self._line
                return c
        return None

    def unget(self) -> None:
        """Push back the last character returned (never a line break)."""
        self._pos -= 1

    def name_char(self) -> str | None:
        """The next character that is not a blank or line break, upper-cased."""
        while (c := self.char()) is not None:
            if c not in " \t\n":
                return _ascii_upper(c)
        return None


@dataclass(frozen=True)
class _Entry:
    key: str
    value: str
    line: int


@dataclass
class _Section:
    name: str
    line: int
    entries: dict[str, _Entry] = field(default_factory=dict)

    def add(self, entry: _Entry) -> None:
        # DCMTK finds the first entry of a name; later duplicates are never seen.
        self.entries.setdefault(entry.key, entry)

    def get(self, key: str) -> _Entry | None:
        return self.entries.get(key)

    def numbered(self, prefix: str) -> Iterator[tuple[str, _Entry]]:
        """PREFIX1, PREFIX2, ... up to the first missing number."""
        number = 1
        while (entry := self.get(f"{prefix}{number}")) is not None:
            yield f"{prefix}{number}", entry
            number += 1


@dataclass
class _Supersection:
    name: str
    sections: list[_Section] = field(default_factory=list)


def _read_name(reader: _Reader, end: str) -> str:
    """A name up to `end`; blanks, line breaks and foreign characters are skipped."""
    name = []
    while (c := reader.name_char()) is not None and c != end:
        if c in _NAME_CHARS:
            name.append(c)
    return "".join(name)


def _read_header(reader: _Reader) -> tuple[int, str]:
    """After the first '[': the level (1 or 2) and the name of a [..] or [[..]] header."""
    level = 1
    while (c := reader.name_char()) == "[":
        level += 1
    name = ""
    if c is not None:
        reader.unget()
        name = _read_name(reader, "]")
        # Whatever stands between the first ']' and the last one is skipped.
        closing = level - 1
        while closing > 0 and (c := reader.name_char()) is not None:
            if c == "]":
                closing -= 1
    return min(level, 2), name


def _read_value(reader: _Reader) -> str:
    """A value: leading blanks dropped, trailing blanks kept; lines that start with a
    blank continue it, joined by a line break without their leading blanks."""
    value: list[str] = []
    skip_blanks = True
    after_break = False
    while (c := reader.char()) is not None:
        if c == "\n":
            if not skip_blanks:
                value.append(c)
            skip_blanks = after_break = True
        elif c in " \t":
            after_break = False
            if not skip_blanks:
                value.append(c)
        elif after_break:
            reader.unget()
            break
        else:
            value.append(c)
            skip_blanks = False
    return "".join(value).rstrip("\n")


def _read_tree(text: str) -> list[_Supersection]:
    """The OFConfigFile tree; entries outside a section and sections outside a
    supersection are dropped, as DCMTK drops them."""
    reader = _Reader(text)
    tree: list[_Supersection] = []
    section: _Section | None = None
    while (c := reader.name_char()) is not None:
        line = reader.char_line
        if c == "[":
            level, name = _read_header(reader)
            if level == 2:
                tree.append(_Supersection(name))
                section = None
            elif tree:
                section = _Section(name, line)
                tree[-1].sections.append(section)
        else:
            reader.unget()
            key = _read_name(reader, "=")
            value = _read_value(reader)
            if section is not None:
                section.add(_Entry(key, value, line))
    return tree


def _find(tree: list[_Supersection], name: str) -> _Supersection | None:
    """The first supersection called `name`: DCMTK never looks at a second one."""
    return next((s for s in tree if s.name == name), None)


# --- DcmAssociationConfigurationFile: the semantic passes --------------------------------


def _required(tree: list[_Supersection], name: str, path: str) -> _Supersection:
    found = _find(tree, name)
    if found is None:
        raise _unparsable(path, f"cannot find section [[{name}]] in config file")
    return found


def _split(entry: _Entry, key: str, path: str) -> tuple[str, str]:
    """'<abstract syntax>\\<rest>', split at the first backslash."""
    head, separator, rest = entry.value.partition("\\")
    if not separator:
        raise _unparsable(
            path, f"syntax error: missing '\\' in entry {key} in config file", entry.line
        )
    return head, rest


def _uid(value: str, kind: str, line: int, path: str) -> str:
    uid = resolve_dcmtk(value)
    if not is_uid(uid):
        raise _unparsable(path, f"not a valid {kind} UID: {value}", line)
    return uid


def _illegal_call(path: str, line: int) -> AsConfigError:
    # DCMTK's EC_IllegalCall, for an empty name or value it cannot store.
    return _unparsable(path, "Illegal call, perhaps wrong parameters", line)


def _transfer_syntaxes(tree: list[_Supersection], path: str) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {}
    for section in _required(tree, "TRANSFERSYNTAXES", path).sections:
        for _, entry in section.numbered("TRANSFERSYNTAX"):
            uid = _uid(entry.value, "transfer syntax", entry.line, path)
            lists.setdefault(section.name, []).append(uid)
    return lists


def _presentation_contexts(
    tree: list[_Supersection],
    transfer_syntaxes: Mapping[str, list[str]],
    limit: int | None,
    path: str,
) -> dict[str, list[ContextEntry]]:
    lists: dict[str, list[ContextEntry]] = {}
    for section in _required(tree, "PRESENTATIONCONTEXTS", path).sections:
        for key, entry in section.numbered("PRESENTATIONCONTEXT"):
            abstract, rest = _split(entry, key, path)
            ts_list = _squeeze(rest)
            if ts_list not in transfer_syntaxes:
                raise _unparsable(path, f"transfer syntax key undefined: {ts_list}", entry.line)
            if not (section.name and abstract and ts_list):
                raise _illegal_call(path, entry.line)
            uid = _uid(abstract, "abstract syntax", entry.line, path)
            contexts = lists.setdefault(section.name, [])
            if limit is not None and len(contexts) >= limit:
                reason = f"presentation context list too long (> {limit} entries): {section.name}"
                raise _unparsable(path, reason, entry.line)
            contexts.append(ContextEntry(uid, ts_list, entry.line))
    return lists


def _role_selection(tree: list[_Supersection], path: str) -> dict[str, list[RoleEntry]]:
    lists: dict[str, list[RoleEntry]] = {}
    supersection = _find(tree, "SCPSCUROLESELECTION")
    for section in supersection.sections if supersection else ():
        for key, entry in section.numbered("ROLE"):
            abstract, rest = _split(entry, key, path)
            # Only upper-cased: "CT\ SCU" is an unknown role.
            role = _ROLES.get(_ascii_upper(rest))
            if role is None:
                reason = f"syntax error: unknown role key in entry {key} in config file"
                raise _unparsable(path, reason, entry.line)
            uid = _uid(abstract, "abstract syntax", entry.line, path)
            roles = lists.setdefault(section.name, [])
            if any(r.abstract_syntax == uid for r in roles):
                reason = f"role selection defined twice for abstract syntax UID: {abstract}"
                raise _unparsable(path, reason, entry.line)
            roles.append(RoleEntry(uid, role, entry.line))
    return lists


def _hex_bytes(text: str) -> bytes | None:
    if len(text) % 2 or not set(text) <= _HEX_DIGITS:
        return None
    return bytes.fromhex(text)


def _extended_negotiation(
    tree: list[_Supersection], path: str
) -> dict[str, list[ExtendedNegotiationEntry]]:
    lists: dict[str, list[ExtendedNegotiationEntry]] = {}
    supersection = _find(tree, "EXTENDEDNEGOTIATION")
    for section in supersection.sections if supersection else ():
        for key, entry in section.numbered("EXTENDEDNEGOTIATION"):
            abstract, rest = _split(entry, key, path)
            if len(rest) > 2 * MAX_EXTENDED_NEGOTIATION_BYTES + 1:
                reason = (
                    "extended negotiation data too long, cannot handle > 1024 bytes"
                    f" in entry {key} in config file"
                )
                raise _unparsable(path, reason, entry.line)
            data = _hex_bytes(rest)
            if data is None:
                reason = f"parse error in extended negotiation data in entry {key} in config file"
                raise _unparsable(path, reason, entry.line)
            if not data:
                raise _illegal_call(path, entry.line)
            uid = _uid(abstract, "abstract syntax", entry.line, path)
            items = lists.setdefault(section.name, [])
            if any(i.abstract_syntax == uid for i in items):
                reason = f"extended negotiation defined twice for abstract syntax UID: {abstract}"
                raise _unparsable(path, reason, entry.line)
            items.append(ExtendedNegotiationEntry(uid, data, entry.line))
    return lists


def _check_subset(
    items: Sequence[RoleEntry | ExtendedNegotiationEntry],
    list_name: str,
    contexts: Sequence[ContextEntry],
    context_list: str,
    path: str,
) -> None:
    """Every abstract syntax of a role or extended-negotiation list must be a context."""
    known = {c.abstract_syntax for c in contexts}
    for item in items:
        if item.abstract_syntax not in known:
            # DCMTK says "role selection list" for extended negotiation lists too.
            reason = (
                f"abstract syntax defined in role selection list '{list_name}' but not in"
                f" presentation context list '{context_list}': {item.abstract_syntax}"
            )
            raise _unparsable(path, reason, item.line)


def _list_reference(
    section: _Section, key: str, known: Container[str], what: str, path: str
) -> str | None:
    """The name of a profile's optional role or extended-negotiation list, if it exists."""
    entry = section.get(key)
    if entry is None:
        return None
    name = _squeeze(entry.value)
    if name not in known:
        raise _unparsable(path, f"{what} key undefined: {name}", entry.line)
    return name


def _profiles(
    tree: list[_Supersection],
    contexts: Mapping[str, list[ContextEntry]],
    roles: Mapping[str, list[RoleEntry]],
    extended: Mapping[str, list[ExtendedNegotiationEntry]],
    path: str,
) -> dict[str, ProfileRefs]:
    profiles: dict[str, ProfileRefs] = {}
    for section in _required(tree, "PROFILES", path).sections:
        entry = section.get("PRESENTATIONCONTEXTS")
        if entry is None:
            reason = f"no PRESENTATIONCONTEXTS  entry in section {section.name} in config file"
            raise _unparsable(path, reason, section.line)
        context_list = _squeeze(entry.value)
        if context_list not in contexts:
            reason = f"presentation context key undefined: {context_list}"
            raise _unparsable(path, reason, entry.line)
        listed = contexts[context_list]
        role_list = _list_reference(section, "SCPSCUROLESELECTION", roles, "role selection", path)
        if role_list is not None:
            _check_subset(roles[role_list], role_list, listed, context_list, path)
        extended_list = _list_reference(
            section, "EXTENDEDNEGOTIATION", extended, "extended negotiation", path
        )
        if extended_list is not None:
            _check_subset(extended[extended_list], extended_list, listed, context_list, path)
        if section.name in profiles:
            # DCMTK names the presentation-context list here, not the profile.
            raise _unparsable(path, f"two profiles defined for key: {context_list}", section.line)
        # DCMTK stores an empty list reference as "no list".
        profiles[section.name] = ProfileRefs(context_list, role_list or None, extended_list or None)
    return profiles


def parse(
    text: str, path: str, *, context_list_limit: int | None = DCMTK_CONTEXT_LIST_LIMIT
) -> AsConfig:
    """Check an asconfig document as DCMTK 3.6.7 does; raise AsConfigError on the first error.

    `text` is the file's bytes decoded as Latin-1 (one character per byte, as DCMTK
    counts). `context_list_limit` caps each presentation-context list (DCMTK: 128);
    None lifts the cap.
    """
    tree = _read_tree(text)
    transfer_syntaxes = _transfer_syntaxes(tree, path)
    contexts = _presentation_contexts(tree, transfer_syntaxes, context_list_limit, path)
    roles = _role_selection(tree, path)
    extended = _extended_negotiation(tree, path)
    profiles = _profiles(tree, contexts, roles, extended, path)
    return AsConfig(
        _frozen(transfer_syntaxes),
        _frozen(contexts),
        _frozen(roles),
        _frozen(extended),
        MappingProxyType(profiles),
    )


def load(
    path: str | Path, *, context_list_limit: int | None = DCMTK_CONTEXT_LIST_LIMIT
) -> AsConfig:
    """Read and parse an asconfig file; errors name the path as given."""
    name = str(path)
    if not name:
        raise _bare(name, "Invalid filename")
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        # DCMTK opens a directory, reads nothing and so finds no sections.
        data = b""
    except OSError:
        raise _unparsable(name, f"unable to open configuration file: {name}") from None
    return parse(data.decode("latin-1"), name, context_list_limit=context_list_limit)


# --- profiles ----------------------------------------------------------------------------


def _first_repeat(contexts: Sequence[ContextEntry]) -> ContextEntry | None:
    seen: set[str] = set()
    for context in contexts:
        if context.abstract_syntax in seen:
            return context
        seen.add(context.abstract_syntax)
    return None


def select_profile(config: AsConfig, name: str, path: str) -> Profile:
    """The profile `name` (blanks dropped, upper-cased, as DCMTK does) of a document
    made by `parse` or `from_profiles`, resolved.

    DCMTK refuses an empty name, an unknown profile, and a profile whose context list
    repeats an abstract syntax (not a valid SCP profile).
    """
    if not name:
        raise _bare(path, "Illegal parameter")
    key = _squeeze(name)
    refs = config.profiles.get(key)
    if refs is None:
        raise _bad_profile(
            path,
            f'No association profile named "{name}" in association configuration,'
            " did you forget to add presentation contexts?",
        )
    contexts = config.presentation_context_lists[refs.presentation_contexts]
    repeated = _first_repeat(contexts)
    if repeated is not None:
        message = f'The association profile named "{name}" is not a valid SCP association profile'
        raise _bad_profile(path, message, repeated.line)
    roles = None
    if refs.role_selection is not None:
        roles = tuple((r.abstract_syntax, r.role) for r in config.role_lists[refs.role_selection])
    extended: tuple[tuple[str, bytes], ...] = ()
    if refs.extended_negotiation is not None:
        items = config.extended_negotiation_lists[refs.extended_negotiation]
        extended = tuple((i.abstract_syntax, i.data) for i in items)
    return Profile(
        name=key,
        contexts=tuple(
            AcceptedContext(c.abstract_syntax, config.transfer_syntax_lists[c.transfer_syntax_list])
            for c in contexts
        ),
        roles=roles,
        extended_negotiation=extended,
    )


# --- rendering ---------------------------------------------------------------------------

_HEADER = """\
# DCMTK association configuration (asconfig), written by dcmrecvd.
# Use: dcmrecv -xf <this file> <profile> [options] <port>
# UIDs are given by DCMTK name where DCMTK 3.6.7 knows one.
"""


def _uid_text(uid: str) -> str:
    return dcmtk_name_of().get(uid, uid)


def _render_lists(
    title: str,
    key: str,
    lists: Mapping[str, Sequence[_T]],
    value: Callable[[_T], str],
) -> str:
    out = [f"\n[[{title}]]\n"]
    for name, items in lists.items():
        out.append(f"\n[{name}]\n")
        out.extend(f"{key}{n} = {value(item)}\n" for n, item in enumerate(items, 1))
    return "".join(out)


def _render_profile(refs: ProfileRefs) -> str:
    out = f"PresentationContexts = {refs.presentation_contexts}\n"
    if refs.role_selection is not None:
        out += f"SCPSCURoleSelection = {refs.role_selection}\n"
    if refs.extended_negotiation is not None:
        out += f"ExtendedNegotiation = {refs.extended_negotiation}\n"
    return out


def render(config: AsConfig) -> str:
    """Asconfig text that DCMTK's dcmrecv -xf reads back into an equal AsConfig."""
    parts = [
        _HEADER,
        _render_lists(
            "TransferSyntaxes", "TransferSyntax", config.transfer_syntax_lists, _uid_text
        ),
        _render_lists(
            "PresentationContexts",
            "PresentationContext",
            config.presentation_context_lists,
            lambda c: f"{_uid_text(c.abstract_syntax)}\\{c.transfer_syntax_list}",
        ),
    ]
    if config.role_lists:
        parts.append(
            _render_lists(
                "SCPSCURoleSelection",
                "Role",
                config.role_lists,
                lambda r: f"{_uid_text(r.abstract_syntax)}\\{r.role.value}",
            )
        )
    if config.extended_negotiation_lists:
        parts.append(
            _render_lists(
                "ExtendedNegotiation",
                "ExtendedNegotiation",
                config.extended_negotiation_lists,
                lambda e: f"{_uid_text(e.abstract_syntax)}\\{e.data.hex().upper()}",
            )
        )
    parts.append("\n[[Profiles]]\n")
    parts.extend(f"\n[{name}]\n{_render_profile(refs)}" for name, refs in config.profiles.items())
    return "".join(parts)


# --- building a document from resolved profiles ------------------------------------------


def _checked_uid(uid: str, profile: str) -> str:
    if not is_uid(uid):
        raise ValueError(f"profile {profile}: not a UID: {uid!r}")
    return uid


def _profile_key(profile: Profile, taken: Mapping[str, ProfileRefs]) -> str:
    key = _section_name(profile.name)
    # The name must survive both section-header and -xf normalisation unchanged.
    if not key or key != _squeeze(profile.name):
        raise ValueError(f"profile name {profile.name!r} cannot be an asconfig section name")
    if key in taken:
        raise ValueError(f"two profiles named {key}")
    return key


def _context_entries(
    profile: Profile, ts_names: dict[tuple[str, ...], str]
) -> tuple[ContextEntry, ...]:
    if not profile.contexts:
        raise ValueError(f"profile {profile.name}: no presentation contexts")
    entries = []
    for context in profile.contexts:
        syntaxes = tuple(_checked_uid(ts, profile.name) for ts in context.transfer_syntaxes)
        if not syntaxes:
            raise ValueError(
                f"profile {profile.name}: no transfer syntax for {context.abstract_syntax}"
            )
        ts_list = ts_names.setdefault(syntaxes, f"TS{len(ts_names) + 1}")
        entries.append(ContextEntry(_checked_uid(context.abstract_syntax, profile.name), ts_list))
    if _first_repeat(entries) is not None:
        raise ValueError(f"profile {profile.name}: an abstract syntax is listed twice")
    return tuple(entries)


def _check_listed(uids: Sequence[str], contexts: Sequence[ContextEntry], profile: str) -> None:
    known = {c.abstract_syntax for c in contexts}
    if len(set(uids)) != len(uids) or not set(uids) <= known:
        raise ValueError(
            f"profile {profile}: roles and extended negotiation need one entry per context"
        )


def from_profiles(profiles: Sequence[Profile]) -> AsConfig:
    """An asconfig document holding `profiles`, identical transfer-syntax lists shared.

    Each profile's lists are named after it. A profile without roles, or with an empty
    role tuple, gets no role list (DCMTK negotiates both the same way). Raises ValueError
    for a profile DCMTK could not load.
    """
    ts_names: dict[tuple[str, ...], str] = {}
    contexts: dict[str, tuple[ContextEntry, ...]] = {}
    roles: dict[str, tuple[RoleEntry, ...]] = {}
    extended: dict[str, tuple[ExtendedNegotiationEntry, ...]] = {}
    refs: dict[str, ProfileRefs] = {}
    for profile in profiles:
        key = _profile_key(profile, refs)
        contexts[key] = _context_entries(profile, ts_names)
        if profile.roles:
            _check_listed([uid for uid, _ in profile.roles], contexts[key], profile.name)
            roles[key] = tuple(RoleEntry(uid, role) for uid, role in profile.roles)
        if profile.extended_negotiation:
            _check_listed(
                [uid for uid, _ in profile.extended_negotiation], contexts[key], profile.name
            )
            if not all(
                0 < len(data) <= MAX_EXTENDED_NEGOTIATION_BYTES
                for _, data in profile.extended_negotiation
            ):
                raise ValueError(f"profile {profile.name}: extended negotiation data of bad length")
            extended[key] = tuple(
                ExtendedNegotiationEntry(uid, data) for uid, data in profile.extended_negotiation
            )
        refs[key] = ProfileRefs(
            key, key if key in roles else None, key if key in extended else None
        )
    return AsConfig(
        MappingProxyType({name: uids for uids, name in ts_names.items()}),
        MappingProxyType(contexts),
        MappingProxyType(roles),
        MappingProxyType(extended),
        MappingProxyType(refs),
    )
