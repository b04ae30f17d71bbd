"""Run the benchmarks, print summary tables and write benchmarks/results/<name>.json."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import targets
from benchmarks.common import ROOT, write_results

# Modules in this package with run(repeat, tmp) and summary(results).
BENCHMARKS = ("prepare", "pipeline", "bench_encode", "bench_pretrain", "bench_can", "bench_generation", "bench_hostile", "bench_token_dataset", "bench_parity", "scale_out", "bench_ape210k", "bench_lccc_dedupe", "fresh_clone")


def git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is reported (default 3)")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    meta = {"commit": git_commit(), "cpus": os.cpu_count(), "python": platform.python_version(), "repeat": args.repeat}
    summaries, failed, fresh = [], [], {}
    for name in args.names or BENCHMARKS:
        module = importlib.import_module(f"benchmarks.{name}")
        tmp = Path(tempfile.mkdtemp(prefix=f"zhnlp-bench-{name}-"))
        print(f"== {name} (scratch: {tmp})", flush=True)
        t0 = time.perf_counter()
        try:
            results = module.run(args.repeat, tmp)
        except Exception:  # noqa: BLE001 - report it and go on with the other benchmarks
            traceback.print_exc()
            failed.append(name)
            continue
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        results = {"benchmark": name, "wall_s": time.perf_counter() - t0, "meta": meta} | results
        path = write_results(name, results)
        fresh[name] = results
        summaries.append(f"{module.summary(results)}\n(results: {path.relative_to(ROOT)}, {results['wall_s']:.0f} s)")

    print("\n" + "\n\n".join([*summaries, targets.table(fresh)]))
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
