"""stages.finetune_clue end to end (TF-IDF and a tiny transformer), and zhnlp.tasks.submission's files and zips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from test_classification import build_tiny_backbone, demo_texts, prepare_task, row

from zhnlp.tasks.classification_data import TaskData
from zhnlp.tasks.predictions import PREDICTION_SCHEMA, read_predictions
from demo import write_demo_corpora
from zhnlp.tasks.submission import benchmark_of, json_id, submission_filename, write_task_submission, zip_submissions

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_METRICS = {"dev.accuracy", "dev.macro_f1", "test_public.accuracy", "test_public.macro_f1"}
FINETUNE_PARAMS = {
    "models": ["tiny", "missing"],
    "checkpoints": [],
    "checkpoint_dir": "checkpoints",
    "baselines": ["tfidf"],
    "recipe": "test",
    "checkpoint_recipe": "test",
    "recipes": {"test": {
        "max_seq_len": 32,
        "per_device_train_batch_size": 16,
        "num_train_epochs": 8,
        "learning_rate": 2.0e-2,
        "weight_decay": 0.01,
        "warmup_ratio": 0.0,
        "early_stopping_patience": 3,
        "seed": 7,
    }},
    "overrides": {"cluewsc": {"num_train_epochs": 20}},
    "tfidf": {"ngram_range": [1, 3], "max_features": 20000, "C": 4.0, "max_iter": 2000},
}
# The stage takes its names from params: models/baselines from finetune, tasks from clue.tasks.
PARAMS = {"finetune": FINETUNE_PARAMS, "clue": {"tasks": {t: {} for t in ("tnews", "afqmc", "toy", "nosuchtask")}}}


# ---------------------------------------------------------------------------------------------
# submission files


def test_submission_names_follow_clue_and_fewclue():
    assert benchmark_of(["train", "dev", "test_public", "test"]) == "fewclue" and benchmark_of(["train", "dev", "test"]) == "clue"
    assert submission_filename("cluewsc", "fewclue") == "cluewscf_predict.json"
    assert submission_filename("cluewsc", "clue") == "cluewsc11_predict.json"
    assert submission_filename("ocnli", "clue") == "ocnli_50k_predict.json"
    assert submission_filename("afqmc", "fewclue") == "afqmc_predict.json"  # not a FewCLUE task: the CLUE name
    assert submission_filename("bq_corpus", "clue") == "bq_corpus_predict.json"
    assert json_id("12") == 12 and json_id("007") == "007" and json_id("a1") == "a1" and json_id("3", keep_string=True) == "3"


def test_submission_lines_and_deterministic_zip(tmp_path):
    tnews = write_task_submission(tmp_path / "a", "tnews", "fewclue", ["0", "1"], ["101", "103"])
    wsc = write_task_submission(tmp_path / "a", "cluewsc", "fewclue", ["0", "1"], ["true", "false"])
    assert tnews.read_text(encoding="utf-8").splitlines() == ['{"id": "0", "label": "101"}', '{"id": "1", "label": "103"}']
    assert [json.loads(line) for line in wsc.read_text(encoding="utf-8").splitlines()] == [
        {"id": 0, "label": "true"},
        {"id": 1, "label": "false"},
    ]
    first = zip_submissions([wsc, tnews], tmp_path / "all.zip")
    second = zip_submissions([tnews, wsc], tmp_path / "again.zip")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as zf:
        assert zf.namelist() == ["cluewscf_predict.json", "tnewsf_predict.json"]  # at the archive root
        assert zf.read("tnewsf_predict.json") == tnews.read_bytes()
    with pytest.raises(ValueError, match="share a name"):
        zip_submissions([tnews, tnews], tmp_path / "dup.zip")


# ---------------------------------------------------------------------------------------------
# the stage


def run_stage(project: Path, model: str, task: str) -> subprocess.CompletedProcess:
    env = os.environ | {"DVC_ROOT": str(project), "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    env.pop("DVC_STAGE", None)
    return subprocess.run(
        [sys.executable, "-m", "stages.finetune_clue", model, task], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def write_toy_task(out_dir: Path) -> None:
    """Binary task whose dev labels are the opposite of train: dev accuracy falls as training succeeds."""
    import pyarrow as pa

    from zhnlp.data.clue import CLUE_SCHEMA

    texts = ["好好好好", "坏坏坏坏"]
    splits = {
        "train": [row(texts[i % 2], label_id=i % 2) for i in range(32)],
        "dev": [row(texts[i % 2], label_id=1 - i % 2) for i in range(8)],
        "test_public": [row(texts[i % 2], label_id=i % 2) for i in range(8)],
        "test": [row(texts[i % 2], label_id=None) for i in range(4)],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        rows = [r | {"id": str(i), "label": None if r["label_id"] is None else str(r["label_id"])} for i, r in enumerate(rows)]
        pq.write_table(pa.Table.from_pylist(rows, schema=CLUE_SCHEMA), out_dir / f"{split}.parquet")
    (out_dir / "labels.json").write_text('["0", "1"]', encoding="utf-8")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project root with params.yaml, prepared demo tnews / afqmc, a toy task, a tiny backbone; the stage run on them."""
    proj = tmp_path_factory.mktemp("finetune-project")
    (proj / "params.yaml").write_text(yaml.safe_dump(PARAMS), encoding="utf-8")
    write_demo_corpora(proj / "demo", scale=0.3)
    for task in ("tnews", "afqmc"):
        prepare_task(proj / "demo" / "clue", task, proj / "data" / "prepared" / "clue" / task)
    write_toy_task(proj / "data" / "prepared" / "clue" / "toy")
    build_tiny_backbone(proj / "models" / "pretrain" / "tiny", demo_texts(proj / "demo" / "clue"))
    for model, task in (("tfidf", "tnews"), ("tfidf", "afqmc"), ("tiny", "toy")):
        done = run_stage(proj, model, task)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"@{model}-{task}: dev.accuracy=" in done.stdout
    return proj


