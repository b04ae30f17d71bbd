"""Crash safety (issue 8, item 4): a stage dies with its ``dvc repro``, a second writer of a stage is
refused with one line, and a killed stage's MLflow runs are closed and linked to the next run.

Real processes throughout: real ``dvc repro`` in a tiny git + DVC project whose one stage is a
StageRun that writes a step every 0.1 s (``slow_project``), real signals, the project's own
SQLite MLflow store. Every subprocess runs in its own session under a timeout and is killed with
its group if it overruns.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest
from conftest import ROOT, project_env

SLOW_PY = '''"""A stage that takes its time: out/step-N every 0.1 s, and its progress outside its outputs."""
import os
import sys
import time
from pathlib import Path

from stages.common import StageRun, run


def main():
    steps = int(os.environ.get("SLOW_STEPS", "300"))
    with StageRun("slow", {"steps": steps}):
        fail_once = os.environ.get("SLOW_FAIL_ONCE")
        if fail_once and not os.path.exists(fail_once):
            open(fail_once, "w").close()
            sys.exit(1)
        out = Path(sys.argv[1])
        out.mkdir(exist_ok=True)
        for i in range(steps):
            (out / f"step-{i}").write_text("x")
            with open(f"progress-{out.name}.log", "a") as fh:
                fh.write(f"{os.getpid()} {i}\\n")
            time.sleep(0.1)
        (out / "done").write_text("done")


run(main)
'''

DVC_YAML = """stages:
  slow:
    cmd: python slow.py out
    deps: [slow.py]
    outs: [out]
  slow_sh:
    cmd: python slow.py out_sh && echo finished
    deps: [slow.py]
    outs: [out_sh]
  needs_input:
    cmd: python slow.py out_in
    deps: [slow.py, missing.txt]
    outs: [out_in]
