"""Path templates: a received object's path, relative to the output directory, made from
its dataset, e.g. ``{PatientID}/{StudyDate:%Y/%m}/{Modality}.{SOPInstanceUID}{extension}``.

Pure logic. parse() checks a template once, at configuration time; render() turns the raw
values collected while the dataset streams in into a path that is always safe to create
under the output directory, whatever a sender puts in those values: no absolute path, no
traversal, no hidden, empty or over-long component, no control character.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from pydicom.charset import CODES_TO_ENCODINGS, ESC, handled_encodings, python_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword

EXTENSION = "extension"
PREFIX = "prefix"
DEFAULT_FALLBACK = "UNKNOWN"
PIXEL_DATA = 0x7FE00010
MAX_COMPONENT = 255  # bytes in UTF-8: NAME_MAX of the common Linux file systems
MAX_PATH = 4000  # bytes: PATH_MAX (4096) leaves this much room for the output directory

_CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})  # the rest is ASCII
# Binary VRs are left out: their bytes cannot be read without the transfer syntax.
_TEXT_VRS = _CHARSET_VRS | {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"}
_SINGLE_VRS = frozenset({"LT", "ST", "UR", "UT"})  # a backslash is text here, not a separator
_STAND_ALONE = frozenset({"UTF8", "GB18030", "GBK"})  # no code extensions (PS3.5 6.1.2.5.4)
# PS3.5 6.1.2.5.3: code extensions end at these bytes; PN components also end at ^ and =.
_DELIMITERS = {0x09, 0x0A, 0x0C, 0x0D, 0x5C}
_PN_DELIMITERS = _DELIMITERS | {0x3D, 0x5E}

# Characters refused by Windows or SMB shares, besides the path separators.
_UNSAFE = frozenset('/\\:*?"<>|')
_DIRECTIVE = re.compile(r"%(.?)")
# The directives a VR can fill; a component left out of a TM or DT value is its lowest.
_DATE_PATTERNS = {
    "DA": re.compile(r"(?P<Y>[0-9]{4})(?P<m>[0-9]{2})(?P<d>[0-9]{2})"),
    "TM": re.compile(r"(?P<H>[0-9]{2})(?:(?P<M>[0-9]{2})(?:(?P<S>[0-9]{2})(?:\.[0-9]{1,6})?)?)?"),
    "DT": re.compile(
        r"(?P<Y>[0-9]{4})(?:(?P<m>[0-9]{2})(?:(?P<d>[0-9]{2})(?:(?P<H>[0-9]{2})"
        r"(?:(?P<M>[0-9]{2})(?:(?P<S>[0-9]{2})(?:\.[0-9]{1,6})?)?)?)?)?)?(?:[+-][0-9]{4})?"
    ),
}
_LOWEST = {"Y": "0001", "m": "01", "d": "01", "H": "00", "M": "00", "S": "00"}


class TemplateError(Exception):
    """A template that parse() refuses; str() is "column N: reason" (columns from 1)."""

    def __init__(self, column: int, reason: str) -> None:
        super().__init__(f"column {column}: {reason}")
        self.column = column
        self.reason = reason


class RenderError(Exception):
    """The rendered path is too long to create."""


@dataclass(frozen=True)
class Field:
    """One {...} of a template; tag is None for {extension} and {prefix}."""

    keyword: str
    tag: int | None
    vr: str
    date_format: str  # "" when the value is used as it is
    fallback: str  # sanitized


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text (with "/" between components) and fields."""

    text: str
    parts: tuple[str | Field, ...]

    @property
    def keywords(self) -> frozenset[str]:
        return frozenset(
            p.keyword for p in self.parts if isinstance(p, Field) and p.tag is not None
        )

    @property
    def tags(self) -> frozenset[int]:
        return frozenset(p.tag for p in self.parts if isinstance(p, Field) and p.tag is not None)


def _sanitized(text: str) -> str:
    """text with every character unsafe in a file name replaced by "_"."""
    return "".join(c if _safe(c) else "_" for c in text)


def _safe(char: str) -> bool:
    # Category C: controls (C0, DEL, C1), invisible format characters, surrogates (from
    # os.fsdecode'd options), private and unassigned code points; Zl and Zp break lines.
    category = unicodedata.category(char)
    return char not in _UNSAFE and category[0] != "C" and category not in ("Zl", "Zp")


@dataclass
class _Component:
    """A path component as written, for parse()'s checks."""

    column: int
    shape: str = ""  # literal text and date formats; a NUL (never literal) for other fields
    keywords: tuple[str, ...] = ()


