"""The register stage: finetuned classifiers as MLflow models (pyfunc from code), one registered model per task,
alias ``champion`` on the best dev score of the configured recipe; zhnlp.tasks.registry's choices and
zhnlp.tasks.serving's request rows. The other task kinds are served in test_clue_kinds_stage.py, where their
heads are trained."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from test_classification import demo_texts, prepare_task
from tiny_backbone import build_tiny_backbone

from demo import write_demo_corpora
from zhnlp.config import ConfigError, from_params
from zhnlp.data.clue import CLUE_SCHEMA
from zhnlp.errors import UserError
from zhnlp.tasks.registry import (
    NOT_RUN_BY_DVC,
    RegisterConfig,
    RegistryError,
    champion,
    find_candidates,
    generative_candidates,
    registry_report,
    same_version,
)
from zhnlp.tasks.serving import example_rows, rows_from_records

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"max_seq_len": 32, "per_device_train_batch_size": 16, "num_train_epochs": 12, "learning_rate": 1.0e-2,
          "weight_decay": 0.0, "warmup_ratio": 0.0, "early_stopping_patience": None, "seed": 7}
PARAMS = {
    # "blind" sees every character as [UNK]: it can only learn the majority label, so "tiny" beats it. It comes
    # first, so a champion picked by list order alone would be wrong.
    "finetune": {"models": ["blind", "tiny"], "checkpoints": [], "checkpoint_dir": "checkpoints", "baselines": [],
                 "recipe": "test", "checkpoint_recipe": "test", "recipes": {"test": RECIPE}, "overrides": {}, "tfidf": {}},
    "clue": {"tasks": {"tnews": {}}},
    "register": {"enabled": True, "name_prefix": "zhnlp-", "include": ["clue"]},  # Ape210K and LCCC: test_generation_stages.py
    "finetune_ape210k": {"beams": [1, 3]},
}


# ---------------------------------------------------------------------------------------------
# zhnlp.tasks.registry (no MLflow)


def fake_model(root: Path, model: str, task: str, dev: dict, recipe: str | None, kind: str | None = None) -> None:
    """A report and a model folder shaped as the finetune stage leaves them (weights not read here)."""
    report = {"dev": dev, "recipe": recipe, "training": {}} | ({"kind": kind} if kind else {})
    path = root / "reports" / "finetune" / model / f"{task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report), encoding="utf-8")
    folder = root / "models" / "finetune" / model / task
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"id2label": {"1": "b", "0": "a"}}', encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"")


def registry_params(**changes) -> dict:
    base = {"finetune.models": ["a", "b"], "finetune.checkpoints": ["c"], "finetune.recipe": "r1",
            "finetune.checkpoint_recipe": "r2", "clue.tasks": {"tnews": {}, "cluener": {}}}
    return base | changes


def test_champion_is_the_best_dev_score_under_the_configured_recipe(tmp_path):
    fake_model(tmp_path, "a", "tnews", {"accuracy": 0.60}, "r1")
    fake_model(tmp_path, "b", "tnews", {"accuracy": 0.90}, "r0")  # best score, another recipe: not eligible
    fake_model(tmp_path, "c", "tnews", {"accuracy": 0.65}, "r2")  # a checkpoint: its own recipe key
    for model, f1 in (("a", 0.4), ("b", 0.4), ("c", 0.3)):
        fake_model(tmp_path, model, "cluener", {"f1": f1, "accuracy": 0.99}, "r1" if model != "c" else "r2", kind="ner")
    cands = find_candidates(tmp_path, registry_params())
    assert [(c.model, c.task, c.stage) for c in cands][:3] == [("a", "tnews", "finetune_clue@a-tnews"), ("a", "cluener", "finetune_clue@a-cluener"),
                                                               ("b", "tnews", "finetune_clue@b-tnews")]
    assert champion([c for c in cands if c.task == "tnews"]).model == "c"
    ner = [c for c in cands if c.task == "cluener"]
    assert [c.dev for c in ner] == [0.4, 0.4, 0.3] and champion(ner).model == "a"  # kind's metric (F1); tie: params order
    report = registry_report("zhnlp-", cands)
    assert report["tasks"]["tnews"] | {"models": None} == {"kind": "classification", "metric": "accuracy", "registered_model": "zhnlp-tnews",
                                                           "champion": "c", "champion_dev": 0.65, "models": None}
    assert report["tasks"]["tnews"]["models"]["b"] == {"dev": 0.9, "recipe": "r0", "eligible": False}
    assert report["tasks"]["cluener"] | {"models": None} == {"kind": "ner", "metric": "f1", "registered_model": "zhnlp-cluener",
                                                             "champion": "a", "champion_dev": 0.4, "models": None}
    assert champion(find_candidates(tmp_path, registry_params(**{"finetune.recipe": "x", "finetune.checkpoint_recipe": "x"}))) is None


def test_missing_or_broken_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(RegistryError, match=r"^reports/finetune/a/tnews.json not found; run the stage finetune_clue@a-tnews first$"):
        find_candidates(tmp_path, registry_params(**{"finetune.checkpoints": None, "clue.tasks": {"tnews": {}}}))
    fake_model(tmp_path, "a", "tnews", {"macro_f1": 0.5}, "r1")
    with pytest.raises(RegistryError, match=r"a/tnews.json: no number at dev.accuracy; rerun finetune_clue@a-tnews"):
        find_candidates(tmp_path, registry_params(**{"finetune.models": ["a"], "finetune.checkpoints": [], "clue.tasks": ["tnews"]}))
    fake_model(tmp_path, "a", "tnews", {"accuracy": 0.5}, "r1")
    (tmp_path / "models" / "finetune" / "a" / "tnews" / "model.safetensors").unlink()
    with pytest.raises(RegistryError, match="models/finetune/a/tnews has no config.json and safetensors weights"):
        find_candidates(tmp_path, registry_params(**{"finetune.models": ["a"], "finetune.checkpoints": [], "clue.tasks": ["tnews"]}))
    with pytest.raises(RegistryError, match=r"^reports/finetune_ape210k/metrics.json not found; run the stage finetune_ape210k first$"):
        generative_candidates(tmp_path, {"finetune_ape210k.beams": [1, 3]})
    (tmp_path / "reports" / "finetune_ape210k").mkdir(parents=True)
    (tmp_path / "reports" / "finetune_ape210k" / "metrics.json").write_text('{"trained": {"valid": {"accuracy_beam1": 0.5}}}')
    with pytest.raises(RegistryError, match=r"metrics.json: no number at trained.valid.accuracy_beam3; rerun finetune_ape210k$"):
        generative_candidates(tmp_path, {"finetune_ape210k.beams": [1, 3]})  # served with the largest beam, scored by it
    with pytest.raises(ConfigError, match=r"^register.name_prefix: 'zh nlp/' is not allowed"):
        from_params(RegisterConfig, {"name_prefix": "zh nlp/"}, "register")
    with pytest.raises(ConfigError, match=r"^register.include\[1\]: 'tnews' is not allowed; use clue, ape210k, lccc$"):
        from_params(RegisterConfig, {"include": ["clue", "tnews"]}, "register")
    with pytest.raises(ConfigError, match="register: unknown key 'enable'"):
        from_params(RegisterConfig, {"enable": False}, "register")


def test_same_version_needs_the_same_model_deps_and_serving_code():
    tags = {"zhnlp.model": "char", "dvc.deps_hash": "h1", "zhnlp.serving_code": "s1"}
    assert same_version(tags, "run-old", tags, "run-new")  # same deps hash: same model, whichever run
    assert not same_version(tags, "run-old", tags | {"dvc.deps_hash": "h2"}, "run-new")
    assert not same_version(tags, "run-old", tags | {"zhnlp.serving_code": "s2"}, "run-new")
    assert not same_version(tags, "run-old", tags | {"zhnlp.model": "word"}, "run-new")
    by_hand = tags | {"dvc.deps_hash": NOT_RUN_BY_DVC}
    assert same_version(by_hand, "run-1", by_hand, "run-1") and not same_version(by_hand, "run-1", by_hand, "run-2")


def test_input_example_and_request_rows(tmp_path):
    rows = [{"id": str(i), "text_a": f"句子{i}", "text_b": None, "label": None, "label_id": None, "span1_text": None,
             "span1_index": None, "span2_text": None, "span2_index": None} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(rows, schema=CLUE_SCHEMA), tmp_path / "test.parquet")
    assert example_rows(tmp_path, "classification", 2) == [{"text_a": "句子0"}, {"text_a": "句子1"}]  # unused columns dropped
    got = rows_from_records("classification", [{"text_a": "甲", "text_b": math.nan, "span1_index": 3.0}])
    assert got == [{"text_a": "甲", "text_b": None, "span1_text": None, "span1_index": 3, "span2_text": None, "span2_index": None}]
    with pytest.raises(UserError, match="input row 0: text_a is missing"):
        rows_from_records("classification", [{"text_b": "乙"}])
    with pytest.raises(UserError, match="no rows in any of test.parquet"):
        example_rows(tmp_path / "nothing", "classification")
    choices = rows_from_records("multiple_choice", [{"passage": "文", "question": "问", "choices": np.array(["甲", "乙"], dtype=object)}])
    assert choices == [{"passage": "文", "question": "问", "choices": ["甲", "乙"]}]
    with pytest.raises(UserError, match="input row 1: choices must be a list of strings, not str"):
        rows_from_records("multiple_choice", [choices[0], {"passage": "文", "question": "问", "choices": "甲乙"}])
    with pytest.raises(UserError, match="input row 0: candidates is missing"):
        rows_from_records("idiom_cloze", [{"text": "#idiom#", "candidates": []}])
    with pytest.raises(UserError, match="task kind 'sts' has no served form; known: classification, span_extraction"):
        rows_from_records("sts", [])


# ---------------------------------------------------------------------------------------------
# the stage, end to end


def run_module(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"DVC_ROOT": str(project), "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    env.pop("DVC_STAGE", None)
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def finetune_runs(client) -> dict:
    exp = client.get_experiment_by_name("zhnlp")
    return {r.data.tags["dvc.stage"]: r for r in client.search_runs([exp.experiment_id], "tags.`zhnlp.stage_kind` = 'finetune_clue'")}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A project with prepared demo TNEWS, two tiny backbones finetuned on it, then the register stage run twice."""
    import mlflow

    proj = tmp_path_factory.mktemp("register-project")
    (proj / "params.yaml").write_text(yaml.safe_dump(PARAMS), encoding="utf-8")
    write_demo_corpora(proj / "demo", scale=1.0)  # 240 train rows: dev accuracy ~0.8 after 12 epochs
    prepare_task(proj / "demo" / "clue", "tnews", proj / "data" / "prepared" / "clue" / "tnews")
    build_tiny_backbone(proj / "models" / "pretrain" / "tiny", demo_texts(proj / "demo" / "clue"), char_vocab=True)
    build_tiny_backbone(proj / "models" / "pretrain" / "blind", ["a"], char_vocab=True)
    for model in PARAMS["finetune"]["models"]:
        done = run_module(proj, "stages.finetune_clue", model, "tnews")
        assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{proj / 'mlflow.db'}")
    before = {stage: (r.info.status, r.info.end_time, r.data.metrics) for stage, r in finetune_runs(client).items()}
    outputs = []
    for _ in range(2):
        done = run_module(proj, "stages.register")
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append((done.stdout, (proj / "reports" / "registry.json").read_bytes()))
    return {"root": proj, "client": client, "before": before, "outputs": outputs}


