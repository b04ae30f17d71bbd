"""The worker side of flow.executor: pools, the parts that need no services (flows/remote_stage.py)."""

from __future__ import annotations

import subprocess

import pytest

from flows.remote_stage import check_checkout, launcher


def test_a_multi_gpu_worker_launches_torchrun_stages_over_all_its_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert launcher("python -m stages.pretrain char", "pretrain@char", ["pretrain"]) == (
        "torchrun --standalone --nproc_per_node=4 -m stages.pretrain char"
    )
    assert launcher("python -m stages.finetune_clue char-tnews", "finetune_clue@char-tnews", ["pretrain"]) == (
        "python -m stages.finetune_clue char-tnews"
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert launcher("python -m stages.pretrain char", "pretrain@char", ["pretrain"]) == "python -m stages.pretrain char"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert launcher("python -m stages.pretrain char", "pretrain@char", ["pretrain"]) == "python -m stages.pretrain char"


def test_a_worker_runs_only_the_heads_commit_without_local_edits(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@zhnlp.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=tmp_path, check=True)
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    check_checkout(tmp_path, first)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # the head's lock, written by the flow
    check_checkout(tmp_path, first)
    (tmp_path / "dvc.yaml").write_text("stages: {x: {cmd: echo}}\n")
    with pytest.raises(RuntimeError, match=r"local edits to tracked files \(dvc.yaml\)"):
        check_checkout(tmp_path, first)
    subprocess.run([*git, "commit", "-qam", "two"], cwd=tmp_path, check=True)
    with pytest.raises(RuntimeError, match=rf"the head at {first[:12]}: run `git fetch && git checkout {first}`"):
        check_checkout(tmp_path, first)