def parse(text: str) -> Template:
    """Check a template; raise TemplateError with the column and reason of the first fault."""
    if not text:
        raise TemplateError(1, "the template is empty")
    parts: list[str | Field] = []
    components = [_Component(1)]
    i = 0
    while i < len(text):
        char = text[i]
        if text.startswith(("{{", "}}"), i):
            _literal(parts, char)
            components[-1].shape += char
            i += 2
        elif char == "}":
            raise TemplateError(i + 1, "single '}': write '}}' for a literal brace")
        elif char == "{":
            end = text.find("}", i)
            if end < 0:
                raise TemplateError(i + 1, "'{' is not closed: write '{{' for a literal brace")
            field = _field(text[i + 1 : end], i + 2)
            parts.append(field)
            components[-1].keywords += (field.keyword,)
            if not field.date_format:
                components[-1].shape += "\0"
            # The date's own "/" start components; its fallback, if used, is one piece.
            start = i + len(field.keyword) + 2
            for j, piece in enumerate(field.date_format):
                if piece == "/":
                    components.append(_Component(start + j + 2))
                else:
                    components[-1].shape += piece
            i = end + 1
        else:
            if char == "/":
                components.append(_Component(i + 2))
            elif not _safe(char):
                raise TemplateError(i + 1, f"{char!r} is not allowed in a file name")
            else:
                components[-1].shape += char
            _literal(parts, char)
            i += 1
    _check(components, len(text))
    return Template(text, tuple(parts))


def _literal(parts: list[str | Field], char: str) -> None:
    if parts and isinstance(parts[-1], str):
        parts[-1] += char
    else:
        parts.append(char)


def _field(body: str, column: int) -> Field:
    """The field written {body}, its first character at column."""
    name, bar, fallback = body.partition("|")
    keyword, colon, date_format = name.partition(":")
    if bar:
        fallback = fallback.strip(" ")
        if not fallback:
            raise TemplateError(column + len(name), "empty fallback")
    else:
        fallback = DEFAULT_FALLBACK
    if keyword in (EXTENSION, PREFIX):
        if colon:
            raise TemplateError(column + len(keyword), f"{{{keyword}}} takes no format")
        if bar and keyword == EXTENSION:
            # An empty extension is a valid configuration, not a missing value.
            raise TemplateError(column + len(name), "{extension} takes no fallback")
        return Field(keyword, None, "", "", _sanitized(fallback))
    if not keyword:
        raise TemplateError(column, "empty field: write '{{' for a literal brace")
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise TemplateError(column, f"unknown DICOM keyword {keyword!r}")
    vr = dictionary_VR(tag)
    where = f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
    if tag >> 16 in (0x0000, 0x0002):
        raise TemplateError(
            column, f"{where} is a command or File Meta element, not in the dataset"
        )
    if tag >= PIXEL_DATA:
        raise TemplateError(column, f"{where} does not precede Pixel Data")
    if vr == "SQ":
        raise TemplateError(column, f"{where} is a sequence")
    if vr not in _TEXT_VRS:
        raise TemplateError(column, f"{where} has VR {vr}: only text elements can name a path")
    if colon:
        _check_format(date_format, keyword, vr, column + len(keyword) + 1)
    return Field(keyword, tag, vr, date_format, _sanitized(fallback))


def _check_format(date_format: str, keyword: str, vr: str, column: int) -> None:
    """Check the format of field keyword, its first character at column."""
    pattern = _DATE_PATTERNS.get(vr)
    if pattern is None:
        raise TemplateError(column - 1, f"only DA, TM and DT take a format; {keyword} is {vr}")
    if not date_format:
        raise TemplateError(column, "empty format")
    allowed = "".join(f"%{d}" for d in pattern.groupindex)
    for j, char in enumerate(date_format):
        if char != "/" and not _safe(char):
            raise TemplateError(column + j, f"{char!r} is not allowed in a file name")
    for match in _DIRECTIVE.finditer(date_format):
        if match[1] not in pattern.groupindex:
            raise TemplateError(
                column + match.start(), f"{keyword} ({vr}) takes only {allowed}, not {match[0]!r}"
            )


def _check(components: list[_Component], length: int) -> None:
    for component in components:
        if not component.shape:
            if component.column == 1:
                reason = "the path must be relative: it may not start with '/'"
            elif component.column > length:
                reason = "the template ends with '/': the file name is missing"
            else:
                reason = "empty path component ('//')"
            raise TemplateError(component.column, reason)
        if component.shape in (".", ".."):
            raise TemplateError(
                component.column, f"{component.shape!r} is not allowed as a path component"
            )
        if component.shape.startswith("."):
            raise TemplateError(component.column, "a path component may not start with '.'")
    for component in components[:-1]:
        if EXTENSION in component.keywords:
            raise TemplateError(component.column, "{extension} belongs in the file name")
    if "SOPInstanceUID" not in components[-1].keywords:
        raise TemplateError(
            components[-1].column,
            "the file name (the last component) has no {SOPInstanceUID}: "
            "different objects would get the same name",
        )


