"""The generation heads end to end: the two finetune stages and `chat` on a project copy, learning, real data."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import make_project, project_env
from shared_data import shared_data_dir

from zhnlp.tasks import dialogue, seq2seq
from zhnlp.data.ape210k import APE_SCHEMA, iter_problems
from demo import write_demo_corpora
from zhnlp.tasks.generation import save_random_backbone
from zhnlp.data.lccc import LCCC_SCHEMA, DialogueCleaner, iter_dialogues
from zhnlp.data.rows import RowPolicy

SPLITS = ("train", "valid", "test")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def demo_rows(root: Path, scale: float) -> tuple[dict, dict]:
    """Demo Ape210K problems and LCCC dialogues per split, as the prepare stages write them."""
    write_demo_corpora(root, seed=0, scale=scale)
    with RowPolicy("skip") as policy:
        ape = {s: list(iter_problems(root / "ape210k" / f"{s}.ape.json", policy)) for s in SPLITS}
        cleaner = DialogueCleaner()
        lccc = {s: list(iter_dialogues(root / "lccc" / "dialogues.json", policy, cleaner, key=s)) for s in SPLITS}
    return ape, lccc


def run(project: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = project_env(project, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", *args], cwd=project, env=env, input=stdin, capture_output=True, text=True, timeout=900)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# ------------------------------------------------------------------ stages on a project copy


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project copy with tiny prepared data, a tiny random backbone and short-training params."""
    root = tmp_path_factory.mktemp("generation")
    project = make_project(root / "project")
    ape, lccc = demo_rows(root / "demo", scale=0.3)
    for name, rows, schema in (("ape210k", ape, APE_SCHEMA), ("lccc", lccc, LCCC_SCHEMA)):
        for split in SPLITS:
            path = project / "data" / "prepared" / name / f"{split}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows[split], schema=schema), path)
    texts = [r["question"] + r["equation"] for r in ape["train"]] + ["".join(d["turns"]) for d in lccc["train"]]
    backbone = save_random_backbone(root / "backbone", texts, hidden_size=32, max_position_embeddings=128)
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    short = {"backbone": str(backbone), "max_steps": 12, "save_steps": 6, "logging_steps": 3, "per_device_train_batch_size": 16}
    params["finetune_ape210k"].update(short, max_source_len=64, max_target_len=16)
    params["finetune_lccc"].update(short, max_seq_len=64)
    params["finetune_lccc"]["sampling"].update(max_new_tokens=8, samples=3)
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return project


@pytest.fixture(scope="module")
def ape_stage(project):
    return ok(run(project, "stages.finetune_ape210k"))


@pytest.fixture(scope="module")
def lccc_stage(project):
    return ok(run(project, "stages.finetune_lccc"))


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.mark.slow
def test_finetune_ape210k_stage_outputs(project, ape_stage):
    metrics = json.loads((project / "reports/finetune_ape210k/metrics.json").read_text(encoding="utf-8"))
    assert metrics["train"]["steps"] == 12 and "resumed" not in metrics["train"]  # MLflow only (timing.train.resumed)
    for model in ("trained", "untrained"):
        for split in ("valid", "test"):
            m = metrics[model][split]
            for k in (1, 3):
                assert 0 <= m[f"accuracy_beam{k}"] <= 1 and 0 <= m[f"invalid_rate_beam{k}"] <= 1
                assert f"problems_per_second_beam{k}" not in m  # timings: MLflow only (below)
            assert finite(m["loss"])
    assert not {"seconds", "tokens_per_second", "train_loss"} & set(metrics["train"]), "no wall-clock figure in a DVC metrics file"
    assert metrics["trained"]["valid"]["loss"] < metrics["untrained"]["valid"]["loss"]
    for split in ("valid", "test"):
        table = pq.read_table(project / f"data/predictions/ape210k/{split}.parquet")
        assert table.column_names == ["id", "question", "gold_equation", "answer", "pred_beam1", "pred_beam3", "correct_beam1", "correct_beam3"]
        prepared = pq.read_table(project / f"data/prepared/ape210k/{split}.parquet")
        assert table.num_rows == prepared.num_rows and table["gold_equation"].to_pylist() == prepared["equation"].to_pylist()
        assert sum(table["correct_beam1"].to_pylist()) / table.num_rows == pytest.approx(metrics["trained"][split]["accuracy_beam1"])
    loss = json.loads((project / "reports/finetune_ape210k/loss.json").read_text(encoding="utf-8"))
    assert [r["step"] for r in loss] == [3, 6, 9, 12] and all(finite(r["loss"]) for r in loss)
    model_dir = project / "models/finetune_ape210k"
    assert {"config.json", "model.safetensors", "tokenizer.json", "zhnlp_tokenizer.json", "zhnlp_generation.json"} <= {p.name for p in model_dir.iterdir()}
    assert (project / "models/finetune_ape210k-checkpoints/checkpoint-12").is_dir()
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`dvc.stage` = 'finetune_ape210k'")
    assert len(runs) == 1 and "metrics.trained.valid.accuracy_beam3" in runs.columns and "metrics.train/loss" in runs.columns
    for model in ("trained", "untrained"):
        for split in ("valid", "test"):
            for k in (1, 3):
                assert runs[f"metrics.timing.{model}.{split}.problems_per_second_beam{k}"][0] > 0
    assert runs["metrics.timing.train.seconds"][0] > 0 and runs["metrics.timing.train.tokens_per_second"][0] > 0


