"""Shared helpers: quiet offline environment, timed child processes, results and tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024


def bench_env(tmp: Path) -> dict[str, str]:
    """The Makefile's quiet, offline settings, with every tool's state inside ``tmp``."""
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)  # always the ephemeral server
    env.update(
        {
            "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
            "PREFECT_HOME": str(tmp / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
            "DO_NOT_TRACK": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
            "DVC_NO_ANALYTICS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HOME": str(tmp / "hf"),
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return env


@dataclass
class ChildRun:
    returncode: int
    seconds: float  # wall time of the whole child, start-up included
    max_rss_kib: int  # the child's peak resident set (ru_maxrss, KiB on Linux)
    stdout: str
    stderr: str


# Linux counts a forked child's peak RSS from its parent's: fork copies the parent's high-water mark, and
# exec folds it into the child's maxrss. After a large benchmark (bench_can peaks at 4.7 GB) every direct
# child would report at least that. So ``cmd`` runs under a small stdlib-only Python (``-S``, about 15 ms),
# whose own children start from its few MiB; it reports their peak RSS (RUSAGE_CHILDREN) on its last line.
_RSS_MARK = "@@zhnlp-bench-max-rss-kib="
_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:])\n"
    f"sys.stderr.write('\\n{_RSS_MARK}%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code if code >= 0 else 128 - code)\n"
)


def run_child(cmd: list[str], *, cwd: Path, env: dict[str, str]) -> ChildRun:
    """Run ``cmd`` to completion: its wall time and its peak RSS (the largest of its processes, its own
    start-up included, never this benchmark process's memory)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", _RSS_WRAPPER, *cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    head, _, mark = err.rstrip("\n").rpartition("\n")
    if not mark.startswith(_RSS_MARK):
        raise RuntimeError(f"{cmd[0]}: no peak RSS from the benchmark's wrapper (exit {proc.returncode}):\n{err[-2000:]}")
    return ChildRun(proc.returncode, seconds, int(mark[len(_RSS_MARK) :]), out, head)


def ratio(num: float | None, den: float | None) -> float | None:
    return None if not num or not den else num / den


def write_results(name: str, results: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def format_table(headers: list[str], rows: list[list]) -> str:
    """A plain-text table; numbers right-aligned, None shown as '-'."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(headers))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