def dev_accuracy(root: Path, model: str) -> float:
    return json.loads((root / "reports" / "finetune" / model / "tnews.json").read_text(encoding="utf-8"))["dev"]["accuracy"]


def prepared_test_rows(root: Path, n: int = 12) -> list[dict]:
    return example_rows(root / "data" / "prepared" / "clue" / "tnews", "classification", n)


@pytest.mark.slow
def test_champion_alias_resolves_to_the_better_model_and_links_its_run(project):
    from mlflow.entities import LoggedModelStatus

    root, client = project["root"], project["client"]
    assert dev_accuracy(root, "tiny") > dev_accuracy(root, "blind")
    version = client.get_model_version_by_alias("zhnlp-tnews", "champion")
    registered = client.get_registered_model("zhnlp-tnews")
    assert registered.tags == {"zhnlp.task": "tnews", "zhnlp.kind": "classification"} and registered.description.startswith("Finetuned tnews models")
    run = finetune_runs(client)["finetune_clue@tiny-tnews"]
    assert version.run_id == run.info.run_id
    assert version.tags == {"dvc.stage": "finetune_clue@tiny-tnews", "dvc.deps_hash": run.data.tags["dvc.deps_hash"], "zhnlp.model": "tiny",
                            "zhnlp.task": "tnews", "zhnlp.kind": "classification", "zhnlp.recipe": "test", "zhnlp.serving_code": version.tags["zhnlp.serving_code"]}
    assert version.source.startswith("models:/m-")
    assert version.description.startswith("dev accuracy ") and "recipe test" in version.description
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == run.info.run_id and logged.status == LoggedModelStatus.READY
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "zhnlp-tnews", "version": version.version}]
    # the finetune runs keep their status, times and metrics; they gain the model as an output
    after = {stage: (r.info.status, r.info.end_time, r.data.metrics) for stage, r in finetune_runs(client).items()}
    assert after == project["before"] and all(status == "FINISHED" for status, _, _ in after.values())
    assert [o.model_id for o in client.get_run(run.info.run_id).outputs.model_outputs] == [logged.model_id]
    registry = json.loads(project["outputs"][0][1])
    assert registry["tasks"]["tnews"]["champion"] == "tiny" and registry["tasks"]["tnews"]["champion_dev"] == dev_accuracy(root, "tiny")
    assert "@champion = tiny (dev.accuracy=" in project["outputs"][0][0]


