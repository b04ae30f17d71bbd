"""pretrain@<backbone> end to end in a project copy: SIGKILL mid-training then resume, and 2-process DDP.

Real torch/transformers/MLflow (the copy's SQLite store) and, when dvc.yaml has the
``pretrain@char`` stage, real ``dvc repro``. The tokenizer and encoded shards are a fixture
written straight into the copy (``make_encoded_fixture``), so these tests do not depend on the
tokenizer and encode stages. Every subprocess runs in its own process group under a timeout, and
is killed with its group if it overruns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from conftest import make_project, project_env
from safetensors.torch import load_file
from test_pretraining import make_encoded_fixture

pytestmark = pytest.mark.slow

STAGE = "pretrain@char"
TIMEOUT = 600
MAX_STEPS = 40
TINY = {
    "model": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64},
    # 60 training rows in batches of 8: 8 steps an epoch, so checkpoint-20 falls inside epoch 2 and the
    # resumed run must restore the epoch's shuffle and skip exactly the batches already seen.
    "training": {"max_steps": MAX_STEPS, "per_device_train_batch_size": 8, "save_steps": 10, "logging_steps": 5, "eval_steps": 20, "learning_rate": 2e-3},
}


def env(project: Path) -> dict:
    return project_env(project, OMP_NUM_THREADS="1")  # tiny models: one thread is fastest, and no oversubscription


def run(cmd: list[str], project: Path, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    """Run to completion in its own process group; kill the whole group if it overruns."""
    proc = subprocess.Popen(cmd, cwd=project, env=env(project), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} ran over {timeout}s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def ok(cmd: list[str], project: Path) -> str:
    proc = run(cmd, project)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}"
    return proc.stdout


def dvc_wired(project: Path) -> bool:
    proc = run(["dvc", "stage", "list", "--name-only"], project, timeout=120)
    return proc.returncode == 0 and STAGE in proc.stdout.split()


def stage_cmd(project: Path) -> list[str]:
    """Through DVC when dvc.yaml has the stage (only this stage: the fixture stands in for its upstream)."""
    if dvc_wired(project):
        return ["dvc", "repro", "--single-item", STAGE]
    return [sys.executable, "-m", "stages.pretrain", "char"]


def mlflow_runs(project: Path) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("zhnlp")
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def wipe_outputs(project: Path) -> None:
    for rel in ("models/pretrain", "reports/pretrain"):
        shutil.rmtree(project / rel, ignore_errors=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("pretrain") / "project")
    wipe_outputs(project)  # whatever a run in the source checkout left behind
    make_encoded_fixture(project, "char", train_rows=60, heldout_rows=48, shard_rows=32)
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    params["pretrain"]["model"] = TINY["model"]
    params["pretrain"]["training"].update(TINY["training"])
    params_path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    subprocess.run(["git", "commit", "-qam", "tiny pretrain params"], cwd=project, env=env(project), check=True)
    return project


def last_run(project: Path) -> dict:
    """The MLflow metrics of the newest finished pretrain run (how it went: resumed or not, from which step)."""
    finished = [r for r in mlflow_runs(project) if r.data.tags.get("dvc.stage") == STAGE and r.info.status == "FINISHED"]
    return max(finished, key=lambda r: r.info.start_time).data.metrics


def test_sigkill_mid_training_then_rerun_continues_from_the_last_checkpoint(project):
    out_dir, ckpt_dir = project / "models/pretrain/char", project / "models/pretrain/char-checkpoints"
    direct = [sys.executable, "-m", "stages.pretrain", "char"]

    # 1. The uninterrupted run: reference weights and metrics.
    log = ok(direct, project)
    assert "fresh start (no checkpoint)" in log
    reference = load_file(out_dir / "model.safetensors")
    SINGLE_REFERENCE.update(reference)
    ref_metrics = json.loads((project / "reports/pretrain/char.json").read_text())
    ref_curve = json.loads((project / "reports/pretrain/char_loss.json").read_text())
    assert ref_metrics["global_step"] == MAX_STEPS and last_run(project)["final.resumed"] == 0
    assert "resumed" not in ref_metrics, "how a run went goes to MLflow only: a resumed run must leave dvc.lock unchanged"
    assert [r["step"] for r in ref_curve] == list(range(5, MAX_STEPS + 1, 5))
    assert all(set(r) == {"step", "loss"} for r in ref_curve), "one row shape per plot file (dvc plots drops mixed rows)"
    ref_eval = json.loads((project / "reports/pretrain/char_eval_loss.json").read_text())
    assert ref_eval[0]["step"] == ref_curve[3]["step"] and ref_eval[-1]["step"] == MAX_STEPS and all(set(r) == {"step", "eval_loss"} for r in ref_eval)

    # 2. Start again from nothing and SIGKILL the whole process group once checkpoint-20 is complete.
    wipe_outputs(project)
    cmd = stage_cmd(project)
    killed_log = project / "killed.log"
    with open(killed_log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=project, env=env(project), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (ckpt_dir / "checkpoint-20" / "trainer_state.json").is_file():
            assert proc.poll() is None, f"the run ended before checkpoint-20:\n{killed_log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, "no checkpoint-20 in time"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out_dir / "model.safetensors").exists(), "killed before the end"
    at_kill = sorted(int(p.name.split("-")[1]) for p in ckpt_dir.glob("checkpoint-*"))
    assert 20 in at_kill and max(at_kill) < MAX_STEPS, at_kill

    # 3. Run again: it resumes from the last complete checkpoint and ends with the very same weights.
    log = ok(cmd, project)
    metrics = json.loads((project / "reports/pretrain/char.json").read_text())
    step = int(last_run(project)["final.resumed_from_step"])
    assert last_run(project)["final.resumed"] == 1 and 20 <= step < MAX_STEPS and step in at_kill
    assert metrics == ref_metrics, "the resumed run's DVC metrics are the uninterrupted run's"
    assert f"resuming from checkpoint-{step}" in log
    resumed = load_file(out_dir / "model.safetensors")
    assert resumed.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(resumed[name], tensor), f"{name} differs after resuming (max diff {(resumed[name] - tensor).abs().max()})"
    assert metrics["masked_token_accuracy"] == ref_metrics["masked_token_accuracy"]
    assert metrics["eval_loss"] == pytest.approx(ref_metrics["eval_loss"], abs=1e-6)
    curve = json.loads((project / "reports/pretrain/char_loss.json").read_text())
    assert [r["step"] for r in curve] == [r["step"] for r in ref_curve], "the curve spans both processes' steps"
    for got, want in zip(curve, ref_curve):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert (out_dir / "tokenizer.json").is_file() and (out_dir / "config.json").is_file()
    assert not (out_dir / "training_args.bin").exists()

    # MLflow: the resumed run says so.
    finished = [r for r in mlflow_runs(project) if r.data.tags.get("dvc.stage") == STAGE and r.info.status == "FINISHED"]
    latest = max(finished, key=lambda r: r.info.start_time)
    assert latest.data.metrics["final.resumed"] == 1 and latest.data.metrics["final.resumed_from_step"] == step
    history = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").get_metric_history(latest.info.run_id, "loss")
    assert sorted(m.step for m in history) == [s for s in range(5, MAX_STEPS + 1, 5) if s > step]
    if cmd[0] == "dvc":
        assert run(["dvc", "status", STAGE], project, timeout=120).stdout.strip().endswith("up to date.")


def test_truncated_newest_checkpoint_is_skipped_for_the_previous_one(project):
    """issue 8: weights cut short (a full disk, a kill during a copy) no longer wedge every rerun with SafetensorError."""
    out_dir, ckpt_dir = project / "models/pretrain/char", project / "models/pretrain/char-checkpoints"
    direct = [sys.executable, "-m", "stages.pretrain", "char"]
    if not SINGLE_REFERENCE or not (ckpt_dir / f"checkpoint-{MAX_STEPS}").is_dir():  # run on its own
        ok(direct, project)
        SINGLE_REFERENCE.update(load_file(out_dir / "model.safetensors"))
    weights = ckpt_dir / f"checkpoint-{MAX_STEPS}" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    shutil.rmtree(out_dir)  # the outputs only: the checkpoints stay
    log = ok(direct, project)
    previous = MAX_STEPS - TINY["training"]["save_steps"]
    assert f"resuming from checkpoint-{previous} (signature matches); skipped checkpoint-{MAX_STEPS}: model.safetensors is damaged" in log
    metrics = json.loads((project / "reports/pretrain/char.json").read_text())
    run = last_run(project)
    assert run["final.resumed"] == 1 and run["final.resumed_from_step"] == previous and metrics["global_step"] == MAX_STEPS
    resumed = load_file(out_dir / "model.safetensors")
    for name, tensor in SINGLE_REFERENCE.items():
        assert torch.equal(resumed[name], tensor), f"{name} differs after resuming from the previous checkpoint"


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "stages.pretrain", "char"]
DDP_REFERENCE: dict[str, torch.Tensor] = {}
SINGLE_REFERENCE: dict[str, torch.Tensor] = {}


def test_two_process_ddp_on_gloo_logs_one_mlflow_run(project):
    before = mlflow_runs(project)
    log = ok(TORCHRUN, project)
    # Checkpoints left by single-process runs carry another signature (world size): no resume.
    assert "resuming" not in log and "fresh start" in log
    new = [r for r in mlflow_runs(project) if r.info.run_id not in {b.info.run_id for b in before}]
    assert len(new) == 1, f"expected one MLflow run for the launch, got {[(r.info.run_name, r.data.tags.get('dvc.stage')) for r in new]}"
    (run_,) = new
    assert run_.info.run_name == STAGE and run_.data.tags["dvc.stage"] == STAGE and run_.info.status == "FINISHED"
    assert {"loss", "eval_masked_token_accuracy", "tokens_per_second", "final.capacity_ok", "final.resumed"} <= run_.data.metrics.keys()
    assert run_.data.metrics["final.resumed"] == 0

    metrics = json.loads((project / "reports/pretrain/char.json").read_text())
    assert metrics["global_step"] == MAX_STEPS and 0 <= metrics["masked_token_accuracy"] <= 1
    from transformers import AutoTokenizer, BertForMaskedLM

    out_dir = project / "models/pretrain/char"
    DDP_REFERENCE.update(load_file(out_dir / "model.safetensors"))
    model = BertForMaskedLM.from_pretrained(str(out_dir), use_safetensors=True, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    batch = tokenizer(["今天天气很好"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], len(tokenizer))


def test_killing_torchrun_kills_its_workers_and_ddp_resumes_exactly(project):
    """torchrun starts each worker in a session of its own: the stage makes them die with the launcher."""
    out_dir, ckpt_dir = project / "models/pretrain/char", project / "models/pretrain/char-checkpoints"
    if not DDP_REFERENCE:  # run on its own: make the uninterrupted 2-process reference here
        ok(TORCHRUN, project)
        DDP_REFERENCE.update(load_file(out_dir / "model.safetensors"))
    wipe_outputs(project)
    with open(project / "ddp-killed.log", "w") as fh:
        proc = subprocess.Popen(TORCHRUN, cwd=project, env=env(project), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (ckpt_dir / "checkpoint-20" / "trainer_state.json").is_file():
            assert proc.poll() is None, f"the run ended before checkpoint-20:\n{(project / 'ddp-killed.log').read_text()[-4000:]}"
            assert time.monotonic() < deadline, "no checkpoint-20 in time"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher's group only: the workers are not in it
        proc.wait(timeout=60)
    at_kill = sorted(p.name for p in ckpt_dir.glob("checkpoint-*"))
    time.sleep(5)  # orphaned workers would go on saving checkpoints and write the model
    assert sorted(p.name for p in ckpt_dir.glob("checkpoint-*")) == at_kill, "workers outlived the launcher"
    assert not (out_dir / "model.safetensors").exists()

    log = ok(TORCHRUN, project)
    run = last_run(project)
    assert run["final.resumed"] == 1 and f"checkpoint-{int(run['final.resumed_from_step'])}" in at_kill
    assert f"resuming from checkpoint-{int(run['final.resumed_from_step'])}" in log
    resumed = load_file(out_dir / "model.safetensors")
    for name, tensor in DDP_REFERENCE.items():
        assert torch.equal(resumed[name], tensor), f"{name} differs after resuming under DDP"


def test_config_mistakes_are_one_line_errors(project):
    """Every mistake in the pretrain params is one ``error:`` line and exit 2, before any training."""
    params_path = project / "params.yaml"
    original = params_path.read_text(encoding="utf-8")
    cases = [
        (["char"], lambda p: p["pretrain"]["training"].update(lerning_rate=1e-3), "error: pretrain.training: unknown key 'lerning_rate'; allowed keys: "),
        (["char"], lambda p: p["pretrain"]["training"].update(warmup_ratio=1.5), "error: pretrain.training.warmup_ratio: 1.5 is not allowed"),
        (["char"], lambda p: p["pretrain"]["model"].update(hidden_size=30, num_attention_heads=4), "error: pretrain.model.hidden_size: 30 is not allowed"),
        (["char"], lambda p: p["pretrain"]["backbones"]["char"].update(tokenizer="a;b"), "error: pretrain.backbones.char.tokenizer: name 'a;b' is not allowed"),
        (["nosuch"], lambda p: None, "error: pretrain.backbones: no entry 'nosuch'"),
    ]
    try:
        for argv, mutate, message in cases:
            params = yaml.safe_load(original)
            mutate(params)
            params_path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
            proc = run([sys.executable, "-m", "stages.pretrain", *argv], project, timeout=300)
            last = proc.stdout.strip().splitlines()[-1]
            assert proc.returncode == 2 and last.startswith(message) and "Traceback" not in proc.stdout, proc.stdout[-3000:]
    finally:
        params_path.write_text(original, encoding="utf-8")
