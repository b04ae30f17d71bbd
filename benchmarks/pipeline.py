"""DVC and Prefect overhead on a clean clone of this repository (the demo-data DAG).

Scope: the corpus-prep part of the DAG (``PREP_STAGES``). Today that is the whole
DAG, and the commands then name no targets; once later stages (tokenizer, training)
land, the prep stages are named as targets so figures stay comparable and the run
stays within budget.

Figures, each against a baseline from the same run:
  * no-op ``dvc repro`` vs ``dvc status``;
  * the Prefect flow vs ``dvc repro`` on the same all-stale DAG (no cache to restore);
  * the flow with nothing stale (pure overhead), split into phases from Prefect's log.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from benchmarks.common import ROOT, bench_env, format_table, ratio, run_child

UP_TO_DATE = "Data and pipelines are up to date."
STALE_PATHS = ("data/demo", "data/prepared", ".dvc/cache", ".dvc/tmp/runs")
PREP_STAGES = re.compile(r"^(demo_data|download@|prepare_)")
STALE_PAIRS = 3  # at most (the target is a median of 3); one stale repro + flow pair is ~75 s on 2 cores


class Project:
    """A clone of this repo's committed files, with commands timed in it."""

    def __init__(self, tmp: Path):
        self.dir = tmp / "project"
        self.env = bench_env(tmp)
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(self.dir)], check=True)
        self.all_stages = self.dvc("stage", "list", "--name-only")[1].split()
        prep = [name for name in self.all_stages if PREP_STAGES.match(name)]
        self.targets = [] if prep == self.all_stages else prep  # no targets = the whole DAG
        self.stages = prep

    def timed(self, *cmd: str) -> tuple[float, str]:
        """(wall seconds, stdout+stderr) of one command; a failure stops the benchmark."""
        child = run_child(list(cmd), cwd=self.dir, env=self.env)
        if child.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {child.returncode}):\n{child.stdout[-2000:]}\n{child.stderr[-3000:]}")
        return child.seconds, child.stdout + child.stderr

    def dvc(self, *args: str) -> tuple[float, str]:
        return self.timed(str(Path(sys.executable).parent / "dvc"), *args)

    def repro(self) -> tuple[float, str]:
        return self.dvc("repro", *self.targets)

    def status(self) -> tuple[float, str]:
        return self.dvc("status", *self.targets)

    def flow(self) -> tuple[float, dict | None]:
        """(wall seconds, phases) of one ephemeral-mode flow run (Prefect's temporary server)."""
        started = datetime.now()
        seconds, log = self.timed(sys.executable, "-m", "flows.pipeline", *self.targets, "--project-dir", str(self.dir))
        return seconds, flow_phases(log, started, seconds)

    def up_to_date(self, after: str) -> bool:
        ok = self.status()[1].strip() == UP_TO_DATE
        if not ok:
            print(f"\n!!!!! WARNING: `dvc status` is NOT clean after {after} !!!!!\n", flush=True)
        return ok

    def make_stale(self) -> None:
        """Every stage stale, nothing to restore: no outputs, no cache, no run-cache."""
        for rel in STALE_PATHS:
            shutil.rmtree(self.dir / rel, ignore_errors=True)


def best_of(repeat: int, fn) -> float:
    return min(fn()[0] for _ in range(repeat))


# ---------------------------------------------------------------- Prefect log phases

_LOG_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| \w+\s*\| (.*)$")
_EVENTS = {  # event -> text in the log message (first occurrence)
    "server_start": "Starting temporary server",
    "flow_begin": "Beginning flow run",
    "flow_end": "Finished in state",
    "server_stop": "Stopping temporary server",
}


def flow_phases(output: str, started: datetime, seconds: float) -> dict | None:
    """Split a flow's wall time using the HH:MM:SS.mmm stamps of Prefect's console log."""
    t0 = started.hour * 3600 + started.minute * 60 + started.second + started.microsecond / 1e6
    at: dict[str, float] = {}
    for line in output.splitlines():
        m = _LOG_LINE.match(line)
        if not m:
            continue
        stamp = (int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) - t0) % 86400
        for event, text in _EVENTS.items():
            if event not in at and text in m[4] and (event != "flow_end" or m[4].startswith("Flow run")):
                at[event] = stamp
    if set(at) != set(_EVENTS):
        return None
    return {
        "python_start_s": at["server_start"],  # interpreter, imports (prefect, dvc, mlflow)
        "server_start_s": at["flow_begin"] - at["server_start"],  # ephemeral server up + flow run created
        "flow_body_s": at["flow_end"] - at["flow_begin"],  # DAG load, dvc status, stages
        "shutdown_s": seconds - at["flow_end"],  # server stop, interpreter exit
    }


# ---------------------------------------------------------------- the benchmark


