"""``python -m demo --out DIR [--seed N] [--scale X]``: write the demo corpora, print the row counts."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from demo import write_demo_corpora


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description="Write the small, deterministic demo corpora.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every row count")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    counts = write_demo_corpora(args.out, seed=args.seed, scale=args.scale)
    for path, n in counts.items():
        print(f"{n:6d}  {path}")
    print(f"wrote {len(counts)} files ({sum(counts.values())} rows) to {args.out} "
          f"in {time.perf_counter() - t0:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
