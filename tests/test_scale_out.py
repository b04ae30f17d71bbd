"""Scale-out on one machine: real Postgres, MLflow server, Prefect server, two process workers in two
clones ("hosts") and a DVC remote in a temp dir. The head runs the demo DAG's data stages and a
baseline through ``flow.executor: pools``; one worker is killed in the middle of a stage.

Checked: stages ran on both workers; the killed stage was retried on the other one; the head's
dvc.lock entries equal a plain ``dvc repro``'s and ``dvc status`` is clean; MLflow (on Postgres) has
one parent with every stage as a child, tagged with its worker and host.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_project, project_env

pytestmark = pytest.mark.slow

TARGETS = ["tokenizer@char", "finetune_baseline@tfidf-afqmc"]
KILL_STAGE = "tokenizer@char"  # runs last, once every prepare stage is done on one worker or the other


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def cluster(tmp_path):
    from flows.services import Services

    home = Path(tempfile.mkdtemp(prefix="zhnlp-services-"))  # outside pytest's 0700 tree: Postgres runs as its own user
    home.chmod(0o711)
    ports = {"ZHNLP_PG_PORT": _free_port(), "ZHNLP_MLFLOW_PORT": _free_port(), "ZHNLP_PREFECT_PORT": _free_port()}
    services = Services(home, os.environ | {k: str(v) for k, v in ports.items()})
    workers: dict[str, subprocess.Popen] = {}
    try:
        client_env = services.up()
        yield services, client_env, workers
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                _kill_tree(proc.pid)
        services.down()
        shutil.rmtree(home, ignore_errors=True)


def _origin(tmp_path: Path) -> Path:
    """A committed project whose flow hands stages to the pools and whose default DVC remote is shared."""
    origin = make_project(tmp_path / "origin")
    params = yaml.safe_load((origin / "params.yaml").read_text(encoding="utf-8"))
    params["flow"] |= {"executor": "pools", "retries": 2, "retry_delay_seconds": 1, "worker_lost_seconds": 20, "max_workers": 2}
    (origin / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote")], cwd=origin, check=True)
    _git(origin, "add", "-A")
    _git(origin, "-c", "user.name=t", "-c", "user.email=t@zhnlp.invalid", "commit", "-qm", "pools")
    return origin


def _start_worker(clone: Path, name: str, env: dict) -> subprocess.Popen:
    log = open(clone.parent / f"{name}.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "flows.services", "worker", "--pool", "cpu", "--name", name],
        cwd=clone, env=env | {"PREFECT_HOME": str(clone / ".prefect")}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def _kill_tree(pid: int) -> None:
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for proc in procs:
        proc.kill()
    psutil.wait_procs(procs, timeout=10)


def _stage_runs(api_env: dict) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["zhnlp-stage"])), limit=200)


def test_two_workers_run_the_dag_and_survive_a_killed_worker(tmp_path, cluster):
    from flows.dag import load_dag, upstream_closure
    from flows.pools import worker_of

    services, api_env, workers = cluster
    origin = _origin(tmp_path)
    clones = {}
    for name in ("head", "w1", "w2", "ref"):
        subprocess.run(["git", "clone", "-q", str(origin), str(tmp_path / name)], check=True)
        clones[name] = tmp_path / name
    closure = upstream_closure(load_dag(clones["ref"]), set(TARGETS))

    # The reference: a plain dvc repro of the same targets.
    ref_env = project_env(clones["ref"])
    subprocess.run([sys.executable, "-m", "dvc", "repro", *TARGETS], cwd=clones["ref"], env=ref_env, check=True, capture_output=True)

    env = project_env(clones["head"]) | api_env | {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_HEARTBEAT_SECONDS": "5"}
    for name in ("w1", "w2"):
        workers[name] = _start_worker(clones[name], name, env)
    head_log = open(tmp_path / "head.log", "wb")
    head = subprocess.Popen(
        [sys.executable, "-m", "flows.pipeline", *TARGETS], cwd=clones["head"], env=env | {"PREFECT_HOME": str(clones["head"] / ".prefect")},
        stdout=head_log, stderr=subprocess.STDOUT,
    )

    killed = None
    deadline = time.monotonic() + 900
    while head.poll() is None and time.monotonic() < deadline:
        if killed is None:
            running = [r for r in _stage_runs(api_env) if r.name == KILL_STAGE and r.state.is_running() and worker_of(r)]
            if running:
                killed = worker_of(running[0])
                _kill_tree(workers[killed].pid)  # the worker, its flow run and the stage command: a host dies
        time.sleep(0.5)
    if head.poll() is None:
        head.kill()
    log = (tmp_path / "head.log").read_text(errors="replace")
    assert head.returncode == 0, log[-3000:]
    assert killed, f"{KILL_STAGE} was never seen running on a worker"

    runs = _stage_runs(api_env)
    done = {r.name: worker_of(r) for r in runs if r.state.is_completed()}
    assert set(done) == closure, sorted(closure - set(done))
    assert set(done.values()) == {"w1", "w2"}, done
    lost = [r for r in runs if r.name == KILL_STAGE and r.state.is_crashed()]
    assert [worker_of(r) for r in lost] == [killed]
    assert done[KILL_STAGE] != killed  # retried on the worker still alive

    # dvc.lock: the head's entries are the plain repro's, and the workspace matches them.
    head_lock = yaml.safe_load((clones["head"] / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    ref_lock = yaml.safe_load((clones["ref"] / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    for stage in sorted(closure):
        assert head_lock[stage] == ref_lock[stage], stage
    status = subprocess.run([sys.executable, "-m", "dvc", "status", *TARGETS], cwd=clones["head"], env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout + status.stderr

    # MLflow on Postgres: one parent, every stage a child, tagged with where it ran.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=api_env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("zhnlp")
    parents = client.search_runs([exp.experiment_id], "tags.`zhnlp.trigger` = 'prefect'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    finished = {c.data.tags.get("dvc.stage"): c for c in children if c.info.status == "FINISHED"}
    assert set(finished) == closure
    assert {c.data.tags["zhnlp.worker"] for c in finished.values()} == {"w1", "w2"}
    assert all(c.data.tags.get("zhnlp.host") for c in finished.values())
    assert finished[KILL_STAGE].data.tags["zhnlp.worker"] == done[KILL_STAGE]
