"""The whole CLUE path on the real FewCLUE samples in ../shared/data/clue, with tiny configs:
prep -> tokenizers -> pretraining -> finetuning (two backbones and TF-IDF) -> CAN -> leaderboard."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import make_project, project_env
from shared_data import shared_data_dir

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

TASKS = ("tnews", "iflytek", "ocnli", "csl", "cluewsc")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    shared = shared_data_dir()
    project = make_project(tmp_path_factory.mktemp("clue-real") / "project")
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["clue"]["path"] = str(shared / "clue")
    params["clue"]["tasks"] = {k: v for k, v in params["clue"]["tasks"].items() if k in TASKS}
    params["pretrain"]["training"].update(max_steps=20, save_steps=10, eval_steps=10)
    params["finetune"]["recipes"][params["finetune"]["recipe"]]["num_train_epochs"] = 1
    params["finetune"]["overrides"] = {}
    params["finetune_ape210k"]["num_train_epochs"] = 1
    params["finetune_lccc"]["num_train_epochs"] = 1
    params_path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    proc = subprocess.run(["dvc", "repro", "leaderboard"], cwd=project, env=project_env(project), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return project


def test_predictions_cover_every_labelled_row(project):
    for task in TASKS:
        labels = json.loads((project / f"data/prepared/clue/{task}/labels.json").read_text())
        gold = pq.read_table(project / f"data/prepared/clue/{task}/test_public.parquet")
        for model in ("char", "word", "tfidf"):
            table = pq.read_table(project / f"data/predictions/clue/{task}/{model}/test_public.parquet")
            assert table.column("id").to_pylist() == gold.column("id").to_pylist()
            assert table.column("label_id").to_pylist() == gold.column("label_id").to_pylist()
            probs = table.column("probs").to_pylist()
            assert all(len(p) == len(labels) and abs(sum(p) - 1) < 1e-6 for p in probs)


def test_submission_files_for_the_unlabelled_test_split(project):
    for task in ("tnews", "iflytek"):  # the two tasks whose samples ship test.json
        test_ids = pq.read_table(project / f"data/prepared/clue/{task}/test.parquet").column("id").to_pylist()
        labels = set(json.loads((project / f"data/prepared/clue/{task}/labels.json").read_text()))
        sub_dir = project / f"data/predictions/clue/{task}/tfidf/submission"
        (predict,) = sub_dir.glob("*_predict.json")
        rows = [json.loads(line) for line in predict.read_text().splitlines()]
        assert [str(r["id"]) for r in rows] == test_ids and {r["label"] for r in rows} <= labels
        (archive,) = sub_dir.parent.glob("*.zip")
        assert zipfile.ZipFile(archive).namelist() == [predict.name]


def test_leaderboard_ranks_every_model_with_and_without_can(project):
    board = json.loads((project / "reports/leaderboard.json").read_text())
    text = json.dumps(board)
    for model in ("char", "word", "tfidf"):
        assert model in text and f"{model}+CAN" in text
    markdown = (project / "reports/leaderboard.md").read_text()
    assert all(mean in markdown for mean in ("AM", "GM", "HM"))
    tfidf = json.loads((project / "reports/finetune/tfidf/tnews.json").read_text())
    assert tfidf["test_public"]["accuracy"] > 0.38  # ~0.43 published for this baseline on the samples
    can = json.loads((project / "reports/can/iflytek.json").read_text())
    assert "tfidf" in can
