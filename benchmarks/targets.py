"""The performance targets (issue 13) as one table, from the benchmarks' results.

Each row names the benchmark that measures it and the figure's command. A benchmark not run in this
``make bench`` is read from its last saved result in ``benchmarks/results/`` (its commit is shown), or
the row says how to measure it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.common import RESULTS_DIR, format_table


@dataclass(frozen=True)
class Target:
    figure: str
    bench: str
    target: str
    measure: Callable[[dict], tuple[str, bool | None]]  # results -> (the figure as text, whether it is met)


def _can(r: dict) -> tuple[str, bool]:
    diff = max(r["max_abs_diff_vs_reference"].values())
    return f"{r['vectorised_s']:.3f} s ({r['workers']} threads), max |diff| {diff:.1e}", r["vectorised_s"] <= 0.6 and diff <= 1e-12


def _pretrain(r: dict) -> tuple[str, bool]:
    parts = [f"{v['speedup']:.2f}x at {k.split(', ')[-1]}" for k, v in r["heads"].items()]
    worst = min(v["speedup"] for v in r["heads"].values())
    return "; ".join(parts), worst >= 1.8


def _noop_flow(r: dict) -> tuple[str, bool]:
    phases = r.get("flow_noop_phases") or {}
    above = r["flow_noop_s"] - (phases.get("server_start_s") or 0.0)
    return f"{r['flow_noop_s']:.1f} s, {above:.1f} s above the temporary server's start-up", above <= 2.0


def _flow_vs_repro(r: dict) -> tuple[str, bool]:
    runs = sorted(f / p for f, p in zip(r["flow_stale_all_s"], r["repro_stale_all_s"]))
    median = runs[len(runs) // 2]
    return f"median {median:.2f} of {len(runs)} ({', '.join(f'{x:.2f}' for x in runs)}), {r['stages']} stages", median <= 1.0


def _lccc(r: dict) -> tuple[str, bool]:
    ratio_ = r["impls"]["store"]["rss_ratio"]
    small, large = r["sizes"]
    return f"{ratio_:.2f}x ({large:,} vs {small:,} dialogues)", ratio_ <= 1.2


def _ape(r: dict) -> tuple[str, bool]:
    return f"{r['new_vs_json']:.3f}x", r["new_vs_json"] >= 0.1


def _make_run(r: dict) -> tuple[str, bool]:
    return f"{r['make_run_s'] / 60:.1f} min ({r['stage_times']['stages']} stages; install {r['install_s'] / 60:.1f} min apart)", r["make_run_s"] <= 480


def _make_test(r: dict) -> tuple[str, bool | None]:
    if "make_test_s" not in r:
        return "not measured: ZHNLP_BENCH_MAKE_TEST=1 python -m benchmarks fresh_clone", None
    return f"{r['make_test_s'] / 60:.1f} min", r["make_test_s"] <= 720


TARGETS = (
    Target("CAN 1M x 119, iters 1, wall; results equal to 1e-12", "bench_can", "<= 0.6 s", _can),
    Target("pretraining tokens/s, masked-only head vs HF BertForMaskedLM", "bench_pretrain", ">= 1.8x", _pretrain),
    Target("no-op flow wall (temporary server)", "pipeline", "<= 2 s above server start-up", _noop_flow),
    Target("flow vs dvc repro, same stale DAG", "pipeline", "<= 1.0, median", _flow_vs_repro),
    Target("LCCC prep peak RSS, 12M vs 1M dialogues", "bench_lccc_dedupe", "<= 1.2x", _lccc),
    Target("Ape210K prep rows/s vs json.loads", "bench_ape210k", ">= 0.1x", _ape),
    Target("make run from a fresh clone, 2 cores", "fresh_clone", "<= 8 min", _make_run),
    Target("make test, 2 cores", "fresh_clone", "<= 12 min", _make_test),
)


def saved(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def table(fresh: dict[str, dict]) -> str:
    """The targets, from this run's results (``fresh``: benchmark name -> results) or the saved ones."""
    rows = []
    for t in TARGETS:
        results, source = fresh.get(t.bench), "this run"
        if results is None:
            results = saved(t.bench)
            source = f"saved ({results.get('meta', {}).get('commit', '?')[:7]})" if results else "-"
        if results is None:
            figure, met = f"not measured: python -m benchmarks {t.bench}", None
        else:
            try:
                figure, met = t.measure(results)
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:  # a result from an older benchmark version
                figure, met = f"unreadable result ({type(err).__name__}: {err}); rerun {t.bench}", None
        rows.append([t.figure, figure, t.target, "met" if met else "-" if met is None else "NOT met", f"{t.bench}, {source}"])
    return "Performance targets (issue 13)\n" + format_table(["figure", "measured", "target", "", "benchmark"], rows)
