"""Ape210K prep: rows/s of reading + normalising the real sample, against plain ``json.loads``.

The lines of ../shared/data/ape210k/valid.ape.json (5,000 rows), repeated ``COPIES`` times, go
through three paths in one process, interleaved, best of ``repeat`` passes each:

* json.loads: ``json.loads(line)`` per line, nothing else (the baseline);
* today: ``json.loads`` + the reference ``normalize_problem`` kept in tests/test_ape210k.py
  (one safe_eval per field, one full re-evaluation per bracket pair, character tokenizer,
  recursive parser), i.e. the algorithm before the speed-up;
* new: ``json.loads`` + ``zhnlp.data.ape210k.normalize_problem``.

Figures are ratios against the baseline of the same run (the machine is shared and noisy):
``new / json.loads`` (target >= 0.1) and ``new / today`` (target >= 4). The two
normalisers' outputs are compared on the first copy (every dict and every error message).
`python -m benchmarks bench_ape210k` or `python -m benchmarks.bench_ape210k [--repeat R]`;
results in benchmarks/results/bench_ape210k.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, SHARED_DATA, format_table, ratio, write_results
from zhnlp.data.ape210k import ProblemDropped, normalize_problem
from zhnlp.data.rows import RowError

COPIES = 4  # 20,000 lines: ~1-2 s for today's path on one core
SAMPLE = SHARED_DATA / "ape210k" / "valid.ape.json"


def reference_normalize_problem():
    """The pre-speed-up normalize_problem, kept as the reference in tests/test_ape210k.py."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_ape210k import reference_normalize_problem as reference  # noqa: PLC0415
    finally:
        sys.path.remove(str(ROOT / "tests"))
    return reference


def json_only(lines: list[str]) -> int:
    loads = json.loads
    for line in lines:
        loads(line)
    return len(lines)


def prep(lines: list[str], normalize) -> int:
    """Rows kept (RowError / ProblemDropped rows are counted out, as iter_problems does)."""
    loads, kept = json.loads, 0
    for line in lines:
        try:
            normalize(loads(line))
        except (RowError, ProblemDropped):
            continue
        kept += 1
    return kept


def outcomes(lines: list[str], normalize) -> list:
    out = []
    for line in lines:
        try:
            row = normalize(json.loads(line))
        except (RowError, ProblemDropped) as err:
            row = (type(err).__name__, str(err))
        out.append(row)
    return out


def run(repeat: int, tmp: Path) -> dict:
    if not SAMPLE.is_file():
        print(f"SKIP bench_ape210k: {SAMPLE} not found")
        return {"skipped": f"{SAMPLE} not found"}
    today = reference_normalize_problem()
    sample = SAMPLE.read_text(encoding="utf-8").splitlines()
    identical = outcomes(sample, normalize_problem) == outcomes(sample, today)
    lines = sample * COPIES
    paths = {"json.loads": json_only, "today": lambda ls: prep(ls, today), "new": lambda ls: prep(ls, normalize_problem)}
    best = {name: float("inf") for name in paths}
    kept = {}
    for _ in range(repeat):
        for name, fn in paths.items():  # interleaved, so a busy spell hits all three
            t0 = time.perf_counter()
            kept[name] = fn(lines)
            best[name] = min(best[name], time.perf_counter() - t0)
    rows_per_s = {name: len(lines) / seconds for name, seconds in best.items()}
    return {
        "lines": len(lines),
        "copies": COPIES,
        "identical_output": identical,
        "kept": {"today": kept["today"], "new": kept["new"]},
        "seconds": best,
        "rows_per_s": rows_per_s,
        "new_vs_json": ratio(rows_per_s["new"], rows_per_s["json.loads"]),
        "today_vs_json": ratio(rows_per_s["today"], rows_per_s["json.loads"]),
        "new_vs_today": ratio(rows_per_s["new"], rows_per_s["today"]),
    }


def summary(r: dict) -> str:
    if "skipped" in r:
        return f"bench_ape210k: SKIPPED ({r['skipped']})"
    head = (
        f"Ape210K prep, valid.ape.json x {r['copies']} ({r['lines']:,} lines), best of the run's repeats;"
        f" outputs identical to today's: {'yes' if r['identical_output'] else 'NO'}"
    )
    base = r["rows_per_s"]["json.loads"]
    rows = [[name, r["seconds"][name], rps, rps / base] for name, rps in r["rows_per_s"].items()]
    table = format_table(["path", "seconds", "rows/s", "vs json.loads"], rows)
    return f"{head}\n{table}\nnew / json.loads = {r['new_vs_json']:.3f} (target >= 0.1); new / today = {r['new_vs_today']:.2f}x (target >= 4)"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    results = {"benchmark": "bench_ape210k"} | run(args.repeat, Path("."))
    results["wall_s"] = time.perf_counter() - t0
    path = write_results("bench_ape210k", results)
    print(summary(results))
    print(f"(results: {path.relative_to(ROOT)}, {results['wall_s']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
