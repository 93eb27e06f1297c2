"""Logging as DCMTK's tools do it: one `X: message` line per line of text on stderr.

DCMTK prefixes every line with the first letter of its level (F, E, W, I, D, T). Our own
messages go to the logger "dcmrecv" and its children. The libraries we build on log a lot
at INFO and DEBUG that DCMTK's dcmrecv never shows, so they are held at WARNING unless
the level is trace. `-lc FILE` replaces all of this with a configuration in the format of
Python's `logging.config.fileConfig`; `DcmtkFormatter` can be named in such a file.
"""

from __future__ import annotations

import configparser
import logging
import logging.config
import os
import sys
from pathlib import Path
from typing import TextIO

from dcmrecvd.logfields import AssociationFields
from dcmrecvd.settings import LogLevel, Settings

LOGGER_NAME = "dcmrecv"

# DCMTK has one level below DEBUG; Python has none.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS: dict[LogLevel, int] = {
    LogLevel.FATAL: logging.CRITICAL,
    LogLevel.ERROR: logging.ERROR,
    LogLevel.WARN: logging.WARNING,
    LogLevel.INFO: logging.INFO,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.TRACE: TRACE,
}

# Highest threshold first: a record gets the letter of the first threshold it reaches.
_PREFIXES = (
    (logging.CRITICAL, "F"),
    (logging.ERROR, "E"),
    (logging.WARNING, "W"),
    (logging.INFO, "I"),
    (logging.DEBUG, "D"),
)

LIBRARIES = ("pynetdicom", "pydicom")

# fileConfig() needs these sections, each with a "keys" entry.
_REQUIRED_SECTIONS = ("formatters", "handlers", "loggers")


class LogConfigError(Exception):
    """A --log-config file that Python's logging refused; the text is for the user."""


class DcmtkFormatter(logging.Formatter):
    """`X: text`, repeated on every line of a multi-line message (DCMTK's layout)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = level_letter(record.levelno) + ": "
        return "\n".join(prefix + line for line in text.split("\n"))


class _StderrHandler(logging.StreamHandler[TextIO]):
    """The default handler; its own class so that a second setup() replaces it."""


def counted(count: int, singular: str, plural: str) -> str:
    """`count` and the noun that agrees with it: "1 worker process", "2 worker processes"."""
    return f"{count} {singular if count == 1 else plural}"


class _NetworkTimeoutLine(logging.Filter):
    """Hold pynetdicom's "Network timeout reached" ERROR to DEBUG.

    DCMTK's dcmrecv says nothing above DEBUG when its DIMSE timeout (-td) ends an idle
    association, and the receiver logs what dcmrecv logs for the other timeouts.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Network timeout reached":
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


logging.getLogger("pynetdicom.association").addFilter(_NetworkTimeoutLine())


def level_letter(levelno: int) -> str:
    """F, E, W, I, D or T: the prefix DCMTK writes for this level."""
    for threshold, letter in _PREFIXES:
        if levelno >= threshold:
            return letter
    return "T"


def library_level(level: int) -> int:
    """Libraries say nothing below WARNING, except at trace, where they say everything."""
    return level if level == TRACE else max(level, logging.WARNING)


def setup(settings: Settings, stream: TextIO | None = None) -> None:
    """Configure logging for `settings`; `stream` (default: stderr) receives the lines."""
    if settings.log_config is not None:
        _apply_config_file(settings.log_config)
        return
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(DcmtkFormatter())
    root.addHandler(handler)
    set_level(settings)


def use_handler(handler: logging.Handler, settings: Settings) -> None:
    """Send every log record to `handler` alone (the daemon's journal, syslog or file)."""
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    handler.addFilter(AssociationFields())
    root.addHandler(handler)
    set_level(settings)


def set_level(settings: Settings) -> None:
    """Apply the settings' log level to our loggers and the libraries'."""
    level = LEVELS[settings.log_level]
    logging.getLogger().setLevel(level)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(library_level(level))


def _apply_config_file(path: Path) -> None:
    try:
        # Loggers made at import time (ours and the libraries') must keep working.
        logging.config.fileConfig(path, disable_existing_loggers=False, encoding="utf-8")
    except Exception as exc:  # fileConfig fails with whatever the named classes raise
        raise LogConfigError(f"Specified --log-config file cannot be used: {exc!r}") from exc


def announce(message: str) -> None:
    """Log `message` at INFO on "dcmrecv" whatever the level, as DCMTK's --arguments does."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, (), None))


def config_problem(path: str) -> str | None:
    """Why `path` cannot be a --log-config file (DCMTK's messages), or None if it can."""
    if not os.path.exists(path) or os.path.isdir(path):
        return "Specified --log-config file does not exist"
    if not os.access(path, os.R_OK):
        return "Specified --log-config file cannot be read"
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return "Specified --log-config file does not contain any valid settings"
    except OSError:
        return "Specified --log-config file cannot be read"
    if not parser.sections():
        return "Specified --log-config file does not contain any settings"
    if not all(parser.has_option(section, "keys") for section in _REQUIRED_SECTIONS):
        return "Specified --log-config file does not contain any valid settings"
    loggers = [name.strip() for name in parser.get("loggers", "keys").split(",")]
    if "root" not in loggers or not parser.has_section("logger_root"):
        return "Specified --log-config file does not set up the root logger"
    return None