@pytest.mark.slow
def test_finetune_ape210k_resumes_from_its_checkpoint(project, ape_stage):
    first = json.loads((project / "reports/finetune_ape210k/metrics.json").read_text(encoding="utf-8"))
    proc = ok(run(project, "stages.finetune_ape210k"))
    assert "resuming from checkpoint-12" in proc.stdout
    again = json.loads((project / "reports/finetune_ape210k/metrics.json").read_text(encoding="utf-8"))
    assert again["train"]["steps"] == 12
    assert without_speed(again["trained"]) == without_speed(first["trained"])  # the same model, restored
    assert again == first, "a resumed rerun rewrites metrics.json exactly as it was (whether it resumed goes to MLflow)"


def without_speed(metrics: dict) -> dict:
    return {split: {k: v for k, v in m.items() if "per_second" not in k} for split, m in metrics.items()}


@pytest.mark.slow
def test_finetune_lccc_stage_outputs(project, lccc_stage):
    metrics = json.loads((project / "reports/finetune_lccc/metrics.json").read_text(encoding="utf-8"))
    for model in ("trained", "untrained"):
        for split in ("valid", "test"):
            m = metrics[model][split]
            assert finite(m["perplexity"]) and m["perplexity"] > 1
            assert 0 <= m["bleu2"] <= 100 and 0 <= m["bleu4"] <= 100
            assert 0 <= m["distinct1"] <= 1 and 0 <= m["distinct2"] <= 1
            assert "replies_per_second" not in m  # timings: MLflow only
    assert metrics["trained"]["valid"]["perplexity"] < metrics["untrained"]["valid"]["perplexity"]
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`dvc.stage` = 'finetune_lccc'")
    assert len(runs) == 1 and runs["metrics.timing.trained.valid.replies_per_second"][0] > 0
    samples = (project / "reports/finetune_lccc/samples.md").read_text(encoding="utf-8")
    assert samples.count("- **trained**:") == 3 and samples.count("- reference:") == 3
    assert json.loads((project / "reports/finetune_lccc/loss.json").read_text(encoding="utf-8"))[-1]["step"] == 12
    assert (project / "models/finetune_lccc/zhnlp_generation.json").is_file()


@pytest.mark.slow
def test_chat_replies_reproducibly_and_reports_empty_input(project, lccc_stage):
    script = "你好\n\n今天天气怎么样？\n/reset\n你好\n/quit\nnever read\n"
    first = ok(run(project, "stages.chat", "--seed", "3", "--max-new-tokens", "6", stdin=script))
    replies = [line for line in first.stdout.splitlines() if line.startswith("bot> ")]
    assert len(replies) == 3 and "(history cleared)" in first.stdout
    assert replies[0] == replies[2]  # /reset restarts history and sampler
    errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: empty input; type a message, /reset or /quit"]
    second = ok(run(project, "stages.chat", "--seed", "3", "--max-new-tokens", "6", stdin=script))
    assert second.stdout == first.stdout


