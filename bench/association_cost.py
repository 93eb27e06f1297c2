#!/usr/bin/env python3
"""What one association costs the receiver: N storescu, one CT instance each.

storescu proposes either the one context its file needs (-R, as bench/load.py does) or,
with --every-class, its default: 128 contexts of storage SOP classes, three transfer
syntaxes each, as a sender that proposes what it might send. The receivers answer from
DCMTK's storescp.cfg "Default" profile (171 contexts). A corpus split over many
associations pays this once per association. Receivers alternate run by run (who goes first
rotates); the table gives medians of the receiver's process-tree CPU (user+sys) per
association, sys apart, and wall time.

    .venv/bin/python bench/association_cost.py --associations 64 --repeat 5
    .venv/bin/python bench/association_cost.py --baseline /work/wt-before/.venv/bin
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from loadbench import corpus, push, receivers
from loadbench.ports import free_port
from loadbench.stats import median


def one_run(
    receiver: receivers.Receiver, files: list[Path], workdir: Path, every_class: bool
) -> dict[str, float]:
    outdir = workdir / "out"
    outdir.mkdir()
    launch = receivers.Launch(free_port(), outdir, workdir, len(files), None)
    started = receivers.start(receiver, launch, workdir / "receiver.log")
    try:
        user0, sys0 = started.tree_cpu()
        pushed = push.push(
            files,
            started.port,
            len(files),
            tls=None,
            logdir=workdir,
            timeout=300,
            every_class=every_class,
        )
        user1, sys1 = started.tree_cpu()
    finally:
        started.stop()
    stored = sum(1 for path in outdir.rglob("*") if path.is_file())
    if pushed.errors or stored != len(files):
        raise RuntimeError(f"{receiver.name}: {stored} of {len(files)} stored; {pushed.errors}")
    count = len(files)
    return {
        "cpu_ms": 1000 * ((user1 - user0) + (sys1 - sys0)) / count,
        "sys_ms": 1000 * (sys1 - sys0) / count,
        "wall_s": pushed.wall_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--every-class", action="store_true", help="storescu's default proposal, not -R"
    )
    parser.add_argument("--baseline", type=Path, help="the bin/ of another dcmrecvd venv")
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory")
    args = parser.parse_args()

    line = [receivers.dcmrecvd(), receivers.STORESCP]
    if args.baseline is not None:
        line.append(receivers.dcmrecvd(args.baseline, name="dcmrecvd (baseline)"))
    with tempfile.TemporaryDirectory(dir=args.workdir) as temporary:
        root = Path(temporary)
        directory = root / "corpus"
        corpus.ensure(directory, "ct", args.associations, seed=1, stream="association-cost")
        files = corpus.Corpus(corpus.load(directory), directory).paths()
        runs: dict[str, list[dict[str, float]]] = {r.name: [] for r in line}
        for repetition in range(args.repeat):
            shift = repetition % len(line)
            for number, receiver in enumerate(line[shift:] + line[:shift]):
                workdir = root / f"run{repetition}-{number}"
                workdir.mkdir()
                runs[receiver.name].append(one_run(receiver, files, workdir, args.every_class))

    print(
        f"{args.associations} concurrent associations, one CT instance each (0.5 MB),"
        f" storescu proposing {'128 contexts' if args.every_class else 'one context (-R)'};"
        f" medians of {args.repeat} alternating runs\n"
    )
    print("| receiver | CPU ms per association | of which sys | wall s |")
    print("|---|---|---|---|")
    for name, measured in runs.items():
        cells = [median(run[key] for run in measured) for key in ("cpu_ms", "sys_ms", "wall_s")]
        print(
            f"| {name} | "
            + " | ".join(f"{cell:.1f}" if cell is not None else "" for cell in cells[:2])
            + f" | {cells[2]:.2f} |"
        )


if __name__ == "__main__":
    main()
