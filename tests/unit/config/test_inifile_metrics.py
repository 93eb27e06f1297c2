"""The INI file's [metrics] and [status] sections: values, defaults, and errors with
their line."""

from __future__ import annotations

import re

import pytest

from dcmrecvd.config import inifile
from dcmrecvd.settings import Settings
from tests.support.paths import REPO

# Two lines: the first line of a test's own text is line 3.
HEAD = "[receiver]\naetitle = X\n"


def settings_of(text: str) -> Settings:
    return inifile.parse(HEAD + text, "test.conf").settings


def error_of(text: str) -> inifile.ConfigError:
    with pytest.raises(inifile.ConfigError) as info:
        settings_of(text)
    assert info.value.path == "test.conf"
    return info.value


def test_both_are_off_without_the_sections() -> None:
    settings = settings_of("")
    assert (settings.metrics_port, settings.status_socket) == (None, None)
    assert settings.metrics_address == "127.0.0.1"
    embedded = inifile.read(inifile.EMBEDDED).settings
    assert (embedded.metrics_port, embedded.status_socket) == (None, None)


def test_every_key() -> None:
    settings = settings_of(
        "[metrics]\naddress = 0.0.0.0\nport = 9380\n[status]\nsocket = /run/dcmrecvd/status.sock\n"
    )
    assert (settings.metrics_address, settings.metrics_port) == ("0.0.0.0", 9380)
    assert settings.status_socket == "/run/dcmrecvd/status.sock"


@pytest.mark.parametrize(("written", "address"), [("::1", "::1"), ("0:0::0:1", "::1")])
def test_an_ipv6_address_is_written_as_python_binds_it(written: str, address: str) -> None:
    assert settings_of(f"[metrics]\naddress = {written}\nport = 1\n").metrics_address == address


@pytest.mark.parametrize("off", ["none", "off", "OFF"])
def test_port_and_socket_can_be_turned_off_by_name(off: str) -> None:
    settings = settings_of(f"[metrics]\nport = {off}\n[status]\nsocket = {off}\n")
    assert (settings.metrics_port, settings.status_socket) == (None, None)


def test_the_shipped_file_serves_status_and_its_metrics_example_parses() -> None:
    shipped = REPO / "etc/dcmrecvd/dcmrecvd.conf"
    settings = inifile.load(shipped).settings
    assert settings.status_socket == "/run/dcmrecvd/status.sock"
    assert settings.metrics_port is None
    text = shipped.read_text()
    start = text.index("# The Prometheus metrics endpoint")
    example = text[start : text.index("\n\n", start)]
    lines = re.findall(r"^#\s?(\[metrics\]|[a-z-]+ = .*)$", example, re.MULTILINE)
    assert lines[0] == "[metrics]", lines
    uncommented = settings_of("\n".join(lines) + "\n")
    assert (uncommented.metrics_address, uncommented.metrics_port) == ("127.0.0.1", 9380)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("[metrics]\naddress = localhost\n", 4, "address: not an IP address"),
        ("[metrics]\n\naddress = 10.0.0.300\n", 5, "'10.0.0.300'"),
        ("[metrics]\nport = 0\n", 4, "port: 0 is out of range (must be from 1 to 65535)"),
        ("[metrics]\nport = 65536\n", 4, "port: 65536 is out of range"),
        ("[metrics]\nport = http\n", 4, "port: not a whole number: 'http'"),
        ("[metrics]\npath = /metrics\n", 4, "unknown key 'path' in section [metrics]"),
        ("[status]\nsocket = run/status.sock\n", 4, "socket: not an absolute path"),
        ("[status]\nsocket =\n", 4, "socket: not an absolute path: ''"),
        (
            f"[status]\nsocket = /{'s' * 107}\n",
            4,
            "socket: 108 bytes is too long for an AF_UNIX socket path (at most 107)",
        ),
        ("[status]\nmode = 0660\n", 4, "unknown key 'mode' in section [status]"),
        ("[metrics]\n[metrics]\n", 4, "section [metrics] appears twice"),
        (
            "[stats]\n",
            3,
            "unknown section [stats] (receiver, logging, tls, completion, events, metrics,"
            " status, commitment, profile NAME, peer NAME, hook NAME)",
        ),
    ],
)
def test_errors_name_the_line_and_reason(text: str, line: int, reason: str) -> None:
    error = error_of(text)
    assert error.line == line
    assert reason in error.reason
