"""DCMTK-style log lines, levels, the libraries' levels, and -lc configuration files."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from dcmrecvd import logs
from dcmrecvd.settings import LogLevel, Settings

# Every test here sets up process-wide logging.
pytestmark = pytest.mark.usefixtures("restore_logging")


def configured(level: LogLevel) -> io.StringIO:
    stream = io.StringIO()
    logs.setup(Settings(log_level=level), stream)
    return stream


def log_everything(name: str = "dcmrecv") -> None:
    logger = logging.getLogger(name)
    for levelno in (logging.CRITICAL, logging.ERROR, logging.WARNING):
        logger.log(levelno, "%s", logging.getLevelName(levelno))
    logger.info("INFO")
    logger.debug("DEBUG")
    logger.log(logs.TRACE, "TRACE")


ALL_LINES = ["F: CRITICAL", "E: ERROR", "W: WARNING", "I: INFO", "D: DEBUG", "T: TRACE"]


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        (LogLevel.FATAL, 1),
        (LogLevel.ERROR, 2),
        (LogLevel.WARN, 3),
        (LogLevel.INFO, 4),
        (LogLevel.DEBUG, 5),
        (LogLevel.TRACE, 6),
    ],
)
def test_each_level_shows_itself_and_everything_more_severe(level: LogLevel, shown: int) -> None:
    stream = configured(level)
    log_everything()
    assert stream.getvalue().splitlines() == ALL_LINES[:shown]


def test_the_default_level_is_warn() -> None:
    stream = io.StringIO()
    logs.setup(Settings(), stream)
    log_everything("dcmrecv.scp")
    assert stream.getvalue().splitlines() == ALL_LINES[:3]


def test_every_line_of_a_message_gets_the_prefix() -> None:
    # DCMTK logs its rcsid with a trailing newline: the last line is a bare "D: ".
    stream = configured(LogLevel.DEBUG)
    logging.getLogger("dcmrecv").debug("first\nsecond\n")
    assert stream.getvalue() == "D: first\nD: second\nD: \n"


def test_a_traceback_is_prefixed_too() -> None:
    stream = configured(LogLevel.WARN)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("dcmrecv").exception("failed")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "E: failed"
    assert lines[-1] == "E: ValueError: boom"
    assert all(line.startswith("E: ") for line in lines)


@pytest.mark.parametrize(
    ("levelno", "letter"),
    [
        (60, "F"),
        (50, "F"),
        (45, "E"),
        (40, "E"),
        (30, "W"),
        (25, "I"),
        (20, "I"),
        (10, "D"),
        (logs.TRACE, "T"),
        (1, "T"),
    ],
)
def test_level_letters(levelno: int, letter: str) -> None:
    assert logs.level_letter(levelno) == letter


def test_trace_has_a_name() -> None:
    assert logging.getLevelName(logs.TRACE) == "TRACE"


@pytest.mark.parametrize("library", logs.LIBRARIES)
@pytest.mark.parametrize(
    ("level", "shown"),
    [
        (LogLevel.FATAL, 1),
        (LogLevel.WARN, 3),
        (LogLevel.INFO, 3),
        (LogLevel.DEBUG, 3),
        (LogLevel.TRACE, 6),
    ],
)
def test_libraries_show_warnings_only_unless_trace(
    library: str, level: LogLevel, shown: int
) -> None:
    stream = configured(level)
    log_everything(f"{library}.somewhere")
    assert stream.getvalue().splitlines() == ALL_LINES[:shown]


def test_a_second_setup_replaces_the_first() -> None:
    first = configured(LogLevel.INFO)
    second = configured(LogLevel.WARN)
    logging.getLogger("dcmrecv").warning("once")
    logging.getLogger("dcmrecv").info("hidden")
    assert first.getvalue() == ""
    assert second.getvalue() == "W: once\n"


def test_announce_shows_even_in_quiet_mode() -> None:
    stream = configured(LogLevel.FATAL)
    logs.announce("calling 'dcmrecv' with 1 arguments: '104' \n")
    assert stream.getvalue() == "I: calling 'dcmrecv' with 1 arguments: '104' \nI: \n"


def test_setup_writes_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(Settings())
    logging.getLogger("dcmrecv").error("to stderr")
    assert capsys.readouterr().err == "E: to stderr\n"


# --- -lc: Python logging configuration files ---------------------------------------------

CONFIG = """\
[formatters]
keys = dcmtk

