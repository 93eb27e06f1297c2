"""The metrics endpoint as a real Prometheus sees it (issue 18): DCMTK's storescu stores
as two [peer] rules and a stranger is refused, a reload and a killed worker come
between, and what Prometheus scraped adds up to what was sent, per peer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import dicomgen, waiting
from tests.support.daemon import conf, dcmrecvd
from tests.support.daemon import workers as worker_pids
from tests.support.net import LOCALHOST, free_port
from tests.support.prometheus import Sample, prometheus
from tests.support.promtool import check_metrics

pytestmark = pytest.mark.slow

DEADLINE = 30.0
PEERS = "[peer ct]\ncalling-aetitle = CT1\n[peer mr]\ncalling-aetitle = MR1\n"
CALLING = {"ct": "CT1", "mr": "MR1"}
SOP_CLASS = {"ct": dicomgen.CT, "mr": dicomgen.MR}


def wait_until(test: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    return waiting.found(test, what, timeout)


class Sender:
    """DCMTK's storescu, one association per call; counts what dcmrecvd answered."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.files = tmp / "send"
        self.files.mkdir()
        self.port = port
        self.sent = {peer: 0 for peer in CALLING}
        self.associations = 0

    def push(self, peer: str, count: int) -> None:
        """`count` new objects as `peer`'s calling AE title, one association each."""
        for _ in range(count):
            self.sent[peer] += 1
            uid = f"1.2.3.4.7.{list(CALLING).index(peer) + 1}.{self.sent[peer]}"
            path = dicomgen.write(dicomgen.Spec(SOP_CLASS[peer], uid), self.files / f"{uid}.dcm")
            self.storescu(CALLING[peer], path, expect_success=True)
            self.associations += 1

    def storescu(self, calling: str, path: Path, *, expect_success: bool) -> str:
        run = subprocess.run(
            ["storescu", "-aet", calling, "-aec", "DCMRECVD", LOCALHOST, str(self.port), str(path)],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        output = run.stdout + run.stderr
        assert (run.returncode == 0) == expect_success, output
        return output


def values(result: list[Sample], label: str) -> dict[str, float]:
    return {labels.get(label, ""): value for labels, value in result}


def scalar(result: list[Sample]) -> float | None:
    """The one value of a one-element vector, None when empty."""
    assert len(result) <= 1, result
    return result[0][1] if result else None


def wait_for_workers(pid: int, count: int, *, without: int = 0) -> set[int]:
    def settled() -> set[int]:
        now = worker_pids(pid)
        return now if len(now) == count and without not in now else set()

    found: set[int] = wait_until(settled, f"{count} workers, {without or 'none'} gone")
    return found


def written(pid: int) -> int:
    """Bytes the process has written (files and logs): a worker that served is ahead."""
    text = Path(f"/proc/{pid}/io").read_text()
    match = re.search(r"^wchar: (\d+)$", text, re.MULTILINE)
    assert match, text
    return int(match.group(1))


def test_prometheus_sees_every_store_per_peer_across_a_reload_and_a_killed_worker(
    tmp_path: Path,
) -> None:
    port, metrics = free_port(), free_port()
    out = tmp_path / "in"
    out.mkdir()
    endpoint = f"[metrics]\naddress = {LOCALHOST}\nport = {metrics}\n"
    text = conf(port, out, PEERS + endpoint, workers="2", default_policy="reject")
    sender = Sender(tmp_path, port)
    stranger = dicomgen.write(dicomgen.Spec(dicomgen.CT, "1.2.3.9.9"), tmp_path / "stranger.dcm")
    with (
        dcmrecvd(tmp_path, text) as daemon,
        prometheus(tmp_path, [f"{LOCALHOST}:{metrics}"], job="dcmrecvd") as prom,
    ):
        pid = daemon.proc.pid
        assert len(worker_pids(pid)) == 2
        sender.push("ct", 3)
        sender.push("mr", 2)
        refused = sender.storescu("STRANGER", stranger, expect_success=False)
        assert "Association Rejected" in refused
        first = prom.wait_for_value("dcmrecvd_config_info", lambda r: len(r) == 1)
        before = first[0][0]["sha256"]
        assert re.fullmatch(r"[0-9a-f]{64}", before), first

        # A reload with another file: its workers replace the old ones.
        daemon.conf.write_text(text + "# reloaded\n")
        asked = time.time()
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.notify.wait_for(lambda m: m.get("RELOADING") == "1")
        daemon.notify.wait_for(lambda m: m.get("READY") == "1")
        ready = time.time()
        workers = wait_for_workers(pid, 2)
        sender.push("ct", 4)
        sender.push("mr", 3)

        # A worker that served some of those dies; the parent starts another.
        victim = max(workers, key=written)
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for_workers(pid, 2, without=victim)
        assert len(replaced - workers) == 1
        sender.push("ct", 2)
        sender.push("mr", 2)
        assert sender.sent == {"ct": 9, "mr": 7}

        # Prometheus has scraped after the last push once the totals are there.
        instances = prom.wait_for_value(
            "sum by (peer) (dcmrecvd_received_instances_total) > 0",
            lambda r: values(r, "peer") == sender.sent,
        )
        assert len(instances) == 2
        successes = prom.query(
            'sum by (peer) (dcmrecvd_cstore_responses_total{status="success"}) > 0'
        )
        assert values(successes, "peer") == sender.sent
        others = prom.query('sum(dcmrecvd_cstore_responses_total{status!="success"}) > 0')
        assert others == []
        stored = prom.query("sum by (peer) (dcmrecvd_received_bytes_total) > 0")
        # At least their pixel data, 16 bytes each.
        assert values(stored, "peer").keys() == sender.sent.keys(), stored
        assert all(v >= 16 * sender.sent[peer] for peer, v in values(stored, "peer").items())
        rejected = prom.query('sum(dcmrecvd_associations_rejected_total{reason="calling-aetitle"})')
        assert scalar(rejected) == 1
        assert scalar(prom.query("sum(dcmrecvd_associations_rejected_total)")) == 1
        accepted = prom.query("sum(dcmrecvd_associations_accepted_total)")
        assert scalar(accepted) == sender.associations == 9 + 7
        assert scalar(prom.query("sum(dcmrecvd_worker_deaths_total)")) == 1
        starts = scalar(prom.query("sum(dcmrecvd_worker_starts_total)"))
        assert starts is not None and starts >= 3  # two, and the one that replaced the victim
        assert scalar(prom.query("sum(dcmrecvd_workers)")) == 2
        reloads = prom.query("sum by (result) (dcmrecvd_reloads_total) > 0")
        assert values(reloads, "result") == {"success": 1}
        last = scalar(prom.query("max(dcmrecvd_last_reload_success_timestamp_seconds)"))
        assert last is not None and asked - 1 <= last <= ready + 1, (asked, last, ready)
        # The file in force since the reload, and only it (the old series went stale).
        prom.wait_for_value(
            "dcmrecvd_config_info",
            lambda r: [labels["sha256"] != before for labels, _v in r] == [True],
        )
        commits = prom.query("sum(dcmrecvd_store_commit_seconds_count)")
        assert scalar(commits) == sum(sender.sent.values())

        # The exposition itself, scraped directly, is what promtool calls clean.
        with urllib.request.urlopen(f"http://{LOCALHOST}:{metrics}/metrics", timeout=10) as r:
            exposition = r.read().decode()
        assert check_metrics(exposition) == ""
        assert prom.stop() == 0
        assert daemon.stop() == 0
