"""Corpus prep throughput (rows/s) and peak RSS on the real samples, at 1x and 10x.

Every measurement is a fresh ``benchmarks.prep_worker`` child. Baselines from the
same run and the same files: ``baseline`` (minimum parsing, no zhnlp) for
throughput, and ``idle`` (same imports, no reading) for the fixed memory cost.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from benchmarks.common import ROOT, SHARED_DATA, bench_env, format_table, ratio, run_child
from benchmarks.prep_worker import CORPORA, LCCC_JSON_KEYS, input_files

SCALE = 10
MODES = ("reader", "baseline")


# ---------------------------------------------------------------- 10x inputs


def write_scaled_inputs(dest: Path) -> None:
    """10x copies of every input under ``dest``, laid out like ../shared/data."""
    for corpus in ("clue", "ape210k"):
        for path in input_files(corpus, SHARED_DATA):
            _repeat_lines(path, _mirror(path, dest))
    for path in input_files("lccc_text", SHARED_DATA):
        _distinct_text_copies(path, _mirror(path, dest))
    (json_path,) = input_files("lccc_json", SHARED_DATA)
    _distinct_json_copies(json_path, _mirror(json_path, dest))


def _mirror(path: Path, dest: Path) -> Path:
    out = dest / path.relative_to(SHARED_DATA)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _copy_tag(k: int) -> str:
    """A distinct prefix for copy k's first turn (LCCC turns are space-separated characters)."""
    return "" if k == 0 else f"第 {k} 份 "


def _repeat_lines(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    if not data.endswith(b"\n"):
        data += b"\n"
    with open(dst, "wb") as out:
        for _ in range(SCALE):
            out.write(data)


def _distinct_text_copies(src: Path, dst: Path) -> None:
    lines = src.read_text(encoding="utf-8").splitlines()
    with open(dst, "w", encoding="utf-8") as out:
        for k in range(SCALE):
            for line in lines:
                out.write((_copy_tag(k) + line if line.strip() else line) + "\n")


def _distinct_json_copies(src: Path, dst: Path) -> None:
    """{"train": [...]} holding SCALE distinct copies of every dialogue, written one at a time."""
    with open(src, encoding="utf-8") as fh:
        splits = json.load(fh)
    dialogues = [d for key in LCCC_JSON_KEYS for d in splits.get(key, [])]
    with open(dst, "w", encoding="utf-8") as out:
        out.write('{"train": [\n')
        sep = ""
        for k in range(SCALE):
            for turns in dialogues:
                copy = [_copy_tag(k) + turns[0], *turns[1:]] if turns else turns
                out.write(sep + json.dumps(copy, ensure_ascii=False))
                sep = ",\n"
        out.write("\n]}\n")


# ---------------------------------------------------------------- measurements


def measure(mode: str, corpus: str, data_dir: Path, out_dir: Path, env: dict, keys: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.prep_worker", mode, corpus, str(data_dir), str(out_dir), "--keys", keys]
    child = run_child(cmd, cwd=ROOT, env=env)
    shutil.rmtree(out_dir, ignore_errors=True)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed (exit {child.returncode}):\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1]) | {"rss_kib": child.max_rss_kib}


def run(repeat: int, tmp: Path) -> dict:
    if not SHARED_DATA.is_dir():
        reason = f"../shared/data not found ({SHARED_DATA})"
        print(f"SKIP prepare: {reason}")
        return {"skipped": reason}
    env = bench_env(tmp)
    scaled_dir = tmp / "x10"
    write_scaled_inputs(scaled_dir)
    # (mode, corpus, scale) -> data dir and LCCC JSON keys
    plans = {}
    for corpus in CORPORA:
        for mode in MODES:
            plans[(mode, corpus, 1)] = (SHARED_DATA, ",".join(LCCC_JSON_KEYS))
            plans[(mode, corpus, SCALE)] = (scaled_dir, "train")
        plans[("idle", corpus, 1)] = (SHARED_DATA, ",".join(LCCC_JSON_KEYS))

    runs: dict[tuple, list[dict]] = {key: [] for key in plans}
    for r in range(repeat):  # round-robin, so machine noise spreads over all plans
        for (mode, corpus, scale), (data_dir, keys) in plans.items():
            out_dir = tmp / "out" / f"{mode}-{corpus}-{scale}x-{r}"
            runs[(mode, corpus, scale)].append(measure(mode, corpus, data_dir, out_dir, env, keys))
        print(f"  prepare: repeat {r + 1}/{repeat} done", flush=True)
    shutil.rmtree(scaled_dir, ignore_errors=True)

    best = {key: _best(samples) for key, samples in runs.items()}
    corpora = {corpus: _corpus_figures(corpus, best) for corpus in CORPORA}
    return {"scale": SCALE, "repeat": repeat, "corpora": corpora, "samples": {"/".join(map(str, k)): v for k, v in runs.items()}}


