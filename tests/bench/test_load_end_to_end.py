"""bench/load.py as the lead runs it, on a tiny corpus: every receiver, every run
verified, and the table has a row for each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.slow


def test_a_tiny_window_runs_verifies_and_prints_the_table(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "load.py"),
            "--scenarios", "1,2",
            "--repeat", "1",
            "--count", "20",
            "--workdir", str(tmp_path / "work"),
            "--json", str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    titles = [row.split("|")[1].strip() for row in rows]
    receivers = [row.split("|")[2].strip() for row in rows]
    assert "CT x20, 1 assoc" in titles
    assert "CT x20, 2 assocs" in titles
    assert receivers.count("dcmrecvd") == 2
    assert "dcmrecv" in receivers
    assert "storescp --fork" in receivers
    assert receivers.count("disk: durable files, 1 writer") == 1
    assert receivers.count("disk: durable files, 2 writers") == 1

    doc = json.loads(report.read_text())
    runs = [run for scenario in doc["scenarios"] for run in scenario["runs"]]
    assert len(runs) == 4
    assert all(run["verified"] for run in runs), [run["errors"] for run in runs]
    assert all(run["verification"]["files"] >= 20 for run in runs)
    assert all(run["verification"]["compared"] > 0 for run in runs)
    limits = [limit for scenario in doc["scenarios"] for limit in scenario["limits"]]
    assert all(limit["disk"]["files"] == 20 and limit["loopback"] for limit in limits)
    # Latency is probed for the receivers that serve associations at once.
    probed = {run["receiver"] for run in runs if run["probed"]}
    assert probed == {"dcmrecvd", "storescp --fork"}
