"""One writer at a time per project (issue 8, item 5): the Prefect flow and ``dvc repro`` take the same
DVC read/write locks, so neither runs a stage the other is running, and the flow never reports a
stage it ran as "up to date".

Real ``dvc repro`` and a real Prefect flow (the session's test harness) on the tiny slow project of
``test_crash_safety``.
"""

from __future__ import annotations

import threading
import time

import psutil
import pytest
from conftest import ROOT
from test_crash_safety import finish, make_slow_project, output, runs, stage_pid, start

from flows.dag import DvcWriter, StageBusy


@pytest.fixture
def project(tmp_path, monkeypatch):
    project = make_slow_project(tmp_path / "slow")
    (project / "params.yaml").write_text("flow:\n  max_workers: 1\n")
    # The flow runs in this process and passes its environment on to the stage commands.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    return project


def test_dvc_repro_stops_before_touching_a_stage_the_flow_holds(project):
    writer = DvcWriter(project)
    (project / "out").mkdir()
    (project / "out" / "being-written").write_text("x")
    with writer.claim("slow"):
        repro = start(["dvc", "repro", "slow"], project)
        assert finish(repro) != 0
        assert f"{project / 'out'}' is busy" in output(repro), output(repro)
        assert (project / "out" / "being-written").is_file(), "dvc repro removed the outputs the flow is writing"
        assert not (project / "progress-out.log").exists(), "the stage command ran"
    repro = start(["dvc", "repro", "slow"], project, SLOW_STEPS="2")  # released: dvc repro runs it now
    assert finish(repro) == 0, output(repro)
    assert (project / "out" / "done").is_file()


def test_the_flow_refuses_a_stage_that_dvc_repro_is_running(project):
    repro = start(["dvc", "repro", "slow"], project, SLOW_STEPS="600")
    try:
        stage_pid(project, proc=repro)
        dvc_pid = repro.pid
        with pytest.raises(StageBusy) as busy:
            with DvcWriter(project).claim("slow"):
                pass
        message = str(busy.value)
        assert message.startswith("stage slow is in use by another DVC process (PID ") and message.endswith("wait for it or kill it")
        assert "\n" not in message and any(f"PID {pid})" in message for pid in (dvc_pid, *[c.pid for c in psutil.Process(dvc_pid).children(recursive=True)]))
        assert repro.poll() is None
    finally:
        repro.kill()
        finish(repro)


def test_dvc_repro_during_a_flow_run_is_refused_and_the_flow_reports_ran(project, prefect_harness, monkeypatch):
    from flows.pipeline import pipeline

    monkeypatch.setenv("SLOW_STEPS", "40")
    results: list = []
    flow = threading.Thread(target=lambda: results.append(pipeline(targets=["slow"], project_dir=str(project), retries=0)))
    flow.start()
    try:
        deadline = time.monotonic() + 120
        while not (project / "progress-out.log").is_file():
            assert time.monotonic() < deadline and flow.is_alive(), f"the flow did not start the stage: {results}"
            time.sleep(0.05)
        repro = start(["dvc", "repro", "slow"], project)
        assert finish(repro) != 0
        assert f"{project / 'out'}' is busy" in output(repro), output(repro)
    finally:
        flow.join(timeout=180)
    assert results and [(r["stage"], r["status"]) for r in results[0]] == [("slow", "ran")]
    assert len((project / "progress-out.log").read_text().splitlines()) == 40, "one writer wrote every step, once"
    status = start(["dvc", "status", "slow"], project)
    assert finish(status) == 0 and "up to date" in output(status), output(status)
    stage_runs = [r for r in runs(project) if r.data.tags.get("dvc.stage") == "slow"]
    assert [r.info.status for r in stage_runs] == ["FINISHED"]


def test_a_retried_stage_that_another_process_finished_meanwhile_is_reported_ran(project, prefect_harness, monkeypatch):
    """Before: attempt 1 ran and failed, ``dvc repro`` then made the stage up to date, and attempt 2
    reported "up to date" for a stage the flow had run. A retry of a started stage now runs it again."""
    from flows.pipeline import pipeline

    marker = project / "failed-once"
    monkeypatch.setenv("SLOW_STEPS", "2")
    monkeypatch.setenv("SLOW_FAIL_ONCE", str(marker))
    results: list = []
    flow = threading.Thread(
        target=lambda: results.append(pipeline(targets=["slow"], project_dir=str(project), retries=1, retry_delay_seconds=25))
    )
    flow.start()
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert time.monotonic() < deadline and flow.is_alive(), "attempt 1 did not run"
            time.sleep(0.05)
        while True:  # between the attempts: dvc repro runs the stage to the end and commits it
            repro = start(["dvc", "repro", "slow"], project)
            if finish(repro) == 0:
                break
            assert "is busy" in output(repro) and time.monotonic() < deadline, output(repro)
            time.sleep(0.5)
        status = start(["dvc", "status", "slow"], project)
        assert finish(status) == 0 and "up to date" in output(status), "dvc repro left the stage up to date"
    finally:
        flow.join(timeout=180)
    assert results and [(r["stage"], r["status"]) for r in results[0]] == [("slow", "ran")]
    assert (project / "out" / "done").is_file()


def test_stages_read_dvc_lock_only_between_the_flows_writes(tmp_path):
    """DVC rewrites dvc.lock in place; a stage parsing it while the flow commits once saw half a file
    (``'./dvc.lock' validation failed``). The flow writes under an exclusive guard, readers take it shared."""
    import subprocess
    import sys

    from stages.common.liveness import lockfile_guard

    (tmp_path / ".dvc").mkdir()
    marker = tmp_path / "written"
    writer = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from pathlib import Path; sys.path.insert(0, sys.argv[2])\n"
            "from stages.common.liveness import lockfile_guard\n"
            "root = Path(sys.argv[1])\n"
            "with lockfile_guard(root, exclusive=True):\n"
            "    (root / 'holding').write_text('1'); time.sleep(1.0); (root / 'written').write_text('done')\n"
        ), str(tmp_path), str(ROOT)],
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "holding").exists():
            assert writer.poll() is None and time.monotonic() < deadline, "writer did not start"
            time.sleep(0.02)
        with lockfile_guard(tmp_path):  # shared: waits for the writer to finish
            assert marker.read_text() == "done", "a reader got in while the writer held the guard"
        with lockfile_guard(tmp_path), lockfile_guard(tmp_path):  # readers do not exclude each other
            pass
    finally:
        assert writer.wait(timeout=60) == 0
