"""Node names: what a configured one may be, and what a host name becomes."""

from __future__ import annotations

import socket

import pytest

from dcmrecvd import nodename


@pytest.mark.parametrize("name", ["a", "node-1", "dicom_2.example.org", "-x", "0", "x" * 64])
def test_valid_names_pass(name: str) -> None:
    assert nodename.check(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", ".a", "a/b", "a b", "a\x00", "ä", "x" * 65])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a node name"):
        nodename.check(name)


@pytest.mark.parametrize(
    ("hostname", "name"),
    [
        ("dicom-1.example.org", "dicom-1.example.org"),
        ("ws 12/b", "ws_12_b"),
        (".hidden", "hidden"),
        ("...", nodename.FALLBACK),
        ("", nodename.FALLBACK),
        ("höst", "h_st"),
        ("y" * 80, "y" * 64),
    ],
)
def test_a_host_name_becomes_a_valid_node_name(hostname: str, name: str) -> None:
    assert nodename.from_hostname(hostname) == name
    assert nodename.check(name) == name


def test_the_configured_name_wins_over_the_host_name() -> None:
    assert nodename.resolve("configured") == "configured"
    assert nodename.resolve(None) == nodename.from_hostname(socket.gethostname())