def outputs(project: Path, model: str, task: str) -> tuple[Path, dict, dict]:
    pred = project / "data" / "predictions" / "clue" / task / model
    metrics = json.loads((project / "reports" / "finetune" / model / f"{task}.json").read_text(encoding="utf-8"))
    return pred, json.loads((pred / "meta.json").read_text(encoding="utf-8")), metrics


@pytest.mark.slow
def test_tfidf_stage_writes_predictions_meta_submission_and_metrics(project):
    pred, meta, metrics = outputs(project, "tfidf", "tnews")
    data = TaskData.load(project / "data" / "prepared" / "clue" / "tnews")
    assert meta == {"model": "tfidf", "task": "tnews", "kind": "baseline", "task_kind": "classification", "recipe": None, "labels": data.labels, "train_label_counts": data.label_counts()}
    for split in ("dev", "test_public"):
        assert pq.read_schema(pred / f"{split}.parquet").equals(PREDICTION_SCHEMA, check_metadata=False)
        ids, probs = read_predictions(pred / f"{split}.parquet")
        assert ids == [r["id"] for r in data.splits[split]] and probs.shape == (len(ids), 15)
        assert abs(probs.sum(axis=1) - 1).max() < 1e-9
        assert set(metrics[split]) == {"accuracy", "macro_f1", "rows"} and metrics[split]["rows"] == len(ids)
    assert metrics["dev"]["accuracy"] > 0.5  # 6 labels
    lines = (pred / "submission" / "tnewsf_predict.json").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(data.splits["test"])
    assert all(set(json.loads(x)) == {"id", "label"} and json.loads(x)["label"] in data.labels for x in lines)
    with zipfile.ZipFile(pred / "tnews_tfidf_submission.zip") as zf:
        assert zf.namelist() == ["tnewsf_predict.json"]
    assert not (project / "models" / "finetune" / "tfidf").exists()

    pred, _, metrics = outputs(project, "tfidf", "afqmc")  # CLUE layout: no test_public, CLUE file name
    assert sorted(p.name for p in pred.iterdir()) == ["afqmc_tfidf_submission.zip", "dev.parquet", "meta.json", "submission"]
    assert (pred / "submission" / "afqmc_predict.json").is_file() and "test_public" not in metrics


