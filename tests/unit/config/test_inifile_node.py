"""[receiver] node-name: the name that sets a node's files apart in a shared output
directory."""

from __future__ import annotations

import pytest

from dcmrecvd.config import inifile


def test_the_node_name_is_the_host_name_unless_set() -> None:
    assert inifile.parse("", "test.conf").settings.node_name is None
    found = inifile.parse("[receiver]\nnode-name = dicom-2.site_a\n", "test.conf")
    assert found.settings.node_name == "dicom-2.site_a"


@pytest.mark.parametrize(
    "value",
    [".hidden", "a/b", "two words", "node*", "é", "x" * 65],
)
def test_a_bad_node_name_is_refused_at_its_line(value: str) -> None:
    with pytest.raises(inifile.ConfigError) as info:
        inifile.parse(f"[receiver]\nport = 104\nnode-name = {value}\n", "test.conf")
    assert info.value.line == 3
    assert info.value.reason.startswith("node-name: not a node name (1 to 64 letters, digits,")
    assert str(info.value).startswith("test.conf:3: node-name: ")


def test_an_empty_node_name_is_refused() -> None:
    with pytest.raises(inifile.ConfigError) as info:
        inifile.parse("[receiver]\nnode-name =\n", "test.conf")
    assert (info.value.line, info.value.reason) == (
        2,
        "node-name: not a node name (1 to 64 letters, digits, '-', '_' and '.',"
        " not starting with '.'): ''",
    )