@pytest.mark.slow
def test_register_serves_both_heads_as_their_stages_decode(project, ape_stage, lccc_stage):
    """The register stage logs and registers the Ape210K and LCCC heads; models:/zhnlp-ape210k@champion answers as
    the stage's own beam search did, and models:/zhnlp-lccc@champion replies reproducibly, as the head does."""
    import pandas as pd

    from zhnlp.tasks.serving import example_rows, load_predictor, rows_from_records
    from zhnlp.tasks.serving import predict as serve

    params_path = project / "params.yaml"
    original = params_path.read_text(encoding="utf-8")
    params = yaml.safe_load(original)
    params["register"]["include"] = ["ape210k", "lccc"]  # no CLUE model here: only the generation heads
    params_path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    try:
        done = ok(run(project, "stages.register"))
    finally:
        params_path.write_text(original, encoding="utf-8")
    report = json.loads((project / "reports/registry.json").read_text(encoding="utf-8"))
    metrics = {s: json.loads((project / f"reports/{s}/metrics.json").read_text(encoding="utf-8")) for s in ("finetune_ape210k", "finetune_lccc")}
    assert report["tasks"]["ape210k"] | {"models": None} == {
        "kind": "math_word_problem", "metric": "accuracy_beam3", "registered_model": "zhnlp-ape210k", "champion": metrics["finetune_ape210k"]["model"],
        "champion_dev": metrics["finetune_ape210k"]["trained"]["valid"]["accuracy_beam3"], "models": None}
    assert report["tasks"]["lccc"]["kind"] == "dialogue" and report["tasks"]["lccc"]["champion_dev"] == metrics["finetune_lccc"]["trained"]["valid"]["bleu2"]
    assert "zhnlp-ape210k:" in done.stdout and "zhnlp-lccc:" in done.stdout
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    version = mlflow.MlflowClient().get_model_version_by_alias("zhnlp-ape210k", "champion")
    assert version.tags["dvc.stage"] == "finetune_ape210k" and version.tags["zhnlp.kind"] == "math_word_problem"

    questions = example_rows(project / "data/prepared/ape210k", "math_word_problem", 8)
    served = mlflow.pyfunc.load_model("models:/zhnlp-ape210k@champion").predict(pd.DataFrame(questions))
    stage_preds = pq.read_table(project / "data/predictions/ape210k/test.parquet").to_pylist()[:8]
    assert [q["question"] for q in questions] == [p["question"] for p in stage_preds]
    assert served["equation"].tolist() == [p["pred_beam3"] for p in stage_preds]  # the stage's largest beam
    for equation, answer in zip(served["equation"], served["answer"]):
        assert math.isnan(answer) != seq2seq.check_prediction(equation, 0.0)[1]  # NaN exactly when not a valid expression

    histories = example_rows(project / "data/prepared/lccc", "dialogue", 4)
    assert histories and all(h["history"] for h in histories)
    chat = mlflow.pyfunc.load_model("models:/zhnlp-lccc@champion")
    replies = chat.predict(pd.DataFrame(histories))["reply"].tolist()
    assert replies == chat.predict(pd.DataFrame(histories))["reply"].tolist() and all(isinstance(r, str) for r in replies)
    direct = serve(load_predictor(project / "models/finetune_lccc", "dialogue"), "dialogue", rows_from_records("dialogue", histories))
    assert direct == {"reply": replies}


def test_chat_without_a_model_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "stages.chat", "--model", str(tmp_path / "nowhere")], cwd=Path(__file__).parents[1],
                          input="你好\n", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: no model at")


# ------------------------------------------------------------------ learning (the "done when")


@pytest.mark.slow
def test_trained_heads_clearly_beat_the_untrained_backbone(tmp_path):
    """On the demo corpora a tiny random backbone, trained briefly, solves problems and predicts replies."""
    ape, lccc = demo_rows(tmp_path / "demo", scale=1.0)
    texts = [r["question"] + r["equation"] for r in ape["train"]] + ["".join(d["turns"]) for d in lccc["train"]]
    backbone = save_random_backbone(tmp_path / "bb", texts, hidden_size=64, num_attention_heads=4, max_position_embeddings=160)

    train = dict(per_device_train_batch_size=32, max_steps=400, learning_rate=5e-3, warmup_ratio=0.05, save_steps=10**6, logging_steps=50, seed=0)
    settings = seq2seq.ApeSettings(max_source_len=96, max_target_len=32, beams=[1], eval_batch_size=64, **train)
    result = seq2seq.finetune(settings, backbone, ape["train"], {"valid": ape["valid"]}, tmp_path / "ape-ck")
    trained, untrained = result.metrics["trained"]["valid"], result.metrics["untrained"]["valid"]
    assert untrained["accuracy_beam1"] <= 0.02
    assert trained["accuracy_beam1"] >= 0.3, trained  # ~0.8 when measured; 0 untrained
    assert trained["loss"] < 0.5 * untrained["loss"]

    train = dict(per_device_train_batch_size=32, max_steps=150, learning_rate=3e-3, warmup_ratio=0.05, save_steps=10**6, logging_steps=50, seed=0)
    settings = dialogue.DialogueSettings(max_seq_len=96, sampling=dialogue.SamplingSettings(max_new_tokens=16), **train)
    result = dialogue.finetune(settings, backbone, lccc["train"], {"valid": lccc["valid"][:40]}, tmp_path / "lccc-ck")
    trained, untrained = result.metrics["trained"]["valid"], result.metrics["untrained"]["valid"]
    assert trained["perplexity"] < 0.2 * untrained["perplexity"], (trained, untrained)
    assert trained["bleu2"] > untrained["bleu2"]


