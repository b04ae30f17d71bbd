"""Outputs of stages that left dvc.yaml (a task removed from params) are found and removed; nothing else is."""

from __future__ import annotations

import subprocess
import sys

import yaml
from conftest import make_project, project_env

from flows.orphans import find_orphans, remove_orphans


def touch(path, text="{}"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_removed_task_leaves_no_reports_behind(tmp_path):
    project = make_project(tmp_path / "project")
    current = touch(project / "reports/finetune/char/tnews.json")
    touch(project / "data/predictions/clue/tnews/char/dev.parquet", "x")
    leftover = touch(project / "reports/finetune/char/afqmc.json")
    checkpoints = touch(project / "models/pretrain/char-checkpoints/checkpoint-20/model.safetensors", "x")
    own_file = touch(project / "reports/notes.md", "mine")
    own_data = touch(project / "data/raw/corpus.jsonl", "mine")
    assert find_orphans(project) == [], "every task is still in params: nothing is an orphan"

    params = yaml.safe_load((project / "params.yaml").read_text())
    del params["clue"]["tasks"]["afqmc"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    gone_pred = touch(project / "data/predictions/clue/afqmc/char/dev.parquet", "x")
    orphans = find_orphans(project)
    rel = sorted(p.relative_to(project).as_posix() for p in orphans)
    assert {"reports/finetune/char/afqmc.json", "reports/can/afqmc.json", "reports/prepare_clue/afqmc.json", "data/predictions/clue/afqmc/char"} <= set(rel)
    assert all("afqmc" in r for r in rel), rel

    out = subprocess.run([sys.executable, "-m", "flows.orphans"], cwd=project, env=project_env(project), capture_output=True, text=True)
    assert out.returncode == 0 and "orphan: reports/finetune/char/afqmc.json" in out.stdout and leftover.exists()

    removed = remove_orphans(project)
    assert sorted(p.relative_to(project).as_posix() for p in removed) == rel
    assert not leftover.exists() and not gone_pred.exists() and not (project / "data/predictions/clue/afqmc").exists()
    for kept in (current, checkpoints, own_file, own_data):
        assert kept.exists(), f"{kept} is not an orphan"
    assert find_orphans(project) == []