def render(
    template: Template,
    values: Mapping[int, bytes | None],
    *,
    character_set: str | None,
    extension: str,
    prefix: str,
) -> str:
    """The relative path ("/" between components) of the object with these values.

    values maps a tag to its raw value as received (None or missing: absent);
    character_set is the text of Specific Character Set (0008,0005), None when absent;
    extension is the configured file extension; prefix DCMTK's modality prefix.
    Raises RenderError when the path is over MAX_PATH bytes.
    """
    encodings = _encodings(character_set)
    components = [""]
    keep_from = None  # where {extension} starts in the file name
    for part in template.parts:
        if isinstance(part, str):
            text = part
        elif part.keyword == EXTENSION:
            keep_from = len(components[-1])
            text = _sanitized(extension)
        elif part.tag is None:  # {prefix}
            text = _sanitized(prefix.strip(" ")) or part.fallback
        else:
            text = _value(part, values.get(part.tag), encodings)
        # Only a date format can bring a "/": values and fallbacks are sanitized.
        first, *rest = text.split("/")
        components[-1] += first
        components += rest
    capped = [_capped(c, None) for c in components[:-1]]
    capped.append(_capped(components[-1], keep_from))
    path = "/".join("_" + c[1:] if c.startswith(".") else c for c in capped)
    size = len(path.encode())
    if size > MAX_PATH:
        raise RenderError(f"the path is {size} bytes long, over the limit of {MAX_PATH}")
    return path


def _encodings(character_set: str | None) -> list[str]:
    """Python codecs for the terms of Specific Character Set; latin-1 for unknown ones."""
    terms = (character_set or "").split("\\")
    return [python_encoding.get(term.strip(" \0"), "latin_1") for term in terms]


def text_value(raw: bytes, vr: str, character_set: str | None) -> str:
    """The first value of a raw text element, decoded and without padding; not sanitized
    (the index keeps values as they are)."""
    return _text(raw, vr, _encodings(character_set))


def _text(raw: bytes, vr: str, encodings: list[str]) -> str:
    if vr in _CHARSET_VRS:
        delimiters = _PN_DELIMITERS if vr == "PN" else _DELIMITERS
        text = _decode(raw, encodings, delimiters)
    else:
        text = raw.decode("ascii", "replace")
    if vr not in _SINGLE_VRS:
        text = text.split("\\", 1)[0]
    text = text.rstrip(" \0")
    if vr != "UI":
        text = text.lstrip(" ")
    return text


def _value(field: Field, raw: bytes | None, encodings: list[str]) -> str:
    """The text a field gives for its raw value: sanitized, its fallback if none."""
    if raw is None:
        return field.fallback
    text = _text(raw, field.vr, encodings)
    if field.date_format:
        return _date(field, text) or field.fallback
    return _sanitized(text) or field.fallback


def _decode(raw: bytes, encodings: list[str], delimiters: set[int]) -> str:
    """raw in its character set, as pydicom's decode_bytes, or latin-1 where it fails.

    Written out because decode_bytes warns (through pydicom's global settings) instead of
    failing, and a sender's bad bytes must neither stop nor flood the receiver's log.
    """
    try:
        if ESC not in raw or encodings[0] in _STAND_ALONE:
            return raw.decode(encodings[0])
        # PS3.5 6.1.2.5: each escape sequence switches the code element until the next.
        return "".join(
            _decode_fragment(fragment, encodings[0], delimiters)
            for fragment in re.findall(rb"^[^\x1b]+|\x1b[^\x1b]*", raw)
        )
    except (UnicodeError, LookupError):
        return raw.decode("latin-1")


def _decode_fragment(fragment: bytes, first: str, delimiters: set[int]) -> str:
    if not fragment.startswith(ESC):
        return fragment.decode(first)
    size = 4 if fragment.startswith((b"\x1b$(", b"\x1b$)")) else 3
    encoding = CODES_TO_ENCODINGS[fragment[:size]]  # KeyError: an unknown escape sequence
    if encoding in handled_encodings:
        return fragment.decode(encoding)  # Python's codec reads the escape sequences
    body = fragment[size:]
    end = next((j for j, byte in enumerate(body) if byte in delimiters), len(body))
    return body[:end].decode(encoding) + body[end:].decode(first)


def _date(field: Field, text: str) -> str | None:
    """The formatted date or time, None if text is not a valid one for the field's VR."""
    match = _DATE_PATTERNS[field.vr].fullmatch(text)
    if match is None:
        return None
    parts = {key: value or _LOWEST[key] for key, value in match.groupdict().items()}
    try:
        if "Y" in parts:
            date(int(parts["Y"]), int(parts["m"]), int(parts["d"]))
    except ValueError:
        return None
    if "H" in parts and not (
        int(parts["H"]) < 24 and int(parts["M"]) < 60 and int(parts["S"]) <= 60
    ):
        return None
    return _DIRECTIVE.sub(lambda directive: parts[directive[1]], field.date_format)


def _capped(component: str, keep_from: int | None) -> str:
    """component cut to MAX_COMPONENT bytes; the text from keep_from on kept if it fits."""
    if len(component.encode()) <= MAX_COMPONENT:
        return component
    if keep_from is not None:
        tail = component[keep_from:]
        room = MAX_COMPONENT - len(tail.encode())
        if room > 0:
            return _head(component[:keep_from], room) + tail
    return _head(component, MAX_COMPONENT)


def _head(text: str, size: int) -> str:
    """The longest start of text that is at most size bytes in UTF-8."""
    return text.encode()[:size].decode(errors="ignore")
