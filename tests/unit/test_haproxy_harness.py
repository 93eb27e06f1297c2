"""The HAProxy harness's pure parts: the example with or without its PROXY protocol line,
the variables it is run with, and the servers read from `show stat`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import haproxy
from tests.support.haproxy import Server, environment, render, servers


def test_render_keeps_the_example_as_shipped_with_the_proxy_protocol() -> None:
    text = haproxy.EXAMPLE.read_text()
    assert render(text, proxy_protocol=True) == text


def test_render_drops_only_the_proxy_line_without_it() -> None:
    text = haproxy.EXAMPLE.read_text()
    rendered = render(text, proxy_protocol=False)
    dropped = set(text.splitlines()) - set(rendered.splitlines())
    assert {line.strip() for line in dropped} == {haproxy.PROXY_LINE}
    assert len(rendered.splitlines()) == len(text.splitlines()) - 1
    # No other setting sends the header: the token is left in comments only.
    settings = [line.split("#", 1)[0] for line in rendered.splitlines()]
    assert not [line for line in settings if "send-proxy" in line]


@pytest.mark.parametrize("count", [0, 2])
def test_render_refuses_a_text_without_exactly_one_proxy_line(count: int) -> None:
    text = "backend b\n" + f"    {haproxy.PROXY_LINE}\n" * count
    with pytest.raises(ValueError, match=f"has {count} lines"):
        render(text, proxy_protocol=False)


def test_environment_names_the_examples_variables() -> None:
    variables = environment(
        (("127.0.0.1", 1104), ("198.18.1.1", 1104)),
        (("127.0.0.2", 2104), ("127.0.0.3", 3104)),
        Path("/s"),
        "500ms",
    )
    assert variables == {
        "DCMRECVD_LISTEN": "127.0.0.1:1104,198.18.1.1:1104",
        "DCMRECVD_NODE1": "127.0.0.2:2104",
        "DCMRECVD_NODE2": "127.0.0.3:3104",
        "DCMRECVD_STATS_SOCKET": "/s",
        "DCMRECVD_CHECK_INTER": "500ms",
    }
    text = haproxy.EXAMPLE.read_text()
    for name in variables:
        assert f'"${{{name}-' in text, f"the example does not use {name}"


SHOW_STAT = """\
# pxname,svname,scur,stot,wredis,status,check_status,check_duration
dicom,FRONTEND,1,7,,OPEN,,
dcmrecvd,node1,1,5,0,UP 1/2,* L7TOUT,2001
dcmrecvd,node2,0,2,1,DOWN,L4CON,0
dcmrecvd,BACKEND,1,7,1,UP,,
other,node1,0,0,0,MAINT,INI,
"""


def test_servers_reads_the_backends_nodes_from_show_stat() -> None:
    assert servers(SHOW_STAT) == {
        "node1": Server("node1", "UP 1/2", "L7TOUT", current=1, total=5, redispatched=0),
        "node2": Server("node2", "DOWN", "L4CON", current=0, total=2, redispatched=1),
    }
