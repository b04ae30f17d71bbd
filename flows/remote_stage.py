"""One DVC stage on a worker host: the flow that Prefect work-pool workers run (``zhnlp-stage``).

The head's pipeline flow (flows/pipeline.py with ``flow.executor: pools``) creates one run of this
flow per stale stage. A process worker started by ``make worker POOL=...`` picks it up and runs it in
its own checkout (``ZHNLP_CHECKOUT``), which must sit at the head's git commit with no local edits:

1. check the checkout (commit and tracked files), and tag the run with this worker's name, so the
   head can tell a lost worker from a slow stage;
2. take the head's dvc.lock and fetch the stage's inputs (its upstream stages' outputs) from the
   DVC remote;
3. run the stage command, under ``torchrun --nproc_per_node <GPUs here>`` for the stages in
   ``flow.torchrun`` when this host has more than one GPU;
4. hash the outputs, push them, then push the stage's run-cache entry (in that order, so an entry
   on the remote always has its outputs there), and report the timings as a table artifact.

The head takes the outputs from the remote through the run-cache entry and stays the only writer of
its dvc.lock. Nothing here writes to the head.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import flows  # noqa: F401 - offline, in-project Prefect defaults
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from flows.dag import load_dag, open_repo, publish_run, remove_output
from stages.common.liveness import OWNER_ENV, identity

WORKER_ENV = "ZHNLP_WORKER"  # this worker's name, as given to `prefect worker start --name`
CHECKOUT_ENV = "ZHNLP_CHECKOUT"  # the worker's checkout: the deployment's pull step cds into it
WORKER_TAG = "zhnlp.worker:"  # flow-run tag prefix: which worker claimed the run


@flow(name="zhnlp-stage", flow_run_name="{stage}", log_prints=True, retries=0)
def run_dvc_stage(stage: str, commit: str, lock: str, env: dict[str, str], remote: str = "", torchrun: list[str] | None = None) -> dict:
    logger = get_run_logger()
    worker = os.environ.get(WORKER_ENV)
    if not worker:
        raise RuntimeError(f"{WORKER_ENV} is not set: start workers with `make worker POOL=<pool>` (it names the worker)")
    _tag_run(worker)
    root = Path.cwd().resolve()
    times: dict[str, float] = {}

    t = time.perf_counter()
    check_checkout(root, commit)
    (root / "dvc.lock").write_text(lock, encoding="utf-8")
    plan = load_dag(root)[stage]
    with open_repo(root) as repo:
        if plan.upstream:
            repo.pull(targets=list(plan.upstream), remote=remote or None, force=True)
    times["fetch_s"] = time.perf_counter() - t

    t = time.perf_counter()
    for path, persist in plan.outs:
        if not persist:
            remove_output(Path(path))
    host = socket.gethostname()
    stage_env = os.environ | env | {
        "DVC_ROOT": str(root),
        "DVC_STAGE": stage,
        OWNER_ENV: identity(),  # the stage ends with this flow run (and with the worker that runs it)
        "MLFLOW_RUN_CONTEXT": json.dumps({"zhnlp.host": host, "zhnlp.worker": worker}),
    }
    for cmd in plan.cmds:
        cmd = launcher(cmd, stage, torchrun or [])
        logger.info("%s on %s: %s", stage, worker, cmd)
        proc = subprocess.run(cmd, shell=True, cwd=plan.wdir, env=stage_env)
        if proc.returncode != 0:
            raise RuntimeError(f"stage {stage} failed on {worker} (exit {proc.returncode}): {cmd}")
    times["run_s"] = time.perf_counter() - t

    t = time.perf_counter()
    with open_repo(root) as repo:
        repo.commit(stage, force=True)
        dvc_stage = next(s for s in repo.index.stages if s.addressing == stage)
        repo.stage_cache.save(dvc_stage)
        publish_run(repo, dvc_stage, remote)
    times["push_s"] = time.perf_counter() - t

    row = {"stage": stage, "worker": worker, "host": host} | {k: round(v, 3) for k, v in times.items()}
    create_table_artifact([row], key="zhnlp-stage-timings", description=f"{stage} on {worker}")
    return row


def check_checkout(root: Path, commit: str) -> None:
    """The worker's checkout is at the head's commit and its tracked files are unedited (dvc.lock aside)."""
    head = _git(root, "rev-parse", "HEAD")
    if head != commit:
        raise RuntimeError(
            f"{root} is at commit {head[:12]}, the head at {commit[:12]}: run `git fetch && git checkout {commit}` on this worker"
        )
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)dvc.lock")
    if dirty:
        raise RuntimeError(f"{root} has local edits to tracked files ({', '.join(line.split(None, 1)[-1] for line in dirty.splitlines()[:5])}); the worker must run the committed code")


def launcher(cmd: str, stage: str, torchrun: list[str]) -> str:
    """``python stages/x.py ...`` becomes ``torchrun --nproc_per_node N stages/x.py ...`` on a multi-GPU host."""
    gpus = _gpu_count()
    if stage.split("@")[0] not in torchrun or gpus < 2:
        return cmd
    words = shlex.split(cmd)
    if words[:2] == ["python", "-m"]:
        return shlex.join(["torchrun", "--standalone", f"--nproc_per_node={gpus}", "-m", *words[2:]])
    if words[:1] == ["python"]:
        return shlex.join(["torchrun", "--standalone", f"--nproc_per_node={gpus}", *words[1:]])
    return cmd


def _gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True)
        return len(out.stdout.splitlines()) if out.returncode == 0 else 0
    return 0


def _tag_run(worker: str) -> None:
    from prefect.client.orchestration import get_client

    run_id = flow_run.id
    with get_client(sync_client=True) as client:
        tags = [t for t in client.read_flow_run(run_id).tags if not t.startswith(WORKER_TAG)]
        client.update_flow_run(run_id, tags=tags + [WORKER_TAG + worker])


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