def _best(samples: list[dict]) -> dict:
    """Min time and min peak RSS over the repeats; rows must not vary."""
    rows = {s["rows"] for s in samples}
    assert len(rows) == 1, f"row counts differ between repeats: {rows}"
    fastest = min(samples, key=lambda s: s["seconds"])
    return fastest | {"rss_kib": min(s["rss_kib"] for s in samples)}


def _corpus_figures(corpus: str, best: dict) -> dict:
    idle_mib = best[("idle", corpus, 1)]["rss_kib"] / 1024
    out: dict = {"idle_rss_mib": idle_mib}
    for scale in (1, SCALE):
        reader, base = best[("reader", corpus, scale)], best[("baseline", corpus, scale)]
        x = f"{scale}x"
        out[f"rows_{x}"] = reader["rows"]
        out[f"kept_{x}"] = reader["kept"]
        out[f"rows_match_baseline_{x}"] = reader["rows"] == base["rows"]
        out[f"reader_seconds_{x}"] = reader["seconds"]
        out[f"reader_rows_per_s_{x}"] = reader["rows"] / reader["seconds"]
        out[f"baseline_rows_per_s_{x}"] = base["rows"] / base["seconds"]
        out[f"throughput_ratio_vs_baseline_{x}"] = ratio(out[f"reader_rows_per_s_{x}"], out[f"baseline_rows_per_s_{x}"])
        out[f"reader_rss_mib_{x}"] = reader["rss_kib"] / 1024
        out[f"baseline_rss_mib_{x}"] = base["rss_kib"] / 1024
        out[f"reader_rss_above_idle_mib_{x}"] = out[f"reader_rss_mib_{x}"] - idle_mib
        out[f"baseline_rss_above_idle_mib_{x}"] = out[f"baseline_rss_mib_{x}"] - idle_mib
    # Time = fixed + rows / marginal rate, fitted through the 1x and 10x points.
    extra_rows = out[f"rows_{SCALE}x"] - out["rows_1x"]
    extra_s = out[f"reader_seconds_{SCALE}x"] - out["reader_seconds_1x"]
    out["reader_marginal_rows_per_s"] = extra_rows / extra_s if extra_s > 0 else None
    out["reader_fixed_seconds"] = out["reader_seconds_1x"] - out["rows_1x"] / out["reader_marginal_rows_per_s"] if extra_s > 0 else None
    above_1x, above_10x = out["reader_rss_above_idle_mib_1x"], out[f"reader_rss_above_idle_mib_{SCALE}x"]
    out["rss_growth_ratio"] = ratio(above_10x, above_1x)  # 1.0 = flat memory; 10 = grows with input
    out["baseline_rss_growth_ratio"] = ratio(out[f"baseline_rss_above_idle_mib_{SCALE}x"], out["baseline_rss_above_idle_mib_1x"])
    return out


def summary(results: dict) -> str:
    if "skipped" in results:
        return f"prepare: skipped ({results['skipped']})"
    x = f"{results['scale']}x"
    throughput = [
        [
            corpus,
            f["rows_1x"],
            f["reader_rows_per_s_1x"],
            f[f"reader_rows_per_s_{x}"],
            f["baseline_rows_per_s_1x"],
            f["throughput_ratio_vs_baseline_1x"],
            f[f"throughput_ratio_vs_baseline_{x}"],
            f["reader_marginal_rows_per_s"],
            _shown_if_positive(f["reader_fixed_seconds"]),
        ]
        for corpus, f in results["corpora"].items()
    ]
    memory = [
        [
            corpus,
            f["idle_rss_mib"],
            f["reader_rss_mib_1x"],
            f[f"reader_rss_mib_{x}"],
            f["reader_rss_above_idle_mib_1x"],
            f[f"reader_rss_above_idle_mib_{x}"],
            f["rss_growth_ratio"],
            f[f"baseline_rss_above_idle_mib_{x}"],
        ]
        for corpus, f in results["corpora"].items()
    ]
    mismatched = [c for c, f in results["corpora"].items() if not (f["rows_match_baseline_1x"] and f[f"rows_match_baseline_{x}"])]
    lines = [
        f"prepare: throughput, best of {results['repeat']} (ratio = reader rows/s / baseline rows/s, same run, same files;"
        f" marginal and fixed fitted through 1x and {x}; fixed '-' = below the noise)",
        format_table(
            ["corpus", "rows 1x", "rows/s 1x", f"rows/s {x}", "base rows/s 1x", "ratio 1x", f"ratio {x}", "marginal rows/s", "fixed s"],
            throughput,
        ),
        "",
        f"prepare: peak RSS in MiB (above idle = minus the idle child; growth = {x} above idle / 1x above idle)",
        format_table(
            ["corpus", "idle", "RSS 1x", f"RSS {x}", "above 1x", f"above {x}", "growth", f"base above {x}"], memory
        ),
    ]
    if mismatched:
        lines.append(f"WARNING: reader and baseline counted different input rows for {mismatched}")
    return "\n".join(lines)


def _shown_if_positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None