# ------------------------------------------------------------------ real data (../shared/data)


@pytest.mark.slow
@pytest.mark.shared_data
def test_both_heads_train_and_evaluate_on_real_data(tmp_path):
    data = shared_data_dir()
    with RowPolicy("skip") as policy:
        problems = list(iter_problems(data / "ape210k" / "valid.ape.json", policy))
        cleaner = DialogueCleaner()
        dialogues = {s: list(iter_dialogues(data / "lccc" / "toy_data.json", policy, cleaner, key=s)) for s in ("train", "valid")}
    assert len(problems) == 4999
    # Deterministic split of the one real Ape210K file: by a hash of the problem id.
    is_eval = [hashlib.blake2b(p["id"].encode(), digest_size=2).digest()[0] < 26 for p in problems]  # ~10%
    ape_train = [p for p, e in zip(problems, is_eval) if not e][:600]
    ape_eval = [p for p, e in zip(problems, is_eval) if e][:40]
    texts = [p["question"] for p in ape_train] + ["".join(d["turns"]) for d in dialogues["train"]]
    backbone = save_random_backbone(tmp_path / "bb", texts, hidden_size=32, max_position_embeddings=192)
    train = dict(per_device_train_batch_size=16, max_steps=20, learning_rate=3e-3, save_steps=10, logging_steps=5, seed=0)

    settings = seq2seq.ApeSettings(max_source_len=128, max_target_len=48, beams=[1, 2], **train)
    result = seq2seq.finetune(settings, backbone, ape_train, {"eval": ape_eval}, tmp_path / "ape-ck")
    m = result.metrics["trained"]["eval"]
    assert finite(m["loss"]) and m["problems"] == 40 and m["loss"] < result.metrics["untrained"]["eval"]["loss"]
    assert all(0 <= m[k] <= 1 for k in ("accuracy_beam1", "accuracy_beam2", "invalid_rate_beam1", "invalid_rate_beam2"))
    columns = result.predictions["eval"]
    assert len(columns["pred_beam2"]) == 40 and all(isinstance(p, str) for p in columns["pred_beam2"])
    assert columns["gold_equation"] == [p["equation"] for p in ape_eval]
    assert [seq2seq.check_prediction(g, p["answer_value"])[0] for g, p in zip(columns["gold_equation"], ape_eval)] == [True] * 40

    settings = dialogue.DialogueSettings(max_seq_len=96, sampling=dialogue.SamplingSettings(max_new_tokens=12), **train)
    result = dialogue.finetune(settings, backbone, dialogues["train"], {"valid": dialogues["valid"][:40]}, tmp_path / "lccc-ck")
    m = result.metrics["trained"]["valid"]
    assert finite(m["perplexity"]) and m["perplexity"] < result.metrics["untrained"]["valid"]["perplexity"]
    assert 0 <= m["bleu2"] <= 100 and 0 <= m["bleu4"] <= 100 and 0 <= m["distinct1"] <= 1 and 0 <= m["distinct2"] <= 1
    replies = result.replies["valid"]
    assert len(replies) == 40 and all(isinstance(r["reply"], str) and r["reference"] for r in replies)


def test_a_missing_split_names_the_params_that_add_it(tmp_path):
    """No prepared data at all: run the prep stage. Some splits missing (a corpus that ships only valid):
    the stage says how to add them, in params, rather than to rerun the prep stage that already ran."""
    project = make_project(tmp_path / "project")
    backbone = save_random_backbone(tmp_path / "bb", ["一二三四五六"], hidden_size=16)
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    params["finetune_ape210k"]["backbone"] = params["finetune_lccc"]["backbone"] = str(backbone)
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    for stage, corpus in (("stages.finetune_ape210k", "ape210k"), ("stages.finetune_lccc", "lccc")):
        proc = run(project, stage)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and f"run `dvc repro prepare_{corpus}`" in proc.stderr, proc.stderr
        prepared = project / "data" / "prepared" / corpus
        prepared.mkdir(parents=True, exist_ok=True)
        (prepared / "valid.parquet").write_bytes(b"")  # only which split files exist matters here
        proc = run(project, stage)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        missing = proc.stderr.split(": ", 2)[1]
        assert "train.parquet" in missing and "test.parquet" in missing and "valid.parquet" not in missing, proc.stderr
        assert f"add the missing splits to {corpus}.splits, or carve them out of a shipped one with {corpus}.carve" in proc.stderr
