#!/usr/bin/env python3
"""dcmrecvd against DCMTK's dcmrecv, every scenario of issue 7, side by side.

Runs the shared harness (../shared/bench/bench.py) once per receiver and repetition,
alternating dcmrecv and dcmrecvd so that both see the same state of this noisy machine,
then prints one Markdown table: medians of inst/s, MB/s, receiver CPU (user+sys, and
user alone), peak RSS, and the ratio dcmrecvd / dcmrecv against each goal. Then the
start-up time (harness `startup`) and the CPU that 50 idle associations cost (idle.py).

    python ../shared/bench/corpus.py ct    corpus/ct                  # needs numpy
    python ../shared/bench/corpus.py small corpus/small
    python ../shared/bench/corpus.py big   corpus/big --size-mb 1024
    .venv/bin/python bench/compare.py --corpora corpus --repeat 5

DCMTK runs with TCP_NODELAY=1 (Debian's build leaves Nagle on otherwise), both sides
with max PDU 131072; dcmrecvd fsyncs every file and directory, dcmrecv does not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ports import free_port

HERE = Path(__file__).resolve().parent
HARNESS = HERE.parent.parent / "shared" / "bench" / "bench.py"
OURS = f"{sys.executable} {HERE / 'dcmrecvd_run.py'} {{port}} {{outdir}} {{workdir}} {{pdu}}"
DCMRECV = (
    "env TCP_NODELAY=1 dcmrecv -xf /etc/dcmtk/storescp.cfg Default {bp}-od {outdir}"
    " {pdu_args} {port}"
)


@dataclass(frozen=True)
class Scenario:
    name: str
    corpus: str
    assocs: int
    goal: float  # dcmrecvd / dcmrecv, instances per second
    bit_preserving_anchor: bool = False


SCENARIOS = (
    Scenario("1000 CT x 0.5 MB, 1 association", "ct", 1, 0.5),
    Scenario("1000 CT, 4 concurrent associations", "ct", 4, 1.0),
    Scenario("2000 small objects, 1 association", "small", 1, 0.5),
    Scenario("one 1 GiB instance (vs dcmrecv +B)", "big", 1, 0.5, bit_preserving_anchor=True),
)
KEYS = ("inst_per_s", "mb_per_s", "cpu_s", "cpu_user_s", "peak_rss_mb", "peak_tree_rss_mb")


def harness(args: argparse.Namespace, *command: str) -> dict[str, object]:
    argv = [sys.executable, str(args.harness), *command, "--json", "--workdir", str(args.workdir)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"harness failed: {' '.join(argv)}\n{done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    if result.get("errors"):
        raise SystemExit(f"harness reported errors: {result['errors']}")
    return result


def run_one(
    args: argparse.Namespace, scenario: Scenario, name: str, template: str
) -> dict[str, float]:
    result = harness(
        args,
        "run",
        "--name",
        name,
        "--corpus",
        str(args.corpora / scenario.corpus),
        "--assocs",
        str(scenario.assocs),
        "--repeat",
        "1",
        "--pdu",
        "131072",
        "--port",
        str(args.port or free_port()),
        "--receiver-cmd",
        template,
    )
    median = result["median"]
    assert isinstance(median, dict)
    return median


def med(values: list[float]) -> float:
    return statistics.median(values)


def compare(args: argparse.Namespace, scenario: Scenario) -> dict[str, dict[str, float]]:
    dcmrecv = DCMRECV.replace("{bp}", "+B " if scenario.bit_preserving_anchor else "")
    runs: dict[str, list[dict[str, float]]] = {"dcmrecv": [], "dcmrecvd": []}
    for rep in range(args.repeat):
        # Alternate, and alternate who goes first, so that drift hits both alike.
        order = [("dcmrecv", dcmrecv), ("dcmrecvd", OURS)]
        for name, template in order if rep % 2 == 0 else reversed(order):
            runs[name].append(run_one(args, scenario, name, template))
            print(
                f"  {scenario.name}: {name} rep {rep}: {runs[name][-1]['inst_per_s']:.1f} inst/s",
                file=sys.stderr,
                flush=True,
            )
    return {name: {k: med([r[k] for r in reps]) for k in KEYS} for name, reps in runs.items()}


def idle(args: argparse.Namespace) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, str(HERE / "idle.py"), "--associations", "50", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", type=Path, required=True, help="holds ct/, small/, big/")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--harness", type=Path, default=HARNESS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dcmrecvd-bench"))
    parser.add_argument("--port", type=int, default=0, help="default: a free one per run")
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    args = parser.parse_args()
    rows = []
    for scenario in SCENARIOS:
        if args.only and args.only not in scenario.name:
            continue
        found = compare(args, scenario)
        ours, theirs = found["dcmrecvd"], found["dcmrecv"]
        ratio = ours["inst_per_s"] / theirs["inst_per_s"]
        verdict = "met" if ratio >= scenario.goal else "NOT met"
        rows.append(
            " | ".join(
                [
                    f"| {scenario.name}",
                    f"{theirs['inst_per_s']:.1f} / {theirs['mb_per_s']:.0f}",
                    f"{ours['inst_per_s']:.1f} / {ours['mb_per_s']:.0f}",
                    f"**{ratio:.2f} x** (goal >= {scenario.goal}) {verdict}",
                    f"{theirs['cpu_s']:.2f} ({theirs['cpu_user_s']:.2f})",
                    f"{ours['cpu_s']:.2f} ({ours['cpu_user_s']:.2f})",
                    f"{theirs['peak_rss_mb']:.0f}",
                    f"{ours['peak_rss_mb']:.0f} ({ours['peak_tree_rss_mb']:.0f}) |",
                ]
            )
        )
    print(f"median of {args.repeat} alternating runs, max PDU 131072\n")
    print(
        "| scenario | dcmrecv inst/s / MB/s | dcmrecvd inst/s / MB/s | ratio"
        " | dcmrecv CPU s (user) | dcmrecvd CPU s (user) | dcmrecv peak RSS MiB"
        " | dcmrecvd peak RSS MiB, largest process (all processes) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    if not args.only:
        # One start per harness call, each on a port found free just before.
        starts: list[dict[str, float]] = []
        for _ in range(args.repeat):
            started = harness(
                args,
                "startup",
                "--name",
                "dcmrecvd",
                "--repeat",
                "1",
                "--port",
                str(args.port or free_port()),
                "--receiver-cmd",
                OURS,
            )["median"]
            assert isinstance(started, dict)
            starts.append(started)
        median = {key: med([s[key] for s in starts]) for key in ("listen_s", "echo_s")}
        print(
            f"\nprocess start to LISTEN: {median['listen_s']:.3f} s (goal <= 0.5 s),"
            f" to first C-ECHO: {median['echo_s']:.3f} s"
        )
        found_idle = idle(args)
        print(
            f"50 idle associations: {found_idle['cpu_percent']:.2f} % of a core over"
            f" {found_idle['seconds']:.0f} s (goal < 5 %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
