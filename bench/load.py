#!/usr/bin/env python3
"""dcmrecvd under load against DCMTK and the machine's limits: one Markdown table.

For each scenario, in one window: dcmrecvd (this virtual environment's daemon), its DCMTK
reference (dcmrecv for 1 association, storescp --fork for more) and the physical-limits
probe, run in turn and --repeat times, who goes first rotating. Each receiver run: start,
push the corpus with N concurrent storescu, probe latency with an association of our own,
measure CPU and RSS of the receiver's process tree, stop, verify every instance.

    .venv/bin/python bench/load.py                                  # every default scenario
    .venv/bin/python bench/load.py --scenarios 1,16 --repeat 1 --count 200   # a quick look
    .venv/bin/python bench/load.py --scenarios 1,4,big --baseline ../baseline/.venv
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from loadbench import receivers, scenarios, table
from loadbench.window import Options, run_scenario

HERE = Path(__file__).resolve().parent


def _output(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=HERE)
    except OSError:
        return ""
    return (done.stdout or done.stderr).strip()


def context(args: argparse.Namespace, options: Options) -> dict[str, Any]:
    """What a reader of the JSON needs to know to trust or repeat it."""
    return {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _output("git", "rev-parse", "HEAD"),
        "dirty": bool(_output("git", "status", "--porcelain", "--untracked-files=no")),
        "argv": sys.argv,
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "dcmtk": next(iter(_output("storescu", "--version").splitlines()), ""),
            "filesystem": _output(
                "findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", str(args.workdir)
            ),
        },
        "options": {
            "scenarios": args.scenarios,
            "repeat": options.repeat,
            "count": options.count,
            "seed": options.seed,
            "big_mb": options.big_mb,
            "probe_interval_s": options.probe_interval,
            "sample": options.sample,
            "subject": str(options.subject.binary),
            "baseline": str(options.baseline.binary) if options.baseline else None,
            "subject_ini": options.subject.ini,
            "baseline_ini": options.baseline.ini if options.baseline else None,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios",
        default=scenarios.DEFAULT,
        help=f"comma-separated: N, smallN, tlsN, big (default {scenarios.DEFAULT})",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each receiver (median)")
    parser.add_argument(
        "--count", type=int, help="instances per corpus (default: 1000 CT, 2000 small)"
    )
    parser.add_argument("--seed", type=int, default=1, help="of the corpora")
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the big instance")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dcmrecvd-bench"))
    parser.add_argument("--corpora", type=Path, help="default: WORKDIR/corpus")
    parser.add_argument(
        "--probe-interval", type=float, default=0.02, help="seconds between probe instances"
    )
    parser.add_argument("--sample", type=int, default=5, help="instances compared per run")
    parser.add_argument("--timeout", type=float, default=900, help="per push, seconds")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a virtual environment whose dcmrecvd replaces DCMTK as the reference",
    )
    for who in ("subject", "baseline"):
        parser.add_argument(
            f"--{who}-ini",
            type=Path,
            metavar="FILE",
            help=f"INI text added to the {who} dcmrecvd's configuration: lines before the"
            " first [section] go into [receiver]; {workdir} is the run's own directory,"
            " {free_port} a free port",
        )
    parser.add_argument("--json", type=Path, help="write every run and median to this file")
    parser.add_argument("--keep", action="store_true", help="keep the received files")
    args = parser.parse_args()
    try:
        selected = scenarios.parse(args.scenarios)
    except ValueError as exc:
        parser.error(str(exc))
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    subject_ini, baseline_ini = (
        path.read_text() if path is not None else ""
        for path in (args.subject_ini, args.baseline_ini)
    )
    if baseline_ini and args.baseline is None:
        parser.error("--baseline-ini goes with --baseline")
    baseline = None
    if args.baseline is not None:
        baseline = receivers.dcmrecvd(
            args.baseline.resolve() / "bin", "dcmrecvd (baseline)", ini=baseline_ini
        )
    options = Options(
        workdir=args.workdir,
        corpora=args.corpora or args.workdir / "corpus",
        repeat=args.repeat,
        count=args.count,
        seed=args.seed,
        big_mb=args.big_mb,
        probe_interval=args.probe_interval,
        sample=args.sample,
        timeout=args.timeout,
        keep=args.keep,
        subject=receivers.dcmrecvd(ini=subject_ini),
        baseline=baseline,
    )

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = [run_scenario(scenario, options, progress) for scenario in selected]
    print(table.markdown(results, args.repeat, "baseline" if baseline else "DCMTK"))
    if args.json is not None:
        args.json.write_text(table.dumps(table.document(results, context(args, options))))
    return 0 if all(not result.errors() for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
