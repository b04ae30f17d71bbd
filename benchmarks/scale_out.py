"""The distributed flow (flow.executor: pools) against the local flow and `dvc repro`, same stale DAG.

Real services (Postgres, MLflow server, Prefect server from flows/services.py) and two process workers
in two clones of this repository's committed files, with a DVC remote in a temp dir: the setup of
tests/test_scale_out.py, without the kill. Each run starts from a fresh clone (nothing cached), on the
same targets: the demo corpus prep, the char tokenizer and one TF-IDF baseline (16 stages).

Figures: wall time of each against `dvc repro`; per stage, the worker's fetch / run / push phases
(its Prefect table artifact), the head's take-and-commit, and the rest of the head's wait (queueing,
the worker's flow-run process start-up), so it shows which stages are worth sending to a pool.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.common import ROOT, bench_env, format_table, ratio

TARGETS = ["tokenizer@char", "finetune_baseline@tfidf-afqmc"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout


def _origin(tmp: Path) -> Path:
    origin = tmp / "origin"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(origin)], check=True)
    params = yaml.safe_load((origin / "params.yaml").read_text(encoding="utf-8"))
    params["flow"] |= {"executor": "pools", "max_workers": 2}
    (origin / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-q", "-d", "shared", str(tmp / "remote")], cwd=origin, check=True)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@zhnlp.invalid"]
    subprocess.run([*git, "commit", "-qam", "pools"], cwd=origin, check=True)
    return origin


def _stage_timings(api_url: str) -> dict[str, dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["zhnlp-stage-timings"])), limit=200)
    rows = {}
    for art in arts:
        data = json.loads(art.data) if isinstance(art.data, str) else art.data
        for row in data:
            rows[row["stage"]] = row
    return rows


def run(repeat: int, tmp: Path) -> dict:
    from flows.services import Services

    tmp.chmod(0o711)  # Postgres runs as its own user when we are root
    ports = {"ZHNLP_PG_PORT": _free_port(), "ZHNLP_MLFLOW_PORT": _free_port(), "ZHNLP_PREFECT_PORT": _free_port()}
    base = bench_env(tmp)
    services = Services(tmp / "services", base | {k: str(v) for k, v in ports.items()})
    workers: list[subprocess.Popen] = []
    try:
        api = services.up()
        env = base | api | {"PREFECT_WORKER_QUERY_SECONDS": "1"}
        origin = _origin(tmp)
        clones = {}
        for name in ("repro", "local", "head", "w1", "w2"):
            subprocess.run(["git", "clone", "-q", str(origin), str(tmp / name)], check=True)
            clones[name] = tmp / name
        local_params = clones["local"] / "params.yaml"
        local_params.write_text(local_params.read_text(encoding="utf-8").replace("executor: pools", "executor: local"), encoding="utf-8")

        out: dict = {"targets": TARGETS}
        print("  scale_out: dvc repro", flush=True)
        out["repro_s"], _ = _run([sys.executable, "-m", "dvc", "repro", "-q", *TARGETS], clones["repro"], env)
        print("  scale_out: local flow", flush=True)
        out["flow_local_s"], _ = _run([sys.executable, "-m", "flows.pipeline", *TARGETS], clones["local"], env)
        for name in ("w1", "w2"):
            log = open(tmp / f"{name}.log", "ab")
            workers.append(subprocess.Popen([sys.executable, "-m", "flows.services", "worker", "--pool", "cpu", "--name", name],
                                            cwd=clones[name], env=env | {"PREFECT_HOME": str(clones[name] / ".prefect")}, stdout=log, stderr=subprocess.STDOUT))
        print("  scale_out: distributed flow, 2 workers", flush=True)
        out["flow_pools_s"], stdout = _run([sys.executable, "-m", "flows.pipeline", *TARGETS], clones["head"], env)
        results = json.loads(stdout[stdout.index("[\n"):]) if "[\n" in stdout else []
        phases = _stage_timings(api["PREFECT_API_URL"])
        stages = []
        for r in results:
            p = phases.get(r["stage"], {})
            remote = sum(p.get(k, 0.0) for k in ("fetch_s", "run_s", "push_s"))
            stages.append({"stage": r["stage"], "worker": r.get("worker"), "head_s": r["seconds"], "take_s": r.get("take_s"),
                           "fetch_s": p.get("fetch_s"), "run_s": p.get("run_s"), "push_s": p.get("push_s"),
                           "dispatch_s": round(r["seconds"] - remote - (r.get("take_s") or 0.0), 3)})
        out["stages"] = stages
        status = subprocess.run([sys.executable, "-m", "dvc", "status", *TARGETS], cwd=clones["head"], env=env, capture_output=True, text=True)
        out["head_status_clean"] = "up to date" in status.stdout
        head_lock = yaml.safe_load((clones["head"] / "dvc.lock").read_text(encoding="utf-8"))["stages"]
        ref_lock = yaml.safe_load((clones["repro"] / "dvc.lock").read_text(encoding="utf-8"))["stages"]
        out["lock_equal"] = all(head_lock.get(s["stage"]) == ref_lock.get(s["stage"]) for s in stages)
        out["flow_local_vs_repro"] = ratio(out["flow_local_s"], out["repro_s"])
        out["flow_pools_vs_repro"] = ratio(out["flow_pools_s"], out["repro_s"])
        return out
    finally:
        for proc in workers:
            proc.kill()
        services.down()
        os.environ.pop("PGPASSFILE", None)


def summary(r: dict) -> str:
    rows = [
        ["dvc repro (baseline)", r["repro_s"], 1.0],
        ["flow, local executor", r["flow_local_s"], r["flow_local_vs_repro"]],
        ["flow, pools executor, 2 workers", r["flow_pools_s"], r["flow_pools_vs_repro"]],
    ]
    head = format_table(["same stale DAG, fresh clones", "seconds", "vs dvc repro"], rows)
    per = [[s["stage"], s["worker"], s["head_s"], s["run_s"], s["fetch_s"], s["push_s"], s["take_s"], s["dispatch_s"],
            ratio(s["head_s"], s["run_s"])] for s in r["stages"]]
    stages = format_table(["stage", "worker", "head wait", "run", "fetch", "push", "take+commit", "dispatch+start", "wait/run"], per)
    check = f"head dvc.lock entries == dvc repro's: {r['lock_equal']}; dvc status clean: {r['head_status_clean']}"
    return f"scale_out: {len(r['stages'])} stages ({', '.join(r['targets'])} and upstream)\n{head}\n{stages}\n{check}"
