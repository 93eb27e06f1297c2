"""A hook's command line: an argv list with {placeholders}, never run through a shell.

The INI value is split into arguments once, when the file is read, with POSIX shell
quoting rules (so that an argument may hold a space); no shell ever sees it. Each
placeholder is then replaced inside its own argument, so a value with spaces, quotes,
semicolons or `$(...)` stays one argument, taken literally. A value that starts with
"-" could still read as an option to the hook: put the placeholder after `--` or inside
an option (`--study={StudyInstanceUID}`). Literal braces are written `{{` and `}}`.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Mapping, Sequence

# What a command may name: dcmrecvd's own values in lower case, DICOM elements by keyword.
NAMES = frozenset(
    {
        "manifest",  # the path of the event's manifest (JSON)
        "event",  # instance-stored, series-complete, study-complete
        "event_id",  # the event's id, the same on every delivery of it
        "generation",  # 1, then 2, ... each time the series (study) completes again
        "reason",  # why it completed: quiet, max-age, rule ("" for instance-stored)
        "instances",  # how many instances the series (study) has
        "path",  # instance-stored: the stored file
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "PatientID",
        "Modality",  # a study's modalities joined by "\\"
        "CallingAETitle",  # the calling AE titles that sent them, joined by "\\"
    }
)

_FORMATTER = string.Formatter()


class CommandError(ValueError):
    """A command that cannot be used; the text says why."""


def _fields(argument: str) -> list[tuple[str, str | None]]:
    """`argument` as (literal text, placeholder name or None) pairs."""
    try:
        parsed = list(_FORMATTER.parse(argument))
    except ValueError as exc:
        raise CommandError(f"{exc} in '{argument}' (write {{{{ and }}}} for braces)") from None
    pairs = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (spec or conversion or name not in NAMES):
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise CommandError(
                f"unknown placeholder {{{shown}}} (known: {', '.join(sorted(NAMES))})"
            )
        pairs.append((literal, name))
    return pairs


def parse(text: str) -> tuple[str, ...]:
    """The argv that an INI `command = ...` value gives; raises CommandError."""
    try:
        argv = shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        raise CommandError(f"cannot split into arguments: {exc}") from None
    if not argv:
        raise CommandError("empty command")
    if not argv[0].startswith("/"):
        raise CommandError(f"the program must be an absolute path (no PATH search): '{argv[0]}'")
    if "{" in argv[0]:
        raise CommandError("the program's path cannot hold a placeholder")
    for argument in argv:
        _fields(argument)
    return tuple(argv)


def expand(command: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """`command` with every placeholder replaced within its argument; a name without a
    value gives "". NUL cannot be in an argument: it is dropped from values."""
    argv = []
    for argument in command:
        parts = []
        for literal, name in _fields(argument):
            parts.append(literal)
            if name is not None:
                parts.append(values.get(name, "").replace("\0", ""))
        argv.append("".join(parts))
    return argv
