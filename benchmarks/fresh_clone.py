"""`make run` from a fresh clone of this repository: the README's main job, as a new user runs it.

A ``git clone`` of the committed HEAD into the scratch folder, then, timed apart:

* ``make install``: the clone's own virtual environment (pip's cache is whatever this machine has; the
  issue's figure is for a warm cache);
* ``make run``: the whole demo DAG from nothing (no DVC cache, no checkpoints to resume from), with its
  peak RSS (the largest process of the run);
* with ``ZHNLP_BENCH_MAKE_TEST=1`` also ``make test`` in the clone (``CI=1``; about 50 minutes on 2
  cores, so it is opt-in).

Baseline: ``dvc status`` in the built clone (no work at all), measured in the same run. Per-stage times
come from the clone's MLflow runs: the time inside each stage's run, and the rest (process start, imports,
DVC's hashing and commit) between runs. `python -m benchmarks fresh_clone`.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from benchmarks.common import ROOT, bench_env, format_table, ratio, run_child

SLOWEST = 5


def _timed(cmd: list[str], cwd: Path, env: dict) -> dict:
    child = run_child(cmd, cwd=cwd, env=env)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {child.returncode}):\n{child.stdout[-2000:]}\n{child.stderr[-3000:]}")
    return {"seconds": child.seconds, "max_rss_mib": child.max_rss_kib / 1024}


def stage_times(db: Path) -> dict:
    """Inside-run seconds per stage and the seconds between runs, from the clone's MLflow store."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "select t.value, r.start_time, r.end_time from runs r join tags t on t.run_uuid = r.run_uuid "
            "and t.key = 'dvc.stage' where r.status = 'FINISHED' order by r.start_time"
        ).fetchall()
    inside = {name: (end - start) / 1000 for name, start, end in rows}
    between = sum(max(0, (b[1] - a[2]) / 1000) for a, b in zip(rows, rows[1:]))
    return {"stages": len(rows), "inside_runs_s": sum(inside.values()), "between_runs_s": between, "inside": inside}


def run(repeat: int, tmp: Path) -> dict:
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True).stdout.strip()
    env = bench_env(tmp)
    for key in ("PREFECT_HOME", "MLFLOW_TRACKING_URI", "HF_HOME", "VIRTUAL_ENV"):  # the Makefile's own, inside the clone
        env.pop(key, None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    print("  fresh_clone: make install", flush=True)
    install = _timed(["make", "install"], clone, env)
    print("  fresh_clone: make run (the whole demo DAG)", flush=True)
    make_run = _timed(["make", "run"], clone, env)
    status = min((_timed([str(clone / ".venv/bin/dvc"), "status"], clone, env)["seconds"] for _ in range(repeat)))
    out = {
        "commit": commit,
        "install_s": install["seconds"],
        "make_run_s": make_run["seconds"],
        "make_run_max_rss_mib": make_run["max_rss_mib"],
        "dvc_status_s": status,
        "make_run_vs_status": ratio(make_run["seconds"], status),
        "stage_times": stage_times(clone / "mlflow.db"),
    }
    if os.environ.get("ZHNLP_BENCH_MAKE_TEST") == "1":
        print("  fresh_clone: make test (CI=1)", flush=True)
        out["make_test_s"] = _timed(["make", "test"], clone, env | {"CI": "1"})["seconds"]
    return out


def summary(r: dict) -> str:
    st = r["stage_times"]
    slow = sorted(st["inside"].items(), key=lambda kv: -kv[1])[:SLOWEST]
    rows = [
        ["dvc status in the built clone (baseline)", r["dvc_status_s"], 1.0],
        ["make install (new .venv)", r["install_s"], ratio(r["install_s"], r["dvc_status_s"])],
        [f"make run: {st['stages']} stages from nothing (target <= 480 s)", r["make_run_s"], r["make_run_vs_status"]],
        ["  of which: inside the stages' MLflow runs", st["inside_runs_s"], ratio(st["inside_runs_s"], r["dvc_status_s"])],
        ["  of which: between runs (start-up, imports, DVC)", st["between_runs_s"], ratio(st["between_runs_s"], r["dvc_status_s"])],
        *[[f"    {name}", seconds, None] for name, seconds in slow],
    ]
    if "make_test_s" in r:
        rows.append(["make test, CI=1 (target <= 720 s)", r["make_test_s"], ratio(r["make_test_s"], r["dvc_status_s"])])
    head = f"fresh clone of {r['commit'][:7]}: make run peak RSS {r['make_run_max_rss_mib']:.0f} MiB"
    return head + "\n" + format_table(["measurement", "seconds", "vs dvc status"], rows)
