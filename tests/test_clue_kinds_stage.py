"""CMRC2018, C3, CHID and CLUENER through the stage programs, on the demo corpora in a project copy:
prepare_clue, the floors (finetune_baseline), every head from a local checkpoint (finetune_checkpoint),
CAN (not applicable) and the leaderboard. Real MLflow (SQLite per project), real files, tiny models."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import make_project, project_env
from tiny_backbone import build_tiny_backbone

pytestmark = pytest.mark.slow

TASKS = {"cmrc2018": "span_extraction", "c3": "multiple_choice", "chid": "idiom_cloze", "cluener": "ner"}


def stage(project: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", *args], cwd=project, env=project_env(project), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("kinds") / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["clue"]["tasks"] = {k: v for k, v in params["clue"]["tasks"].items() if k in TASKS}
    params["finetune"].update(models=[], checkpoints=["tiny"], checkpoint_recipe="tiny-cpu")
    params["register"]["include"] = ["clue"]  # the generation heads are registered in test_generation_stages.py
    recipe = params["finetune"]["recipes"]["tiny-cpu"]
    recipe.update(num_train_epochs=1, tasks={"chid": {"max_seq_len": 64}}, per_device_train_batch_size=16)
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    stage(project, "stages.demo_data")
    for task in TASKS:
        stage(project, "stages.prepare_clue", task)
    texts = []
    for task in TASKS:
        for row in pq.read_table(project / f"data/prepared/clue/{task}/train.parquet").to_pylist():
            texts += [v for k, v in row.items() if k in ("context", "question", "passage", "text") and v]
    build_tiny_backbone(project / "checkpoints" / "tiny", texts)
    return project


def test_prepare_writes_each_kind_with_its_schema(project):
    for task, kind in TASKS.items():
        out = project / "data/prepared/clue" / task
        assert json.loads((out / "task.json").read_text())["kind"] == kind
        train = pq.read_table(out / "train.parquet")
        assert train.num_rows > 100, task
        report = json.loads((project / f"reports/prepare_clue/{task}.json").read_text())
        assert report["train"]["rows"] == train.num_rows and report["bad_rows"] == 0
    cmrc = pq.read_table(project / "data/prepared/clue/cmrc2018/dev.parquet").to_pylist()
    assert all(r["context"][s : s + len(a)] == a for r in cmrc for a, s in zip(r["answers"], r["answer_starts"]))
    assert any(len(r["answers"]) > 1 for r in cmrc)  # dev keeps every gold answer
    chid = pq.read_table(project / "data/prepared/clue/chid/train.parquet").to_pylist()
    assert all(r["text"].count("#idiom#") == 1 for r in chid) and len({r["group"] for r in chid}) < len(chid)  # CLUE layout: shared passages
    c3 = pq.read_table(project / "data/prepared/clue/c3/test_public.parquet").to_pylist()
    assert all(r["label_id"] is not None for r in c3)  # C3's public test is labelled


def test_floors_score_predict_and_write_official_submissions(project):
    for task, kind in TASKS.items():
        stage(project, "stages.finetune_clue", "tfidf", task)
        report = json.loads((project / f"reports/finetune/tfidf/{task}.json").read_text())
        assert report["kind"] == kind and 0 <= report["dev"]["score"] <= 1
        assert report["dev"]["score"] == report["dev"][{"span_extraction": "em", "ner": "f1"}.get(kind, "accuracy")]
        lines = (project / f"data/predictions/clue/{task}/tfidf/dev.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == report["dev"]["rows"] and set(json.loads(lines[0])) == {"id", "prediction", "gold"}
    pred = project / "data/predictions/clue"
    answers = json.loads((pred / "cmrc2018/tfidf/submission/cmrc2018_predict.json").read_text(encoding="utf-8"))
    test_ids = pq.read_table(project / "data/prepared/clue/cmrc2018/test.parquet").column("id").to_pylist()
    assert sorted(answers) == sorted(test_ids) and all(isinstance(a, str) for a in answers.values())
    chid = [json.loads(line) for line in (pred / "chid/tfidf/submission/chid11_predict.json").read_text().splitlines()]
    assert chid and all(set(r) == {"id", "label"} and isinstance(r["label"], int) for r in chid)
    ner = [json.loads(line) for line in (pred / "cluener/tfidf/submission/cluener_predict.json").read_text(encoding="utf-8").splitlines()]
    assert all(isinstance(r["label"], dict) for r in ner)
    text = {str(r["id"]): r["text"] for r in pq.read_table(project / "data/prepared/clue/cluener/test.parquet").to_pylist()}
    for r in ner:  # entity offsets in the submission are inclusive and point at the entity
        for entities in r["label"].values():
            for entity, spans in entities.items():
                assert all(text[str(r["id"])][s : e + 1] == entity for s, e in spans)
    with zipfile.ZipFile(pred / "cluener/tfidf/cluener_tfidf_submission.zip") as zf:
        assert zf.namelist() == ["cluener_predict.json"]


def test_every_head_trains_from_a_checkpoint_and_can_says_it_does_not_apply(project):
    for task, kind in TASKS.items():
        done = stage(project, "stages.finetune_clue", "tiny", task)
        assert f"finetune_checkpoint@tiny-{task}: dev." in done.stdout
        report = json.loads((project / f"reports/finetune/tiny/{task}.json").read_text())
        assert report["kind"] == kind and report["training"]["epochs_run"] == 1 and report["recipe"] == "tiny-cpu"
        assert (project / f"models/finetune/tiny/{task}/model.safetensors").is_file()
        meta = json.loads((project / f"data/predictions/clue/{task}/tiny/meta.json").read_text())
        assert meta["task_kind"] == kind and meta["kind"] == "transformer"
    stage(project, "stages.can", "chid")
    can = json.loads((project / "reports/can/chid.json").read_text())
    assert can["applicable"] is False and "classification" in can["reason"]
    assert json.loads((project / "reports/can/chid_reliability.json").read_text()) == []


def test_leaderboard_names_each_task_metric_and_repeats_scores_for_can_rows(project):
    for task in TASKS:
        if not (project / f"reports/finetune/tiny/{task}.json").is_file():
            pytest.skip("needs the heads trained by the previous test")
        stage(project, "stages.can", task)
    stage(project, "stages.leaderboard")
    board = json.loads((project / "reports/leaderboard.json").read_text())
    assert board["metrics"] == ["score"]  # no classification task: no macro-F1 table
    assert board["task_metrics"] == {"cmrc2018": "EM", "c3": "Acc", "chid": "Acc", "cluener": "F1"}
    for model in ("tiny", "tfidf"):
        assert board["models"][model + "+CAN"]["scores"] == board["models"][model]["scores"]
        report = json.loads((project / f"reports/finetune/{model}/cluener.json").read_text())
        assert board["models"][model]["scores"]["cluener"]["score"] == pytest.approx(report["dev"]["f1"])
    markdown = (project / "reports/leaderboard.md").read_text(encoding="utf-8")
    assert "cmrc2018 (EM)" in markdown and "cluener (F1)" in markdown
    assert any("CAN applies to classification only" in n for n in board["notes"])


def test_register_serves_every_kind_as_its_head_predicts(project, tmp_path):
    """Each head, registered by the register stage, answers a prepared split through models:/<task>@champion as
    the finetuned head does directly; C3's list column also through `mlflow models predict`."""
    import mlflow
    import pandas as pd

    from zhnlp.tasks.serving import SERVED, example_rows, load_predictor, rows_from_records
    from zhnlp.tasks.serving import predict as serve

    for task in TASKS:
        if not (project / f"models/finetune/tiny/{task}/model.safetensors").is_file():
            pytest.skip("needs the heads trained by test_every_head_trains_from_a_checkpoint...")
    stage(project, "stages.register")
    registry = json.loads((project / "reports/registry.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    for task, kind in TASKS.items():
        entry = registry["tasks"][task]
        assert entry["kind"] == kind and entry["registered_model"] == f"zhnlp-{task}" and entry["champion"] == "tiny"
        version = client.get_model_version_by_alias(f"zhnlp-{task}", "champion")
        assert version.tags["zhnlp.kind"] == kind and version.tags["dvc.stage"] == f"finetune_checkpoint@tiny-{task}"
        request = example_rows(project / "data/prepared/clue" / task, kind, 6)
        model = mlflow.pyfunc.load_model(f"models:/zhnlp-{task}@champion")
        inputs = [c.name for c in model.metadata.signature.inputs.inputs]
        assert set(inputs) == set(request[0]) and [c.name for c in model.metadata.signature.outputs.inputs] == [c.name for c in SERVED[kind].outputs]
        served = model.predict(pd.DataFrame(request))
        max_seq_len = 64 if task == "chid" else 128  # the recipe's per-task setting, as the finetune stage used it
        direct = serve(load_predictor(project / f"models/finetune/tiny/{task}", kind, max_seq_len), kind, rows_from_records(kind, request))
        got = {c: [v.tolist() if hasattr(v, "tolist") else v for v in served[c]] for c in served.columns}
        assert got == direct, task
        if kind == "span_extraction":
            assert all(a == "" or a in r["context"] for a, r in zip(got["answer"], request))
        if kind in ("multiple_choice", "idiom_cloze"):
            options = "choices" if kind == "multiple_choice" else "candidates"
            assert got["answer"] == [r[options][c] for r, c in zip(request, got["choice"])]
    request_file = tmp_path / "c3.json"
    records = example_rows(project / "data/prepared/clue/c3", "multiple_choice", 4)
    request_file.write_text(json.dumps({"dataframe_records": records}, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m", "models:/zhnlp-c3@champion", "-i", str(request_file),
                           "-t", "json", "-o", str(out), "--env-manager", "local"], cwd=project, env=project_env(project), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = json.loads(out.read_text(encoding="utf-8"))["predictions"]
    assert [p["answer"] for p in predictions] == [r["choices"][p["choice"]] for r, p in zip(records, predictions)]
