"""Data stages rerun on the same inputs leave dvc.lock unchanged: no timings in DVC metrics.

Timings (tokenizer training seconds, encode seconds and tokens per second) go to MLflow only,
so ``dvc repro --force`` of a data stage rewrites exactly the lock entry it had, and
``dvc metrics diff`` shows no noise.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from conftest import make_project, project_env

STAGES = ("demo_data", "prepare_lccc", "tokenizer@char", "encode@char")
METRICS = ("reports/demo_data.json", "reports/prepare_lccc/metrics.json", "reports/tokenizer/char.json", "reports/encode/char.json")


def lock_entries(project) -> dict:
    return yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))["stages"]


def keys(obj, prefix="") -> set[str]:
    if not isinstance(obj, dict):
        return {prefix}
    return set().union(*(keys(v, f"{prefix}.{k}" if prefix else k) for k, v in obj.items())) if obj else {prefix}


@pytest.mark.slow
def test_forced_rerun_of_data_stages_keeps_their_lock_entries(tmp_path):
    import mlflow

    project = make_project(tmp_path / "project")
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    params["clue"]["tasks"] = {"tnews": params["clue"]["tasks"]["tnews"]}  # one CLUE task keeps the test short
    params_path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    env = project_env(project)

    first = subprocess.run(["dvc", "repro", "encode@char"], cwd=project, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = {s: lock_entries(project)[s] for s in STAGES}
    metrics_before = {m: (project / m).read_bytes() for m in METRICS}

    again = subprocess.run(["dvc", "repro", "--force", "--single-item", *STAGES], cwd=project, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for stage in STAGES:
        assert f"Running stage '{stage}'" in again.stdout
    after = lock_entries(project)
    for stage in STAGES:
        assert after[stage] == before[stage], f"{stage}: dvc.lock entry changed on a rerun with the same inputs"
    for path, content in metrics_before.items():
        assert (project / path).read_bytes() == content, path
    status = subprocess.run(["dvc", "status", *STAGES], cwd=project, env=env, capture_output=True, text=True)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr

    # the timings exist, in MLflow only
    for path in METRICS[2:]:
        names = keys(json.loads((project / path).read_text(encoding="utf-8")))
        assert not any("second" in n for n in names), f"{path} holds a timing: {sorted(n for n in names if 'second' in n)}"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("zhnlp")
    for stage, timing in (("tokenizer@char", "train_seconds"), ("encode@char", "tokens_per_second")):
        runs = client.search_runs([experiment.experiment_id], f"tags.`dvc.stage` = '{stage}'")
        assert len(runs) == 2 and all(r.info.status == "FINISHED" and r.data.metrics[timing] > 0 for r in runs), stage