@pytest.mark.slow
def test_rerun_registers_nothing_new_and_writes_the_same_report(project):
    client = project["client"]
    versions = client.search_model_versions("name = 'zhnlp-tnews'")
    assert sorted(v.tags["zhnlp.model"] for v in versions) == ["blind", "tiny"]
    (first_out, first_json), (second_out, second_json) = project["outputs"]
    assert first_json == second_json
    assert first_out.count("(new)") == 2 and "(new)" not in second_out
    assert not [v for v in versions if v.run_id.encode() in first_json or f'"{v.version}"'.encode() in first_json]  # ids stay in MLflow


@pytest.mark.slow
def test_champion_model_is_safetensors_code_and_signature_only(project, tmp_path):
    import mlflow
    from mlflow.models import Model

    mlflow.set_tracking_uri(f"sqlite:///{project['root'] / 'mlflow.db'}")
    local = Path(mlflow.artifacts.download_artifacts("models:/zhnlp-tnews@champion", dst_path=str(tmp_path / "m")))
    files = [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
    assert [f for f in files if f.endswith("model.safetensors")] == ["artifacts/tnews/model.safetensors"]
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".bin", ".pt", ".pth", ".joblib"))], files
    assert "registry_model.py" in files and "code/zhnlp/tasks/classification.py" in files  # the model code, the library
    meta = Model.load(str(local))
    flavor = meta.flavors["python_function"]
    assert flavor["model_code_path"].endswith("registry_model.py") and "python_model" not in flavor  # nothing cloudpickled
    assert [c.name for c in meta.signature.inputs.inputs] == ["text_a"] and [c.name for c in meta.signature.outputs.inputs] == ["label", "score"]
    assert meta.load_input_example(str(local)).columns.tolist() == ["text_a"]
    assert any(r.startswith("torch==") for r in (local / "requirements.txt").read_text().split())


