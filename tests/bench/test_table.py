"""Medians over runs, ratios and the rendered table, from made-up measurements."""

from __future__ import annotations

import json

import pytest

from bench.loadbench import table
from bench.loadbench.probes import DiskRate, LoopbackRate
from bench.loadbench.results import LimitsRun, Run, ScenarioResult
from bench.loadbench.scenarios import scenario
from bench.loadbench.verify import Verification


def run(receiver: str, rep: int, wall_s: float, cpu_s: float, ok: bool = True) -> Run:
    made = Run(receiver, rep, 0, instances=100, bytes=50_000_000, wall_s=wall_s)
    made.cpu_user_s, made.cpu_sys_s = cpu_s * 0.75, cpu_s * 0.25
    made.peak_rss_mib, made.tree_rss_mib = 40.0 + rep, 100.0
    made.verification = Verification(expected=100, files=100 if ok else 99)
    made.echo_s = 0.3
    if receiver == "dcmrecvd":
        made.probed = True
        made.latency_ms = [float(v) for v in range(1, 101)]
    return made


@pytest.fixture
def result() -> ScenarioResult:
    found = ScenarioResult(scenario("16"), "dcmrecvd", "storescp --fork", 100, 50_000_000)
    # dcmrecvd: 1.0, 0.5 and 2.0 s -> median 1.0 s: 100 inst/s; the failed run is ignored.
    for rep, wall in enumerate((1.0, 0.5, 2.0)):
        found.runs.append(run("dcmrecvd", rep, wall, cpu_s=0.2))
    found.runs.append(run("dcmrecvd", 3, 0.01, cpu_s=0.0, ok=False))
    for rep in range(3):
        found.runs.append(run("storescp --fork", rep, 0.5, cpu_s=0.1))
        found.limits.append(
            LimitsRun(
                rep,
                2,
                DiskRate(16, 100, 500_000, 0.25, 1.0, 3.0),
                LoopbackRate(False, 3_000_000_000, 1.0),
            )
        )
    return found


def test_medians_count_only_verified_runs(result: ScenarioResult) -> None:
    ours = result.summary("dcmrecvd")
    assert (ours.runs, ours.verified) == (4, 3)
    assert ours.inst_per_s == 100
    assert ours.mb_per_s == 50
    assert ours.cpu_ms_per_instance == pytest.approx(2.0)
    assert ours.peak_rss_mib == 41
    assert (ours.latency_p50_ms, ours.latency_p99_ms) == (50, 99)
    limits = result.limits_summary()
    assert (limits.disk_files_per_s, limits.loopback_mb_per_s) == (400, 3000)


def test_the_table_has_each_receiver_with_its_ratios(result: ScenarioResult) -> None:
    text = table.markdown([result], 3, "DCMTK")
    lines = text.splitlines()
    assert table.HEADER.format(ref="DCMTK") in lines
    ours = next(line for line in lines if "| dcmrecvd |" in line)
    cells = [cell.strip() for cell in ours.strip("|").split("|")]
    assert cells == [
        "CT x100, 16 assocs",
        "dcmrecvd",
        "100",
        "50.0",
        "2.00",
        "41 (100)",
        "50.00 / 99.00, n=100",
        "0.50",  # 100 inst/s against storescp's 200
        "2.00",  # 2 ms CPU per instance against 1
        "0.25",  # 100 inst/s against 400 durable files/s with 16 writers
        "3/4",
    ]
    theirs = next(line for line in lines if "| storescp --fork |" in line)
    assert "| not probed | 1.00 | 1.00 | 0.50 | 3/3 |" in theirs
    assert any(
        line.startswith("|  | disk: durable files, 16 writers | 400 | 200 |") for line in lines
    )
    assert any("loopback TCP, 1 stream |  | 3000 |" in line for line in lines)
    assert "- 16: dcmrecvd rep 3: verification: 99 files for 100" in lines
    assert "dcmrecvd 300 ms" in text


def test_rates_keep_three_digits() -> None:
    assert [table.rate(v) for v in (1234.4, 123.4, 12.34, 1.234, None)] == [
        "1234",
        "123",
        "12.3",
        "1.23",
        "n/a",
    ]


def test_the_json_document_has_every_run_and_the_summaries(result: ScenarioResult) -> None:
    doc = json.loads(table.dumps(table.document([result], {"commit": "abc"})))
    assert doc["commit"] == "abc"
    [entry] = doc["scenarios"]
    assert entry["title"] == "CT x100, 16 assocs"
    assert entry["summary"]["dcmrecvd"]["inst_per_s"] == 100
    assert entry["summary"]["limits"]["disk_files_per_s"] == 400
    assert [r["verified"] for r in entry["runs"]] == [True] * 3 + [False] + [True] * 3
    assert entry["runs"][0]["inst_per_s"] == 100
    assert entry["scenario"]["reference"]["name"] == "storescp --fork"
    assert entry["errors"] == ["dcmrecvd rep 3: verification: 99 files for 100"]