@pytest.mark.slow
def test_transformer_stage_keeps_the_best_epoch_and_saves_the_model(project):
    pred, meta, metrics = outputs(project, "tiny", "toy")
    assert meta["kind"] == "transformer" and meta["train_label_counts"] == [16, 16] and meta["recipe"] == metrics["recipe"] == "test"
    training = metrics["training"]
    # dev labels are flipped: dev accuracy only falls once the model learns, so epoch 1 is the best
    assert training["best_epoch"] == 1 and training["epochs_run"] == 1 + 3 < 8  # early stopping, patience 3
    assert metrics["dev"]["accuracy"] == training["best_dev_accuracy"]  # predictions come from the best epoch
    assert "seconds" not in training, "wall time goes to MLflow only, never a DVC metrics file"
    assert sorted(p.name for p in pred.iterdir()) == ["dev.parquet", "meta.json", "submission", "test_public.parquet", "toy_tiny_submission.zip"]
    saved = project / "models" / "finetune" / "tiny" / "toy"
    assert (saved / "model.safetensors").is_file() and (saved / "config.json").is_file() and (saved / "zhnlp_tokenizer.json").is_file()
    assert not list(saved.glob("checkpoint-*")) and not list(pred.rglob("*.safetensors"))


@pytest.mark.slow
def test_mlflow_gets_the_same_metric_names_for_every_model(project):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("zhnlp")
    runs = {r.data.tags["dvc.stage"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"finetune_baseline@tfidf-tnews", "finetune_baseline@tfidf-afqmc", "finetune_clue@tiny-toy"}
    for stage in ("finetune_baseline@tfidf-tnews", "finetune_clue@tiny-toy"):
        assert SUMMARY_METRICS <= set(runs[stage].data.metrics), stage
    transformer = runs["finetune_clue@tiny-toy"]
    curve = client.get_metric_history(transformer.info.run_id, "epoch.dev.accuracy")
    assert [m.step for m in curve] == [1, 2, 3, 4]
    assert transformer.data.params["model"] == "tiny" and "finetune.recipes.test.learning_rate" in transformer.data.params
    assert transformer.data.params["recipe"] == "test"
    assert transformer.data.metrics["training.seconds"] > 0 and runs["finetune_baseline@tfidf-tnews"].data.metrics["training.seconds"] > 0


def test_stage_fails_cleanly_without_a_backbone_or_data(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS), encoding="utf-8")
    write_toy_task(tmp_path / "data" / "prepared" / "clue" / "toy")
    done = run_stage(tmp_path, "missing", "toy")
    assert done.returncode == 2 and "models/pretrain/missing is not a model directory" in done.stderr
    done = run_stage(tmp_path, "tfidf", "nosuchtask")
    assert done.returncode == 2 and "labels.json not found" in done.stderr
    for section, key, message in (
        ("recipes", {"test": FINETUNE_PARAMS["recipes"]["test"] | {"lerning_rate": 1}}, "error: finetune.recipes.test: unknown key 'lerning_rate'; allowed keys: "),
        ("recipe", "tiny-gpu", "error: finetune.recipe: 'tiny-gpu' is not allowed; use one of test"),
        ("tfidf", FINETUNE_PARAMS["tfidf"] | {"ngrams": 1}, "error: finetune.tfidf: unknown key 'ngrams'; allowed keys: "),
        ("checkpoints", ["tfidf"], "error: finetune.checkpoints and finetune.baselines both name 'tfidf'; model names must be unique"),
    ):
        bad = {"finetune": FINETUNE_PARAMS | {section: key}, "clue": PARAMS["clue"]}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad), encoding="utf-8")
        done = run_stage(tmp_path, "tfidf" if section in ("tfidf", "checkpoints") else "missing", "toy")
        assert done.returncode == 2 and done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    done = run_stage(tmp_path, "notlisted", "toy")
    assert done.returncode == 2 and "no entry 'notlisted'" in done.stderr and done.stderr.count("\n") == 1, done.stderr
