#!/usr/bin/env python3
"""dcmrecvd against an earlier dcmrecvd: what a change costs, scenario by scenario.

Runs the shared harness for the CT and 1 GiB scenarios of compare.py, alternating the
daemon of a baseline virtual environment (an editable install of an earlier commit, e.g.
a `git worktree` with its own `scripts/bootstrap`) and this one, run by run, and prints
medians: inst/s, and receiver CPU (user+sys, and user) per instance, with the ratio
this / baseline. CPU per instance is the figure that shows a cost on the receive path;
inst/s on this machine swings with the disk.

    git worktree add ../baseline 4ecf733 && (cd ../baseline && scripts/bootstrap)
    .venv/bin/python bench/before_after.py --baseline ../baseline/.venv \\
        --corpora corpus --repeat 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compare import HARNESS, HERE, SCENARIOS, Scenario, med, run_one

RUNNER = "{python} " + str(HERE / "dcmrecvd_run.py") + " {{port}} {{outdir}} {{workdir}} {{pdu}}"
# The scenarios whose receive path a change could slow: CT (1 and 4 associations), 1 GiB.
CORPORA = ("ct", "big")
KEYS = ("inst_per_s", "cpu_s", "cpu_user_s")


def count(corpus: Path) -> int:
    return sum(1 for path in corpus.rglob("*") if path.is_file() and path.suffix == ".dcm")


def measure(args: argparse.Namespace, scenario: Scenario) -> dict[str, dict[str, float]]:
    templates = {
        "baseline": RUNNER.format(python=args.baseline / "bin" / "python"),
        "this": RUNNER.format(python=sys.executable),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in templates}
    for rep in range(args.repeat):
        # Alternate who goes first, so that the machine's drift hits both alike.
        order = list(templates.items())
        for name, template in order if rep % 2 == 0 else reversed(order):
            runs[name].append(run_one(args, scenario, name, template))
            print(
                f"  {scenario.name}: {name} rep {rep}: {runs[name][-1]['inst_per_s']:.1f} inst/s,"
                f" CPU {runs[name][-1]['cpu_s']:.2f} s",
                file=sys.stderr,
                flush=True,
            )
    return {name: {k: med([r[k] for r in reps]) for k in KEYS} for name, reps in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the baseline's venv")
    parser.add_argument("--corpora", type=Path, required=True, help="holds ct/ and big/")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--harness", type=Path, default=HARNESS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dcmrecvd-bench"))
    parser.add_argument("--port", type=int, default=0, help="default: a free one per run")
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    args = parser.parse_args()
    rows = []
    for scenario in SCENARIOS:
        if scenario.corpus not in CORPORA or (args.only and args.only not in scenario.name):
            continue
        instances = count(args.corpora / scenario.corpus)
        found = measure(args, scenario)
        before, after = found["baseline"], found["this"]

        def cpu(figures: dict[str, float], n: int = instances) -> str:
            """CPU ms per instance, user+sys (user)."""
            return f"{figures['cpu_s'] / n * 1000:.2f} ({figures['cpu_user_s'] / n * 1000:.2f})"

        rows.append(
            " | ".join(
                [
                    f"| {scenario.name}",
                    f"{before['inst_per_s']:.1f}",
                    f"{after['inst_per_s']:.1f}",
                    cpu(before),
                    cpu(after),
                    f"**{after['cpu_s'] / before['cpu_s']:.3f}** |",
                ]
            )
        )
    print(f"median of {args.repeat} alternating runs, max PDU 131072\n")
    print(
        "| scenario | baseline inst/s | this inst/s | baseline CPU ms/instance (user)"
        " | this CPU ms/instance (user) | CPU this / baseline |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
