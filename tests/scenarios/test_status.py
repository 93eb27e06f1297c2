"""`dcmrecvd status` against the real daemon: an association in progress, its object's
bytes growing as they arrive, then the object stored."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import rawpdu, waiting
from tests.support.daemon import DCMRECVD, conf, dcmrecvd
from tests.support.net import free_port

DEADLINE = 20.0
MIB = 1024 * 1024


def status(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DCMRECVD, "status", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE,
    )


def document(config: Path) -> dict[str, Any]:
    answer = status(config, "--json")
    assert answer.returncode == 0, answer.stderr
    found: dict[str, Any] = json.loads(answer.stdout)
    return found


def wait_until(test: Callable[[], Any], what: str) -> Any:
    return waiting.found(test, what, DEADLINE)


def live(config: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = document(config)["live"]
    return entries


def test_status_shows_a_large_object_arriving(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    socket_path = tmp_path / "status.sock"
    text = conf(port, out, f"[status]\nsocket = {socket_path}\n", workers="2")
    dataset = rawpdu.explicit_dataset("1.2.3.4.77", bytes(range(256)) * (8 * MIB // 256))
    pdus = rawpdu.dataset_pdus(1, dataset, fragment=64000)
    third = len(pdus) // 3
    with dcmrecvd(tmp_path, text) as daemon:
        config = daemon.conf
        assert live(config) == []
        peer = rawpdu.Peer(port, timeout=10)
        assert peer.associate(rawpdu.associate_rq(calling="BIGSENDER", max_pdu=131072))
        command = rawpdu.command_set(rawpdu.C_STORE_RQ, sop_instance="1.2.3.4.77")
        peer.send(rawpdu.p_data(rawpdu.pdv(1, rawpdu.COMMAND | rawpdu.LAST, command)))
        peer.send(b"".join(pdus[:third]))

        def arrived(least: int) -> Callable[[], dict[str, Any] | None]:
            def test() -> dict[str, Any] | None:
                entries = live(config)
                if len(entries) == 1 and entries[0]["current_bytes"] >= least:
                    return entries[0]
                return None

            return test

        first = wait_until(arrived(third * 60000), "a third of the object arrived")
        assert first["calling_aetitle"] == "BIGSENDER"
        assert first["current_sop_instance_uid"] == "1.2.3.4.77"
        assert first["tls"] is False and first["instances"] == 0
        human = status(config)
        assert human.returncode == 0, human.stderr
        assert "BIGSENDER" in human.stdout and "1.2.3.4.77" in human.stdout
        peer.send(b"".join(pdus[third : 2 * third]))
        second = wait_until(arrived(2 * third * 60000), "two thirds arrived")
        assert second["current_bytes"] > first["current_bytes"]
        peer.send(b"".join(pdus[2 * third :]))
        assert rawpdu.response_status(peer.read_pdu(timeout=DEADLINE)) == 0

        def stored() -> dict[str, Any] | None:
            entries = live(config)
            return entries[0] if entries and entries[0]["instances"] == 1 else None

        done = wait_until(stored, "the object stored")
        assert done["bytes"] == len(dataset) and done["current_bytes"] == 0
        peer.send(rawpdu.release_rq())
        assert peer.read_pdu() is not None  # A-RELEASE-RP
        wait_until(lambda: live(config) == [], "the association gone from the status")
        counters = document(config)
        assert daemon.stop() == 0
    assert json.dumps(counters)  # the whole document is JSON
