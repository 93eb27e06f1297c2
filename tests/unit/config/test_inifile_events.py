"""The INI file's [completion], [events] and [hook NAME] sections and the completion
rules of [peer NAME] and [profile NAME]: values, defaults, and errors with their line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dcmrecvd.config import inifile
from dcmrecvd.settings import CompletionRule, EventKind, EventSettings, Hook
from tests.support.paths import REPO

STORESCP_CFG = Path("/etc/dcmtk/storescp.cfg")
# Three lines: the first line of a test's own text is line 4.
HEAD = "[receiver]\noutput-directory = {tmp}/in\nindex = {tmp}/in/.index.sqlite\n"
COMMAND = "/usr/local/bin/ct-study-ready --study={StudyInstanceUID} -- {manifest}"


def events_of(tmp_path: Path, text: str, head: str = HEAD) -> EventSettings | None:
    return inifile.parse(head.format(tmp=tmp_path) + text, "test.conf").settings.events


def configured(tmp_path: Path, text: str) -> EventSettings:
    events = events_of(tmp_path, text)
    assert events is not None
    return events


def error_of(tmp_path: Path, text: str, head: str = HEAD) -> inifile.ConfigError:
    with pytest.raises(inifile.ConfigError) as info:
        events_of(tmp_path, text, head)
    assert info.value.path == "test.conf"
    return info.value


# --- on or off ---------------------------------------------------------------------------


def test_off_without_the_sections(tmp_path: Path) -> None:
    assert events_of(tmp_path, "") is None
    assert inifile.parse("", "test.conf").settings.events is None


@pytest.mark.parametrize(
    "section",
    ["[completion]", "[events]", f"[hook a]\nevent = study-complete\ncommand = {COMMAND}"],
)
def test_any_of_the_sections_turns_it_on(tmp_path: Path, section: str) -> None:
    assert isinstance(events_of(tmp_path, section + "\n"), EventSettings)


def test_the_shipped_file_leaves_it_off_and_its_examples_parse(tmp_path: Path) -> None:
    shipped = REPO / "etc/dcmrecvd/dcmrecvd.conf"
    assert inifile.load(shipped).settings.events is None
    text = shipped.read_text()
    examples = text[text.index("# Series and study completion") :]
    # The commented sections and keys, as an administrator would uncomment them.
    lines = re.findall(r"^# (\[.*\]|[a-z-]+ = .*)$", examples, re.MULTILINE)
    events = configured(tmp_path, "\n".join(lines) + "\n")
    assert events.hooks[0].name == "ct-ready"
    assert events.rule == CompletionRule(3, ("CT", "SR"))
    assert events.manifests == {EventKind.SERIES_COMPLETE, EventKind.STUDY_COMPLETE}


def test_defaults(tmp_path: Path) -> None:
    events = configured(tmp_path, "[completion]\n")
    assert events == EventSettings(directory=f"{tmp_path}/in/.events")
    assert (events.series_quiet, events.study_quiet, events.max_age) == (60.0, 180.0, 86400.0)
    assert (events.manifests, events.hooks, events.hook_concurrency) == (frozenset(), (), 2)
    assert events.rule == CompletionRule()


def test_every_key(tmp_path: Path) -> None:
    events = configured(
        tmp_path,
        """
[completion]
series-quiet = 90
study-quiet = 1.5min
max-age = 2h
expected-series = 3
required-modalities = CT, SR

[events]
directory = /srv/events
manifests = series-complete study-complete
hook-concurrency = 64