"""

TIMEOUT = 120


def make_slow_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "slow.py").write_text(SLOW_PY)
    (dest / "dvc.yaml").write_text(DVC_YAML)
    (dest / ".gitignore").write_text("mlflow.db\nmlartifacts/\nprogress-*.log\nrun-*.out\n")
    env = slow_env(dest)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run(["dvc", "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "slow project"], cwd=dest, check=True, env=env)
    return dest


def slow_env(project: Path, **extra: str) -> dict:
    # DVC_ROOT: slow.py lives outside this checkout, so a hand run names its project as dvc would.
    return project_env(project, PYTHONPATH=str(ROOT), DVC_ROOT=str(project), **extra)


def start(cmd: list[str], project: Path, **extra: str) -> subprocess.Popen:
    log = project / f"run-{time.monotonic_ns()}.out"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=project, env=slow_env(project, **extra), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    return proc


def output(proc: subprocess.Popen) -> str:
    return proc.log.read_text(errors="replace")


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise AssertionError(f"{proc.args} ran over {timeout}s:\n{output(proc)[-4000:]}") from None


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def stage_pid(project: Path, out: str = "out", timeout: float = TIMEOUT, proc: subprocess.Popen | None = None) -> int:
    """The pid of the stage process once it is inside StageRun, writing steps."""
    log = project / f"progress-{out}.log"
    deadline = time.monotonic() + timeout
    while not (log.is_file() and log.read_text().strip()):
        assert proc is None or proc.poll() is None, f"ended before the stage started:\n{output(proc)[-4000:]}"
        assert time.monotonic() < deadline, "the stage did not start in time"
        time.sleep(0.05)
    return int(log.read_text().split()[0])


def gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def runs(project: Path) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("zhnlp")
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


@pytest.fixture
def project(tmp_path) -> Path:
    return make_slow_project(tmp_path / "slow")


@pytest.mark.parametrize(
    ("stage", "how"),
    [("slow", "SIGKILL"), ("slow", "SIGTERM"), ("slow", "timeout"), ("slow_sh", "SIGKILL")],
    ids=["sigkill", "sigterm", "timeout", "sigkill-through-shell"],
)
def test_a_stage_dies_with_its_dvc_repro(project, stage, how):
    """Before: the stage went on writing, orphaned, and the next repro ran a second one beside it."""
    out = "out" if stage == "slow" else "out_sh"
    cmd = ["dvc", "repro", stage]
    proc = start(["timeout", "20", *cmd] if how == "timeout" else cmd, project)
    try:
        pid = stage_pid(project, out, proc=proc)
        if how != "timeout":
            dvc = next(p for p in [psutil.Process(proc.pid)] if "dvc" in " ".join(p.cmdline()))
            os.kill(dvc.pid, getattr(signal, how))  # dvc alone: its stage is not signalled
        assert gone(pid, within=20 + 5), f"stage {pid} outlived its dvc repro ({how})"
        log = project / f"progress-{out}.log"
        steps = len(log.read_text().splitlines())
        time.sleep(1)
        assert len(log.read_text().splitlines()) == steps, "something still writes"
    finally:
        kill_group(proc)
    assert not (project / out / "done").exists()
    (killed,) = [r for r in runs(project) if r.data.tags.get("dvc.stage") == stage]
    # The stage is stopped with SIGTERM (parent-death signal or watchdog): it unwinds, its run ends KILLED.
    assert killed.info.status == "KILLED", killed.info.status
    assert killed.data.tags["zhnlp.owner"].split(":")[:2] == [socket.gethostname(), str(pid)]
    assert {r.info.run_id: r.info.status for r in runs(project)}[killed.data.tags["mlflow.parentRunId"]] == "KILLED"

    # The next repro runs the stage to the end and says which run it follows.
    rerun = start(["dvc", "repro", stage], project, SLOW_STEPS="3")
    assert finish(rerun) == 0, output(rerun)[-4000:]
    assert (project / out / "done").is_file()
    new = [r for r in runs(project) if r.data.tags.get("dvc.stage") == stage and r.info.run_id != killed.info.run_id]
    assert [r.info.status for r in new] == ["FINISHED"]
    assert new[0].data.tags["zhnlp.resumed_from_run"] == killed.info.run_id
    assert all(r.info.status != "RUNNING" for r in runs(project))


def test_sigkill_of_the_whole_repro_closes_stale_runs_and_links_the_next(project):
    """SIGKILL of dvc and its stage together leaves no chance to clean up: the next run does it."""
    proc = start(["dvc", "repro", "slow"], project)
    try:
        stage_pid(project, proc=proc)
    finally:
        kill_group(proc)
    (killed,) = [r for r in runs(project) if r.data.tags.get("dvc.stage") == "slow"]
    parent_id = killed.data.tags["mlflow.parentRunId"]
    assert killed.info.status == "RUNNING"  # what a SIGKILL leaves behind
    assert {r.info.run_id: r.info.status for r in runs(project)}[parent_id] == "RUNNING"

    rerun = start(["dvc", "repro", "slow"], project, SLOW_STEPS="3")
    assert finish(rerun) == 0, output(rerun)[-4000:]
    status = {r.info.run_id: r.info.status for r in runs(project)}
    assert status[killed.info.run_id] == "KILLED" and status[parent_id] == "KILLED"
    (new,) = [r for r in runs(project) if r.data.tags.get("dvc.stage") == "slow" and r.info.run_id != killed.info.run_id]
    assert new.info.status == "FINISHED" and new.data.tags["zhnlp.resumed_from_run"] == killed.info.run_id
    assert new.data.tags["mlflow.parentRunId"] != parent_id
    assert status[new.data.tags["mlflow.parentRunId"]] == "FINISHED"
    assert "RUNNING" not in status.values()


def test_a_second_writer_of_a_stage_is_refused_with_one_line(project):
    """A live writer (here run by hand, so nothing kills it with dvc) blocks both a hand run and dvc repro."""
    first = start([sys.executable, "slow.py", "out"], project)
    try:
        pid = stage_pid(project, proc=first)
        lock = json.loads((project / ".dvc/tmp/zhnlp-locks/slow.lock").read_text())
        assert lock["pid"] == pid and lock["host"] == socket.gethostname() and "slow.py" in lock["cmd"]

        by_hand = start([sys.executable, "slow.py", "out"], project)
        assert finish(by_hand) == 2
        text = output(by_hand).strip()
        assert text.startswith("error: stage slow is already running (pid ") and text.endswith("wait for it or kill it"), text
        assert len(text.splitlines()) == 1 and f"pid {pid} " in text and "Traceback" not in text

        # dvc repro stops on the writer's entry in DVC's own rwlock, before it removes any output.
        written = len(list((project / "out").glob("step-*")))
        repro = start(["dvc", "repro", "slow"], project)
        assert finish(repro) != 0
        assert f"{project / 'out'}' is busy" in output(repro), output(repro)
        assert first.poll() is None and psutil.pid_exists(pid), "the first writer goes on"
        assert len(list((project / "out").glob("step-*"))) >= written > 0, "the outputs were removed under the writer"
        assert not (project / "dvc.lock").exists()
        # The refused runs opened no MLflow run; the first one is still the only one, RUNNING.
        assert [(r.info.status, r.data.tags["zhnlp.owner"].split(":")[1]) for r in runs(project)] == [("RUNNING", str(pid))]
    finally:
        kill_group(first)


def test_stale_lock_file_and_reused_pid_never_block(project):
    """A lock file naming a live process (a reused pid) but not flock-ed is stale: the stage runs."""
    lock = project / ".dvc/tmp/zhnlp-locks/slow.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = psutil.Process()
    lock.write_text(json.dumps({"stage": "slow", "host": socket.gethostname(), "pid": me.pid, "create_time": 1.0, "started": "long ago", "cmd": "x"}))
    proc = start([sys.executable, "slow.py", "out"], project, SLOW_STEPS="2")
    assert finish(proc) == 0, output(proc)
    assert lock.read_text() == "", "the lock file is emptied when its holder ends"
    (run,) = runs(project)
    assert run.info.status == "FINISHED" and "mlflow.parentRunId" not in run.data.tags  # by hand: no parent
    assert run.data.tags["dvc.deps_hash"] == "not-run-by-dvc"


def test_a_hand_run_named_as_a_dvc_stage_hands_its_write_locks_back(project):
    """DVC_STAGE set with no dvc or flow above it (a stage's command rerun by hand): the stage write-locks its
    outputs in DVC's own rwlock as itself, and releases them when it ends, so no dead entry is left behind."""
    proc = start([sys.executable, "slow.py", "out"], project, SLOW_STEPS="2", DVC_STAGE="slow")
    assert finish(proc) == 0, output(proc)
    rwlock = json.loads((project / ".dvc/tmp/rwlock").read_text())
    assert not rwlock.get("write"), rwlock
    (run,) = runs(project)
    assert len(run.data.tags["dvc.deps_hash"]) == 64, "its dependencies were hashed as DVC hashes them"


def test_a_stage_under_dvc_whose_input_is_missing_stops_with_one_line(project):
    """DVC_STAGE names a stage whose dependency does not exist (its upstream never ran): one error line, exit 2."""
    proc = start([sys.executable, "slow.py", "out_in"], project, SLOW_STEPS="1", DVC_STAGE="needs_input")
    assert finish(proc) == 2
    text = output(proc).strip()
    assert text == "error: stage needs_input: dependency 'missing.txt' does not exist; run the stages before it first (dvc repro needs_input)", text
    assert not (project / "out_in").exists() and runs(project) == []


def test_stale_running_runs_are_judged_by_pid_and_start_time(project, monkeypatch):
    """A RUNNING run whose owner pid now names another process (pid reuse) is KILLED; a live owner's is kept."""
    from stages.common.liveness import identity

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.create_experiment("zhnlp", artifact_location=(project / "mlartifacts").as_uri())
    host, pid, created = identity().rsplit(":", 2)
    reused = client.create_run(exp, run_name="slow", tags={"dvc.stage": "slow", "zhnlp.owner": f"{host}:{pid}:{float(created) - 100:.3f}"})
    elsewhere = client.create_run(exp, run_name="slow", tags={"dvc.stage": "slow", "zhnlp.owner": f"another-host.invalid:{pid}:1.000"})
    live_parent = client.create_run(exp, run_name="pipeline", tags={"zhnlp.owner": identity()})
    live = client.create_run(exp, run_name="slow", tags={"dvc.stage": "slow", "zhnlp.owner": identity(), "mlflow.parentRunId": live_parent.info.run_id})
    untagged = client.create_run(exp, run_name="slow", tags={"dvc.stage": "slow"})

    proc = start([sys.executable, "slow.py", "out"], project, SLOW_STEPS="1")
    assert finish(proc) == 0, output(proc)
    status = {r.info.run_id: r.info.status for r in runs(project)}
    assert status[reused.info.run_id] == "KILLED"
    assert status[elsewhere.info.run_id] == "RUNNING", "another host's process cannot be judged from here"
    assert status[live.info.run_id] == "RUNNING" and status[live_parent.info.run_id] == "RUNNING"
    assert status[untagged.info.run_id] == "RUNNING"
    (new,) = [r for r in runs(project) if r.info.status == "FINISHED"]
    assert "zhnlp.resumed_from_run" not in new.data.tags  # the latest run before it was not killed (a live one)


def test_hand_run_without_dvc_still_runs_and_sigterm_ends_it_as_killed(project):
    proc = start([sys.executable, "slow.py", "out"], project)
    try:
        pid = stage_pid(project, proc=proc)
        os.kill(pid, signal.SIGTERM)
        assert finish(proc, timeout=30) == 128 + signal.SIGTERM
    finally:
        kill_group(proc)
    (run,) = runs(project)
    assert run.info.status == "KILLED"
    assert json.loads((project / ".dvc/tmp/zhnlp-locks/slow.lock").read_text() or "{}") == {}
    again = start([sys.executable, "slow.py", "out"], project, SLOW_STEPS="2")
    assert finish(again) == 0, output(again)
    new = [r for r in runs(project) if r.info.run_id != run.info.run_id]
    assert [r.info.status for r in new] == ["FINISHED"] and new[0].data.tags["zhnlp.resumed_from_run"] == run.info.run_id


def test_a_stage_started_by_the_flow_dies_with_it(project):
    """The flow names itself in ZHNLP_OWNER_PROCESS; here a stand-in owner process is killed instead."""
    from stages.common.liveness import identity

    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        proc = start([sys.executable, "slow.py", "out"], project, ZHNLP_OWNER_PROCESS=identity(psutil.Process(owner.pid)))
        pid = stage_pid(project, proc=proc)
        owner.kill()
        owner.wait()
        assert finish(proc, timeout=30) == 128 + signal.SIGTERM
        assert "the process that started this stage" in output(proc) and "stopping" in output(proc)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        owner.kill()
        kill_group(proc)
    (run,) = runs(project)
    assert run.info.status == "KILLED"


def test_an_owner_whose_pid_was_reused_counts_as_gone(project):
    """The owner is named by pid and start time: the same pid with another start time is another process."""
    from stages.common.liveness import identity

    host, pid, created = identity().rsplit(":", 2)
    proc = start([sys.executable, "slow.py", "out"], project, ZHNLP_OWNER_PROCESS=f"{host}:{pid}:{float(created) - 50:.3f}")
    assert finish(proc, timeout=60) == 128 + signal.SIGTERM
    text = output(proc).strip()
    assert text.startswith("error: stage slow: the process that started it (") and text.endswith(") is gone"), text
    assert not (project / "progress-out.log").exists() and runs(project) == []
