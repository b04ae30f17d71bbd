"""The flow offline two ways: ephemeral (no server) and against `prefect server start` on 127.0.0.1,
plus the cron deployment served to that server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, make_project, project_env

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def get_json(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def run_flow_cli(project: Path, env: dict, *args: str) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", *args, "--project-dir", str(project)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("[") :])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("server") / "project")


def test_flow_in_ephemeral_mode(project, tmp_path):
    env = project_env(project, PREFECT_HOME=str(tmp_path / "prefect"))
    env.pop("PREFECT_API_URL", None)
    results = run_flow_cli(project, env, "demo_data")
    assert [(r["stage"], r["status"]) for r in results] == [("demo_data", "ran")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = os.environ | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: get_json(f"{api}/health") is True, 120, "prefect server health")
        yield api, home
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_flow_against_a_local_server(project, server):
    api, home = server
    env = project_env(project, PREFECT_API_URL=api, PREFECT_HOME=str(home))
    results = run_flow_cli(project, env, "prepare_clue@tnews")
    assert ("prepare_clue@tnews", "ran") in [(r["stage"], r["status"]) for r in results]
    runs = get_json(f"{api}/flow_runs/filter", {"limit": 10})
    assert any(r["state_type"] == "COMPLETED" for r in runs)


def test_deployment_carries_the_cron_schedule_and_runs_on_request(project, server):
    api, home = server
    env = project_env(project, PREFECT_API_URL=api, PREFECT_HOME=str(home))
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.deploy", "--name", "ci-check", "--cron", "0 0 1 1 *"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deployments = wait_until(lambda: get_json(f"{api}/deployments/filter", {"limit": 10}), 90, "the deployment")
        (dep,) = [d for d in deployments if d["name"] == "ci-check"]
        assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["0 0 1 1 *"]
        run = get_json(f"{api}/deployments/{dep['id']}/create_flow_run",
                       {"parameters": {"project_dir": str(project), "targets": ["prepare_clue@afqmc"]}})
        done = wait_until(
            lambda: (r := get_json(f"{api}/flow_runs/{run['id']}")) and r["state_type"] in ("COMPLETED", "FAILED", "CRASHED") and r,
            240, "the deployment's flow run",
        )
        assert done["state_type"] == "COMPLETED"
    finally:
        serve.terminate()
        serve.wait(timeout=30)
