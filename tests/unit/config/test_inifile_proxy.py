"""proxy-protocol and trusted-proxies: per listener, in [receiver] and [tls]."""

from __future__ import annotations

import ipaddress

import pytest

from dcmrecvd.config import inifile
from dcmrecvd.config.access import ProxyPolicy

TLS = "[tls]\nprivate-key = k.pem\ncertificate = c.pem\n"


def parse(text: str) -> inifile.Config:
    return inifile.parse(text, "test.conf")


def test_off_by_default_on_both_listeners() -> None:
    settings = parse(TLS).settings
    assert settings.proxy is None
    assert settings.tls is not None and settings.tls.proxy is None


def test_required_with_addresses_and_ranges() -> None:
    settings = parse(
        "[receiver]\nproxy-protocol = required\n"
        "trusted-proxies = 192.0.2.10, 10.0.0.0/8 fd00::/64\n"
    ).settings
    assert settings.proxy == ProxyPolicy(
        (
            ipaddress.ip_network("192.0.2.10/32"),
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("fd00::/64"),
        )
    )
    assert settings.tls is None


def test_each_listener_has_its_own() -> None:
    settings = parse(TLS + "proxy-protocol = required\ntrusted-proxies = 192.0.2.10\n").settings
    assert settings.proxy is None
    assert settings.tls is not None and settings.tls.proxy is not None
    assert settings.tls.proxy.trusts("192.0.2.10")


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("192.0.2.10", True),
        ("::ffff:192.0.2.10", True),  # what a dual-stack listener sees of it
        ("192.0.2.11", False),
        ("10.200.1.1", True),
        ("fd00::1", True),
        ("fd01::1", False),
        ("not an address", False),
    ],
)
def test_trusts(address: str, trusted: bool) -> None:
    policy = parse(
        "[receiver]\nproxy-protocol = required\ntrusted-proxies = 192.0.2.10 10.0.0.0/8 fd00::/64\n"
    ).settings.proxy
    assert policy is not None
    assert policy.trusts(address) is trusted


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (
            "[receiver]\nproxy-protocol = yes\n",
            2,
            "proxy-protocol: 'yes' is not off or required",
        ),
        (
            "[receiver]\nport = 104\nproxy-protocol = required\n",
            3,
            "proxy-protocol = required needs trusted-proxies",
        ),
        (
            "[receiver]\ntrusted-proxies = 10.0.0.1\n",
            2,
            "trusted-proxies: only read with proxy-protocol = required",
        ),
        (
            "[receiver]\nproxy-protocol = required\ntrusted-proxies = 10.0.0.1, haproxy.local\n",
            3,
            "trusted-proxies: not an IP address or CIDR range: 'haproxy.local'",
        ),
        (
            TLS + "proxy-protocol = required\n",
            4,
            "proxy-protocol = required needs trusted-proxies",
        ),
    ],
)
def test_errors_name_file_line_and_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(inifile.ConfigError) as info:
        parse(text)
    assert info.value.line == line and reason in info.value.reason
    assert str(info.value).startswith(f"test.conf:{line}: ")