@pytest.mark.slow
def test_champion_predicts_offline_as_the_finetuned_model_does(project, tmp_path):
    import mlflow
    import pandas as pd

    from zhnlp.tasks.classification import TransformerClassifier

    root = project["root"]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    rows = prepared_test_rows(root)
    served = mlflow.pyfunc.load_model("models:/zhnlp-tnews@champion").predict(pd.DataFrame(rows))
    labels = json.loads((root / "data" / "prepared" / "clue" / "tnews" / "labels.json").read_text(encoding="utf-8"))
    assert len(served) == len(rows) and set(served["label"]) <= set(labels) and served["score"].between(0, 1).all()
    direct = TransformerClassifier.from_pretrained(root / "models" / "finetune" / "tiny" / "tnews", labels, max_seq_len=RECIPE["max_seq_len"])
    probs = direct.predict_proba(rows_from_records("classification", rows))
    assert served["label"].tolist() == [labels[i] for i in probs.argmax(axis=1)]  # encoded as in training

    request = tmp_path / "request.json"
    request.write_text(json.dumps({"dataframe_records": rows}, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out.json"
    done = run_module(root, "mlflow", "models", "predict", "-m", "models:/zhnlp-tnews@champion", "-i", str(request), "-t", "json",
                      "-o", str(out), "--env-manager", "local")
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = json.loads(out.read_text(encoding="utf-8"))["predictions"]
    assert [p["label"] for p in predictions] == served["label"].tolist()
