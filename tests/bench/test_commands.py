"""What the harness runs: scenarios, the order of a window, storescu's shares and
command lines, and how each receiver is started."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from bench.loadbench import receivers
from bench.loadbench.push import log_errors, shares, storescu_argv
from bench.loadbench.receivers import DCMRECV, STORESCP, Launch
from bench.loadbench.scenarios import DEFAULT, parse, scenario
from bench.loadbench.ulclient import TlsFiles
from bench.loadbench.window import order

TLS = TlsFiles(Path("/k/bench.key"), Path("/k/bench.pem"))


def test_scenario_keys() -> None:
    one, sixteen, tls, small, big = (scenario(k) for k in ("1", "16", "tls16", "small1", "big"))
    assert (one.kind, one.associations, one.tls, one.reference) == ("ct", 1, False, DCMRECV)
    assert (sixteen.associations, sixteen.reference) == (16, STORESCP)
    assert (tls.kind, tls.associations, tls.tls) == ("ct", 16, True)
    assert (small.kind, small.reference) == ("small", DCMRECV)
    assert (big.kind, big.reference.name, big.probe) == ("big", "dcmrecv +B", False)
    assert scenario("4@dcmrecv").reference == DCMRECV
    assert scenario("1@storescp").reference == STORESCP
    assert [s.key for s in parse(DEFAULT)] == ["1", "4", "16", "64", "small1", "tls1", "tls16"]
    assert [s.key for s in parse(" 1, 16 ,1,")] == ["1", "16"]


@pytest.mark.parametrize("key", ["0", "tls", "smalltls1", "big2", "4@orthanc", "x"])
def test_unknown_scenario_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario(key)


def test_each_participant_goes_first_in_turn() -> None:
    participants = ["dcmrecvd", "storescp", "limits"]
    firsts = [order(participants, rep)[0] for rep in range(4)]
    assert firsts == ["dcmrecvd", "storescp", "limits", "dcmrecvd"]
    assert sorted(order(participants, 1)) == sorted(participants)


def test_shares_are_contiguous_and_even() -> None:
    parts = shares(list(range(10)), 4)
    assert [len(part) for part in parts] == [2, 3, 2, 3]
    assert [item for part in parts for item in part] == list(range(10))
    assert shares([1], 1) == [[1]]


def test_storescu_command_lines() -> None:
    plain = storescu_argv([Path("/c/a.dcm")], 104, 7, None)
    assert plain == [
        "storescu", "-R", "-aet", "LOAD007", "-aec", "ANY-SCP", "-ta", "120", "-pdu", "131072",
        "127.0.0.1", "104", "/c/a.dcm",
    ]  # fmt: skip
    assert "-R" not in storescu_argv([Path("/c/a.dcm")], 104, 7, None, every_class=True)
    tls = storescu_argv([Path("/c/a.dcm")], 104, 0, TLS)
    assert tls[tls.index("+tls") : tls.index("+tls") + 5] == [
        "+tls", "/k/bench.key", "/k/bench.pem", "+cf", "/k/bench.pem",
    ]  # fmt: skip


def test_storescu_error_lines_are_found() -> None:
    text = "I: Sending file\nE: Store Failed, file: x\nW: careful\nF: bad\n"
    assert log_errors(text) == ["E: Store Failed, file: x", "F: bad"]


def test_dcmtk_receivers_command_lines(tmp_path: Path) -> None:
    launch = Launch(104, tmp_path / "out", tmp_path, 4, TLS)
    argv = STORESCP.command(launch)
    assert argv[:2] == ["/usr/bin/storescp", "--fork"]
    assert argv[2:8] == [
        "-xf",
        "/etc/dcmtk/storescp.cfg",
        "Default",
        "-od",
        str(tmp_path / "out"),
        "-pdu",
    ]
    assert argv[-6:] == ["+tls", "/k/bench.key", "/k/bench.pem", "+cf", "/k/bench.pem", "104"]
    plain = DCMRECV.command(Launch(104, tmp_path / "out", tmp_path, 1, None))
    assert "--fork" not in plain
    assert "+tls" not in plain
    assert plain[-1] == "104"


def read_config(argv: list[str]) -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(argv[argv.index("--config") + 1])
    return parser


def test_dcmrecvd_gets_dcmtks_profile_and_fsync(tmp_path: Path) -> None:
    daemon = receivers.dcmrecvd(tmp_path / "venv" / "bin")
    argv = daemon.command(Launch(104, tmp_path / "out", tmp_path, 16, None))
    assert argv[0] == str(tmp_path / "venv" / "bin" / "dcmrecvd")
    config = read_config(argv)
    assert dict(config["receiver"]) == {
        "port": "104",
        "bind-address": "127.0.0.1",
        "output-directory": str(tmp_path / "out"),
        "max-pdu": "131072",
        "profile": "bench",
    }
    assert dict(config["profile bench"]) == {
        "asconfig": "/etc/dcmtk/storescp.cfg",
        "asconfig-profile": "Default",
    }
    assert not config.has_section("tls")


def test_dcmrecvd_makes_room_for_the_probe_only_when_the_load_fills_it(tmp_path: Path) -> None:
    daemon = receivers.dcmrecvd(tmp_path)
    sixty_three = read_config(daemon.command(Launch(104, tmp_path, tmp_path, 63, None)))
    assert not sixty_three.has_option("receiver", "max-associations")
    sixty_four = read_config(daemon.command(Launch(104, tmp_path, tmp_path, 64, None)))
    assert sixty_four["receiver"]["max-associations"] == "65"


def test_dcmrecvd_over_tls_listens_for_it_on_the_pushed_port(tmp_path: Path) -> None:
    daemon = receivers.dcmrecvd(tmp_path)
    config = read_config(daemon.command(Launch(104, tmp_path, tmp_path, 1, TLS)))
    assert config["tls"]["port"] == "104"
    assert config["receiver"]["port"] != "104"
    assert config["tls"]["private-key"] == "/k/bench.key"
    assert config["tls"]["certificate"] == config["tls"]["ca-certificates"] == "/k/bench.pem"
    assert config["tls"]["peer-certificate"] == "require"