def run(repeat: int, tmp: Path) -> dict:
    project = Project(tmp)
    out: dict = {
        "repeat": repeat,
        "project_commit": project.timed("git", "rev-parse", "HEAD")[1].strip(),  # what the clone holds
        "stages": len(project.stages),
        "stages_in_dag": len(project.all_stages),
        "targets": project.targets,
    }

    print("  pipeline: full dvc repro on the fresh clone", flush=True)
    committed_lock = (project.dir / "dvc.lock").read_text(encoding="utf-8")
    out["repro_full_s"], _ = project.repro()
    out["lock_matches_commit_after_repro_full"] = (project.dir / "dvc.lock").read_text(encoding="utf-8") == committed_lock
    out["up_to_date_after_repro_full"] = project.up_to_date("the full dvc repro")

    print("  pipeline: no-op dvc repro vs dvc status", flush=True)
    out["status_s"] = best_of(repeat, project.status)
    out["repro_noop_s"] = best_of(repeat, project.repro)
    out["repro_noop_vs_status"] = ratio(out["repro_noop_s"], out["status_s"])

    # One flow run first, so the fresh Prefect DB's migrations stay out of the comparison.
    print("  pipeline: first flow run (fresh Prefect DB, nothing stale)", flush=True)
    out["flow_first_s"], out["flow_first_phases"] = project.flow()
    out["up_to_date_after_flow_first"] = project.up_to_date("the first flow run")

    pairs = min(repeat, STALE_PAIRS)
    print(f"  pipeline: all stale, dvc repro then the flow, x{pairs}", flush=True)
    repro_stale, flow_stale, flow_stale_phases, clean = [], [], [], []
    for _ in range(pairs):
        project.make_stale()
        repro_stale.append(project.repro()[0])
        clean.append(project.up_to_date("dvc repro on the stale DAG"))
        project.make_stale()
        seconds, phases = project.flow()
        flow_stale.append(seconds)
        flow_stale_phases.append(phases)
        clean.append(project.up_to_date("the flow on the stale DAG"))
    out["stale_pairs"] = pairs
    out["repro_stale_s"], out["flow_stale_s"] = min(repro_stale), min(flow_stale)
    out["repro_stale_all_s"], out["flow_stale_all_s"] = repro_stale, flow_stale
    out["flow_stale_phases"] = flow_stale_phases[flow_stale.index(min(flow_stale))]
    out["flow_vs_repro_stale"] = ratio(out["flow_stale_s"], out["repro_stale_s"])
    out["up_to_date_after_stale_runs"] = all(clean)

    print(f"  pipeline: flow with nothing stale, x{repeat}", flush=True)
    noop = [project.flow() for _ in range(repeat)]
    out["flow_noop_s"], out["flow_noop_phases"] = min(noop, key=lambda x: x[0])
    out["flow_noop_vs_repro_noop"] = ratio(out["flow_noop_s"], out["repro_noop_s"])
    out["up_to_date_after_flow_noop"] = project.up_to_date("the no-stale flow runs")
    return out


def summary(r: dict) -> str:
    noop_phases = r["flow_noop_phases"] or {}
    stale_phases = r["flow_stale_phases"] or {}
    first_phases = r["flow_first_phases"] or {}
    rows = [
        ["dvc status (baseline)", r["status_s"], "dvc status", 1.0, None],
        ["dvc repro, nothing to do", r["repro_noop_s"], "dvc status", r["repro_noop_vs_status"], None],
        ["dvc repro, full (fresh clone, once)", r["repro_full_s"], "-", None, r["up_to_date_after_repro_full"]],
        ["dvc repro, all stale (baseline)", r["repro_stale_s"], "repro stale", 1.0, r["up_to_date_after_stale_runs"]],
        ["flow, all stale", r["flow_stale_s"], "repro stale", r["flow_vs_repro_stale"], r["up_to_date_after_stale_runs"]],
        ["  of which: ephemeral server start", stale_phases.get("server_start_s"), "flow stale", ratio(stale_phases.get("server_start_s"), r["flow_stale_s"]), None],
        ["flow, nothing stale (pure overhead)", r["flow_noop_s"], "repro no-op", r["flow_noop_vs_repro_noop"], r["up_to_date_after_flow_noop"]],
        ["  of which: python start + imports", noop_phases.get("python_start_s"), "flow no-op", ratio(noop_phases.get("python_start_s"), r["flow_noop_s"]), None],
        ["  of which: ephemeral server start", noop_phases.get("server_start_s"), "flow no-op", ratio(noop_phases.get("server_start_s"), r["flow_noop_s"]), None],
        ["  of which: flow body", noop_phases.get("flow_body_s"), "flow no-op", ratio(noop_phases.get("flow_body_s"), r["flow_noop_s"]), None],
        ["  of which: server stop + exit", noop_phases.get("shutdown_s"), "flow no-op", ratio(noop_phases.get("shutdown_s"), r["flow_noop_s"]), None],
        ["flow, first run (fresh Prefect DB)", r["flow_first_s"], "flow no-op", ratio(r["flow_first_s"], r["flow_noop_s"]), r["up_to_date_after_flow_first"]],
        ["  of which: ephemeral server start", first_phases.get("server_start_s"), "flow no-op", ratio(first_phases.get("server_start_s"), r["flow_noop_s"]), None],
    ]
    table = format_table(["measurement", "seconds", "baseline", "ratio", "status clean"], rows)
    lock = "dvc.lock after the full repro: " + ("same as committed" if r["lock_matches_commit_after_repro_full"] else "DIFFERS from the committed one")
    scope = f"{r['stages']} stages" + ("" if not r["targets"] else f" (the prep stages of {r['stages_in_dag']})")
    best = f"best of {r['repeat']}, stale pairs best of {r['stale_pairs']}"
    return f"pipeline: clone of {r['project_commit'][:7]}, {scope}, {best} (seconds are wall time)\n{table}\n{lock}"
