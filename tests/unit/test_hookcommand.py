"""Hook commands: parse()'s quoting and refusals, and expand() keeping every value, however
hostile, within its own argument, literally."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcmrecvd.hookcommand import NAMES, CommandError, expand, parse

HOOK = "/usr/local/bin/hook"
# The values a peer controls (UIDs, PatientID ...) could hold any of these.
HOSTILE = [
    "two words",
    "  padded  ",
    "'single'",
    '"double"',
    "it's",
    "; rm -rf /",
    "$(id)",
    "`id`",
    "${HOME}",
    "a && b || c | d > e < f",
    "line\nbreak",
    "tab\there",
    "-rf",
    "--output=/etc/passwd",
    "\\",
    "*?[a]",
    "{manifest}",
    "{{}}",
    "ünïcödé 日本語 ✓",
    "x" * 100_000,
    "",
]


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        (HOOK, (HOOK,)),
        (f"{HOOK} {{manifest}}", (HOOK, "{manifest}")),
        (f"{HOOK}   a\tb  ", (HOOK, "a", "b")),
        (f"{HOOK} 'two words' \"and more\"", (HOOK, "two words", "and more")),
        (f'{HOOK} "it\'s" \'say "hi"\'', (HOOK, "it's", 'say "hi"')),
        (f"{HOOK} back\\ slash", (HOOK, "back slash")),
        (f"{HOOK} --study={{StudyInstanceUID}}", (HOOK, "--study={StudyInstanceUID}")),
        (f"{HOOK} '--at {{path}} now'", (HOOK, "--at {path} now")),
        (f"{HOOK} ''", (HOOK, "")),
        # No shell: these are words like any other.
        (
            f"{HOOK} ; | && $(id) # not a comment",
            (HOOK, ";", "|", "&&", "$(id)", "#", "not", "a", "comment"),
        ),
        (f"{HOOK} {{{{literal}}}}", (HOOK, "{{literal}}")),
        ("'/opt/my hooks/run' {event}", ("/opt/my hooks/run", "{event}")),
    ],
)
def test_parse(text: str, argv: tuple[str, ...]) -> None:
    assert parse(text) == argv


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty command"),
        ("   ", "empty command"),
        ("''", "must be an absolute path"),
        ("hook {manifest}", "must be an absolute path (no PATH search): 'hook'"),
        ("./hook", "must be an absolute path"),
        ("bin/hook", "must be an absolute path"),
        ("~/hook", "must be an absolute path"),
        ("{path}", "must be an absolute path"),
        ("/opt/{event}/hook", "the program's path cannot hold a placeholder"),
        ("/opt/{{x}}/hook", "the program's path cannot hold a placeholder"),
        (f"{HOOK} 'open", "cannot split into arguments: No closing quotation"),
        (f'{HOOK} "open', "cannot split into arguments"),
        (f"{HOOK} {{Unknown}}", "unknown placeholder {Unknown} (known: CallingAETitle, "),
        (f"{HOOK} {{patientid}}", "unknown placeholder {patientid}"),
        (f"{HOOK} {{}}", "unknown placeholder {}"),
        (f"{HOOK} {{0}}", "unknown placeholder {0}"),
        (f"{HOOK} {{event:>10}}", "unknown placeholder {event:>10}"),
        (f"{HOOK} {{event!r}}", "unknown placeholder {event!r}"),
        (f"{HOOK} {{event!s:x}}", "unknown placeholder {event!s:x}"),
        (f"{HOOK} {{event:{{manifest}}}}", "unknown placeholder {event:{manifest}}"),
        (f"{HOOK} {{event.__class__}}", "unknown placeholder {event.__class__}"),
        (f"{HOOK} {{event[0]}}", "unknown placeholder {event[0]}"),
        (f"{HOOK} {{event", "expected '}' before end of string in '{event'"),
        (f"{HOOK} a}}b", "Single '}' encountered"),
        (f"{HOOK} a{{b", "(write {{ and }} for braces)"),
        (f"{HOOK} {{event!}}", "(write {{ and }} for braces)"),
    ],
)
def test_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse(text)
    assert message in str(caught.value)


def test_a_command_error_is_a_value_error() -> None:
    assert issubclass(CommandError, ValueError)


def test_expand_every_name() -> None:
    command = parse(f"{HOOK} " + " ".join(f"--{name}={{{name}}}" for name in sorted(NAMES)))
    values = {name: f"<{name}>" for name in NAMES}
    assert expand(command, values) == [HOOK] + [f"--{name}=<{name}>" for name in sorted(NAMES)]


def test_expand_within_an_argument() -> None:
    command = parse(f"{HOOK} '{{event}} of {{StudyInstanceUID}}' {{{{{{event}}}}}} {{{{x}}}}")
    values = {"event": "study-complete", "StudyInstanceUID": "1.2.3"}
    assert expand(command, values) == [
        HOOK,
        "study-complete of 1.2.3",
        "{study-complete}",
        "{x}",
    ]


def test_a_name_without_a_value_is_empty_and_still_an_argument() -> None:
    assert expand(parse(f"{HOOK} {{path}} --reason={{reason}} end"), {}) == [
        HOOK,
        "",
        "--reason=",
        "end",
    ]


def test_values_that_look_like_placeholders_are_not_expanded_again() -> None:
    values = {"PatientID": "{manifest}", "manifest": "/secret"}
    assert expand(parse(f"{HOOK} {{PatientID}}"), values) == [HOOK, "{manifest}"]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_value_stays_one_literal_argument(value: str) -> None:
    command = parse(f"{HOOK} --id={{PatientID}} {{PatientID}} -- {{SOPInstanceUID}}")
    argv = expand(command, {"PatientID": value, "SOPInstanceUID": value})
    assert argv == [HOOK, f"--id={value}", value, "--", value]


def test_nul_is_dropped() -> None:
    argv = expand(parse(f"{HOOK} a{{PatientID}}b"), {"PatientID": "\0x\0y\0"})
    assert argv == [HOOK, "axyb"]


@given(
    st.dictionaries(st.sampled_from(sorted(NAMES)), st.text()),
    st.lists(st.sampled_from(sorted(NAMES)), min_size=1, max_size=5),
)
def test_expand_never_changes_the_number_of_arguments(
    values: dict[str, str], names: list[str]
) -> None:
    command = parse(f"{HOOK} " + " ".join(f"x{{{name}}}y" for name in names))
    argv = expand(command, values)
    assert argv == [HOOK] + ["x" + values.get(name, "").replace("\0", "") + "y" for name in names]