[formatter_dcmtk]
class = dcmrecvd.logs.DcmtkFormatter

[handlers]
keys = file

[handler_file]
class = FileHandler
formatter = dcmtk
args = ({path!r}, "w")

[loggers]
keys = root, cfgtest

[logger_root]
level = INFO
handlers = file

[logger_cfgtest]
level = DEBUG
handlers =
qualname = cfgtest
"""


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    config = tmp_path / "logging.cfg"
    config.write_text(text.format(path=str(tmp_path / "out.log")))
    return config


def test_a_config_file_replaces_the_default_setup(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.setup(Settings(log_config=write_config(tmp_path), log_level=LogLevel.FATAL), stream)
    logging.getLogger("dcmrecv").info("shown")
    logging.getLogger("dcmrecv").debug("hidden")
    logging.getLogger("cfgtest").debug("own level")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert (tmp_path / "out.log").read_text() == "I: shown\nD: own level\n"
    assert stream.getvalue() == ""


def test_a_config_file_python_refuses_is_a_log_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, CONFIG.replace("FileHandler", "NoSuchHandler"))
    with pytest.raises(logs.LogConfigError, match="Specified --log-config file cannot be used: "):
        logs.setup(Settings(log_config=config))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "does not contain any settings"),
        ("# only a comment\n", "does not contain any settings"),
        ("foo=bar\n", "does not contain any valid settings"),
        ("[a]\nx=1\n[a]\n", "does not contain any valid settings"),
        ("[loggers]\nkeys=root\n", "does not contain any valid settings"),
        (
            CONFIG.replace("keys = root, cfgtest", "keys = cfgtest"),
            "does not set up the root logger",
        ),
        (CONFIG.replace("[logger_root]", "[logger_other]"), "does not set up the root logger"),
    ],
)
def test_config_problems(tmp_path: Path, text: str, problem: str) -> None:
    assert logs.config_problem(str(write_config(tmp_path, text))) == (
        f"Specified --log-config file {problem}"
    )


def test_a_good_config_has_no_problem(tmp_path: Path) -> None:
    assert logs.config_problem(str(write_config(tmp_path))) is None


@pytest.mark.parametrize("name", ["", "missing.cfg", "."])
def test_a_missing_file_or_a_directory_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert logs.config_problem(name) == "Specified --log-config file does not exist"


def test_an_unreadable_file_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root reads everything, so ask the question the way the code does.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert logs.config_problem(str(write_config(tmp_path))) == (
        "Specified --log-config file cannot be read"
    )


def test_an_undecodable_file_has_no_valid_settings(tmp_path: Path) -> None:
    config = tmp_path / "latin1.cfg"
    config.write_bytes(b"[formatters]\nkeys = \xe9\n")
    assert logs.config_problem(str(config)) == (
        "Specified --log-config file does not contain any valid settings"
    )


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 worker processes"), (1, "1 worker process"), (2, "2 worker processes")],
)
def test_counted_agrees_with_the_count(count: int, text: str) -> None:
    assert logs.counted(count, "worker process", "worker processes") == text


@pytest.mark.parametrize(("level", "shown"), [(LogLevel.INFO, []), (LogLevel.TRACE, ["D"])])
def test_pynetdicoms_network_timeout_line_is_debug(level: LogLevel, shown: list[str]) -> None:
    # dcmrecv -td says nothing above DEBUG when an idle association times out.
    stream = configured(level)
    logging.getLogger("pynetdicom.association").error("Network timeout reached")
    logging.getLogger("pynetdicom.association").error("Association Aborted")
    letters = [line[0] for line in stream.getvalue().splitlines()]
    assert letters == [*shown, "E"]