[hook ct-ready]
event = study-complete
command = /usr/local/bin/ct-study-ready --study={StudyInstanceUID} -- {manifest}
modalities = CT PT
timeout = 10min
retries = 0
retry-delay = 2.5s
""",
    )
    assert (events.series_quiet, events.study_quiet, events.max_age) == (90.0, 90.0, 7200.0)
    assert events.rule == CompletionRule(3, ("CT", "SR"))
    assert events.directory == "/srv/events"
    assert events.manifests == {EventKind.SERIES_COMPLETE, EventKind.STUDY_COMPLETE}
    assert events.hook_concurrency == 64
    assert events.hooks == (
        Hook(
            name="ct-ready",
            event=EventKind.STUDY_COMPLETE,
            command=(
                "/usr/local/bin/ct-study-ready",
                "--study={StudyInstanceUID}",
                "--",
                "{manifest}",
            ),
            modalities=("CT", "PT"),
            timeout=600.0,
            retries=0,
            retry_delay=2.5,
        ),
    )


def test_hook_defaults_and_file_order(tmp_path: Path) -> None:
    events = configured(
        tmp_path,
        f"[hook b]\nevent = instance-stored\ncommand = /bin/true\n"
        f"[hook a_1]\nevent = series-complete\ncommand = {COMMAND}\n",
    )
    assert [(hook.name, hook.event) for hook in events.hooks] == [
        ("b", EventKind.INSTANCE_STORED),
        ("a_1", EventKind.SERIES_COMPLETE),
    ]
    assert events.hooks[0] == Hook("b", EventKind.INSTANCE_STORED, ("/bin/true",))
    assert (events.hooks[0].timeout, events.hooks[0].retries) == (600.0, 3)
    assert (events.hooks[0].modalities, events.hooks[0].retry_delay) == ((), 30.0)


def test_max_age_none_and_manifests(tmp_path: Path) -> None:
    events = configured(
        tmp_path, "[completion]\nmax-age = none\n[events]\nmanifests = instance-stored\n"
    )
    assert events.max_age is None
    assert events.manifests == {EventKind.INSTANCE_STORED}
    assert configured(tmp_path, "[events]\nmanifests = none\n").manifests == frozenset()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("1.5min", 90.0),
        ("2h", 7200.0),
        ("0.25", 0.25),
        (" 3 min ", 180.0),
        ("1H", 3600.0),
    ],
)
def test_duration(text: str, seconds: float) -> None:
    assert inifile.duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0", "must be more than 0: '0'"),
        ("0.0s", "must be more than 0"),
        ("-5", "not a duration (like 90s, 1.5min, 2h): '-5'"),
        ("5m", "not a duration"),
        ("1d", "not a duration"),
        ("soon", "not a duration"),
        ("", "not a duration"),
        ("1e3", "not a duration"),
    ],
)
def test_duration_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        inifile.duration(text)
    assert reason in str(info.value)


# --- rules ---------------------------------------------------------------------------------


def test_peer_and_profile_rules_in_file_order(tmp_path: Path) -> None:
    events = configured(
        tmp_path,
        f"""[completion]
