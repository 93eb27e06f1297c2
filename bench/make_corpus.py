#!/usr/bin/env python3
"""Write one of the benchmark's deterministic corpora (loadbench/corpus.py) and its manifest.

    .venv/bin/python bench/make_corpus.py ct    corpus/ct                 # 1000 x 0.5 MB CT
    .venv/bin/python bench/make_corpus.py small corpus/small              # 2000 small objects
    .venv/bin/python bench/make_corpus.py big   corpus/big --size-mb 1024 # big_1024MiB.dcm

bench/load.py writes the corpora it needs itself; this is for the other benchmarks here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadbench import corpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=corpus.KINDS)
    parser.add_argument("directory", type=Path)
    parser.add_argument("-n", "--count", type=int, help="instances (default: 1000 CT, 2000 small)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size-mb", type=int, default=1024, help="big: MiB of frames")
    args = parser.parse_args()
    count = args.count or corpus.DEFAULT_COUNTS[args.kind]
    manifest = corpus.ensure(args.directory, args.kind, count, args.seed, size_mb=args.size_mb)
    print(f"{args.directory}: {manifest.count} files, {manifest.total_bytes / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