[peer ct2]
calling-aetitle = CT2
required-modalities = CT
[peer plain]
calling-aetitle = X
[peer ct1]
calling-aetitle = CT1
expected-series = 2
[profile listed]
sop-classes = CTImageStorage
expected-series = 4
required-modalities = CT SR CT
[profile dcmtk]
asconfig = {STORESCP_CFG}
asconfig-profile = Default
required-modalities = MR
[profile empty]
sop-classes = CTImageStorage
required-modalities =
""",
    )
    assert events.peer_rules == (
        ("ct2", CompletionRule(required_modalities=("CT",))),
        ("ct1", CompletionRule(expected_series=2)),
    )
    assert events.profile_rules == (
        ("listed", CompletionRule(4, ("CT", "SR"))),
        ("dcmtk", CompletionRule(required_modalities=("MR",))),
    )


@pytest.mark.parametrize(
    ("receiver_profile", "completion", "rule"),
    [
        # The receiver's profile's rule wins over [completion]'s.
        ("p", "expected-series = 5\n", CompletionRule(expected_series=2)),
        # A profile without a rule: [completion]'s.
        ("q", "expected-series = 5\n", CompletionRule(expected_series=5)),
        ("default", "required-modalities = SR\n", CompletionRule(required_modalities=("SR",))),
        # Neither.
        ("q", "", CompletionRule()),
    ],
)
def test_the_receivers_profile_rule_comes_before_completions(
    tmp_path: Path, receiver_profile: str, completion: str, rule: CompletionRule
) -> None:
    head = HEAD + f"profile = {receiver_profile}\n"
    events = events_of(
        tmp_path,
        "[profile p]\nsop-classes = CTImageStorage\nexpected-series = 2\n"
        "[profile q]\nsop-classes = CTImageStorage\n"
        "[peer x]\nprofile = q\nexpected-series = 9\n"
        f"[completion]\n{completion}",
        head,
    )
    assert events is not None
    assert events.rule == rule


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (
            "[peer ct]\ncalling-aetitle = CT\nexpected-series = 2\n",
            6,
            "expected-series: needs a [completion] section",
        ),
        (
            "[profile p]\nsop-classes = CTImageStorage\n\nrequired-modalities = CT\n",
            7,
            "required-modalities: needs a [completion] section",
        ),
        (
            f"[profile d]\nasconfig = {STORESCP_CFG}\nasconfig-profile = Default\n"
            "expected-series = 1\n",
            7,
            "expected-series: needs a [completion] section",
        ),
    ],
)
def test_rules_need_completion(tmp_path: Path, text: str, line: int, reason: str) -> None:
    error = error_of(tmp_path, text)
    assert (error.line, error.reason[: len(reason)]) == (line, reason)


# --- the index and the directory ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "section"),
    [
        ("[completion]\n", 3, "completion"),
        ("[peer x]\n[events]\n[completion]\n", 4, "events"),
        ("[hook h]\nevent = study-complete\ncommand = /bin/true\n", 3, "hook h"),
    ],
)
def test_sections_need_the_index(tmp_path: Path, text: str, line: int, section: str) -> None:
    error = error_of(tmp_path, text, head="[receiver]\noutput-directory = {tmp}/in\n")
    assert error.line == line
    assert error.reason == (
        f"[{section}]: completion and events keep their state in the index; set index in [receiver]"
    )


def test_directory_is_relative_to_the_index(tmp_path: Path) -> None:
    head = "[receiver]\noutput-directory = {tmp}/in\nindex = {tmp}/state/index.sqlite\n"
    events = events_of(tmp_path, "[events]\ndirectory = ev\n", head)
    assert events is not None
    assert events.directory == f"{tmp_path}/state/ev"
    events = events_of(tmp_path, "[completion]\n", head)
    assert events is not None
    assert events.directory == f"{tmp_path}/state/.events"
    # A relative index: the directory stays relative to the working directory as well.
    events = events_of(tmp_path, "[completion]\n", "[receiver]\nindex = db/index.sqlite\n")
    assert events is not None
    assert events.directory == "db/.events"


@pytest.mark.parametrize(
    "directory",
    [".events", ".dcmrecvd/events", "{tmp}/in/.x/y", "{tmp}/elsewhere", "../out", "/srv/ev"],
)
def test_directory_hidden_in_or_outside_the_output_directory(
    tmp_path: Path, directory: str
) -> None:
    events = configured(tmp_path, f"[events]\ndirectory = {directory.format(tmp=tmp_path)}\n")
    assert Path(events.directory).is_absolute()


@pytest.mark.parametrize(
    "directory", ["events", "x/.events", "{tmp}/in", ".", "{tmp}/in/.hidden/../visible"]
)
def test_directory_visible_in_the_output_directory(tmp_path: Path, directory: str) -> None:
    error = error_of(tmp_path, f"[events]\ndirectory = {directory.format(tmp=tmp_path)}\n")
    assert error.line == 5
    assert error.reason.startswith("directory: the events directory ")
    assert f"is inside the output directory {tmp_path}/in, where received files" in error.reason


def test_default_directory_visible_in_the_output_directory_points_at_index(
    tmp_path: Path,
) -> None:
    head = "[receiver]\noutput-directory = {tmp}/in\nindex = {tmp}/in/db/index.sqlite\n"
    error = error_of(tmp_path, "[completion]\n", head)
    assert error.line == 3
    assert error.reason.startswith(f"index: the events directory {tmp_path}/in/db/.events is")


def test_directory_follows_symbolic_links(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "in")
    error = error_of(tmp_path, f"[events]\ndirectory = {tmp_path}/link/visible\n")
    assert (error.line, error.reason[:32]) == (5, "directory: the events directory ")


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("[completion]\nseries-quiet = 0\n", 5, "series-quiet: must be more than 0: '0'"),
        ("[completion]\nstudy-quiet = 5 days\n", 5, "study-quiet: not a duration"),
        ("[completion]\nmax-age = never\n", 5, "max-age: not a duration"),
        (
            "[completion]\nexpected-series = 0\n",
            5,
            "expected-series: 0 is out of range (must be at least 1)",
        ),
        ("[completion]\nexpected-series = two\n", 5, "expected-series: not a whole number"),
        (
            "[completion]\nrequired-modalities = CT ct\n",
            5,
            "required-modalities: not a Modality code (1 to 16 of A-Z, 0-9 and _, like CT"
            " or SR): 'ct'",
        ),
        ("[completion]\nrequired-modalities = C-T\n", 5, "not a Modality code"),
        ("[completion]\nrequired-modalities = ABCDEFGHIJKLMNOPQ\n", 5, "not a Modality code"),
        ("[completion]\nquiet = 60s\n", 5, "unknown key 'quiet' in section [completion]"),
        (
            "[completion]\nseries-quiet = 5min\nstudy-quiet = 4min\n",
            6,
            "study-quiet: study-quiet (240 s) is shorter than series-quiet (300 s); a study"
            " cannot complete before its series",
        ),
        # study-quiet left at its default (3 min): series-quiet is at fault.
        ("\n[completion]\nseries-quiet = 4min\n", 6, "series-quiet: study-quiet (180 s) is"),
        ("[events]\nmanifests = study-done\n", 5, "manifests: 'study-done' is not one of: "),
        ("[events]\nmanifests = none study-complete\n", 5, "manifests: 'none' is not one of"),
        ("[events]\nhook-concurrency = 0\n", 5, "hook-concurrency: 0 is out of range"),
        ("[events]\nhook-concurrency = 65\n", 5, "(must be from 1 to 64)"),
        ("[events]\ndirectory =\n", 5, "directory: empty"),
        ("[events]\nmanifest = none\n", 5, "unknown key 'manifest' in section [events]"),
        ("[hook]\nevent = study-complete\n", 4, "[hook]: a hook name is one word"),
        ("[hook a.b]\nevent = study-complete\n", 4, "a hook name is one word"),
        ("[hook h]\ncommand = /bin/true\n", 4, "[hook h] needs event"),
        ("[hook h]\nevent = study-complete\n", 4, "[hook h] needs command"),
        (
            "[hook h]\nevent = study-completed\ncommand = /bin/true\n",
            5,
            "event: 'study-completed' is not one of: instance-stored, series-complete,"
            " study-complete",
        ),
        ("[hook h]\nevent = study-complete\ncommand = /bin/true\nmodalities = mr\n", 7, "'mr'"),
        ("[hook h]\nevent = study-complete\ncommand = /bin/true\ntimeout = 0\n", 7, "timeout:"),
        ("[hook h]\nevent = study-complete\ncommand = /bin/true\nretries = -1\n", 7, "retries:"),
        (
            "[hook h]\nevent = study-complete\ncommand = /bin/true\nretry-delay = 1d\n",
            7,
            "retry-delay: not a duration",
        ),
        (
            "[hook h]\nevent = study-complete\ncommand = /bin/true\nshell = yes\n",
            7,
            "unknown key 'shell' in section [hook h]",
        ),
        ("[completed]\n", 4, "unknown section [completed]"),
        (
            "[hooks x]\n",
            4,
            "unknown section [hooks x] (receiver, logging, tls, completion, events,"
            " metrics, status, commitment, profile NAME, peer NAME, hook NAME)",
        ),
        ("[peer p]\n[completion]\n[peer q]\nrequired-modalities = ?\n", 7, "'?'"),
        (
            "[completion]\n[profile p]\nsop-classes = CTImageStorage\nexpected-series = x\n",
            7,
            "expected-series: not a whole number",
        ),
    ],
)
def test_errors_name_the_line_and_reason(tmp_path: Path, text: str, line: int, reason: str) -> None:
    error = error_of(tmp_path, text)
    assert error.line == line
    assert reason in error.reason


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("/bin/ready {StudyUID}", "command: unknown placeholder {StudyUID} (known: "),
        ("/bin/ready {manifest!r}", "unknown placeholder {manifest!r}"),
        ("/bin/ready {manifest:>9}", "unknown placeholder {manifest:>9}"),
        ("/bin/ready {__class__}", "unknown placeholder {__class__}"),
        ("/bin/ready {0}", "unknown placeholder {0}"),
        ("/bin/ready {manifest", "command: expected '}' before end of string"),
        ("/bin/ready }", "command: Single '}' encountered"),
        ("ready {manifest}", "command: the program must be an absolute path (no PATH search)"),
        ("./ready", "the program must be an absolute path"),
        ("{manifest}", "the program must be an absolute path"),
        ("/bin/{event}", "command: the program's path cannot hold a placeholder"),
        ('/bin/ready "{manifest}', "command: cannot split into arguments: No closing quotation"),
        ("/bin/ready 'it''s", "cannot split into arguments"),
        ("", "command: empty command"),
        ('""', "the program must be an absolute path (no PATH search): ''"),
    ],
)
def test_hostile_commands_are_errors_at_their_line(
    tmp_path: Path, command: str, reason: str
) -> None:
    error = error_of(tmp_path, f"[hook h]\nevent = study-complete\n\ncommand = {command}\n")
    assert error.line == 7
    assert reason in error.reason


def test_shell_syntax_in_a_command_is_literal(tmp_path: Path) -> None:
    events = configured(
        tmp_path,
        "[hook h]\nevent = series-complete\n"
        "command = /opt/x $(id) `id` a|b c&&d 'two words' --uid={SeriesInstanceUID}>f {{x}}\n",
    )
    assert events.hooks[0].command == (
        "/opt/x",
        "$(id)",
        "`id`",
        "a|b",
        "c&&d",
        "two words",
        "--uid={SeriesInstanceUID}>f",
        "{{x}}",
    )


def test_two_hook_sections_that_name_the_same_hook_are_refused(tmp_path: Path) -> None:
    hook = f"event = study-complete\ncommand = {COMMAND}\n"
    found = error_of(tmp_path, f"[hook a]\n{hook}[hook  a]\n{hook}")
    assert found.line == 7
    assert "a second hook named a" in found.reason
