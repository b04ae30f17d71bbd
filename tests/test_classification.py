"""zhnlp.tasks.classification: CLUE inputs (pairs, CSL, WSC markers), prediction files, and finetuning a tiny backbone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from zhnlp.tasks.classification import ClassifierTraining, TransformerClassifier
from zhnlp.tasks.classification_data import TaskData, evaluate_probs, input_texts, mark_spans, split_inputs
from demo import write_demo_corpora
from zhnlp.data.clue import CLUE_SCHEMA, TaskSpec, iter_split, split_files
from zhnlp.data.rows import RowPolicy
from tiny_backbone import SPECIAL, build_tiny_backbone  # noqa: F401  (shared with test_finetune_stage.py)

ROOT = Path(__file__).resolve().parents[1]
CLUE_TASKS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["clue"]["tasks"]
TINY = dict(per_device_train_batch_size=16, learning_rate=5e-3, warmup_ratio=0.0, max_seq_len=48, seed=7)


# ---------------------------------------------------------------------------------------------
# helpers shared with test_finetune_stage.py


def prepare_task(clue_dir: Path, task: str, out_dir: Path, spec_entry: dict | None = None) -> Path:
    """data/prepared/clue/<task>/ from official-format files, through the zhnlp.data.clue reader."""
    spec = TaskSpec.from_params(task, spec_entry or CLUE_TASKS[task])
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, path in split_files(clue_dir / spec.dir, spec).items():
        rows = list(iter_split(path, spec, split, RowPolicy()))
        pq.write_table(pa.Table.from_pylist(rows, schema=CLUE_SCHEMA), out_dir / f"{split}.parquet")
    (out_dir / "labels.json").write_text(json.dumps(list(spec.labels), ensure_ascii=False), encoding="utf-8")
    return out_dir


def demo_texts(clue_dir: Path) -> list[str]:
    """The text fields of the demo classification tasks (JSON lines)."""
    texts = []
    dirs = [e.get("dir", t) for t, e in CLUE_TASKS.items() if e.get("kind", "classification") == "classification"]
    for path in sorted(p for d in dirs for p in (clue_dir / d).glob("*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            obj = json.loads(line)
            texts.extend(v for k, v in obj.items() if isinstance(v, str) and k not in ("label", "id", "idx"))
    return texts


def row(text_a: str, text_b: str | None = None, label_id: int | None = 0, **spans) -> dict:
    out = dict(id="0", text_a=text_a, text_b=text_b, label=None, label_id=label_id)
    return out | {k: spans.get(k) for k in ("span1_text", "span1_index", "span2_text", "span2_index")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """Demo corpora (scale 0.3), prepared tnews / afqmc / csl / cluewsc, and a tiny char backbone."""
    base = tmp_path_factory.mktemp("clf")
    write_demo_corpora(base / "demo", scale=0.3)
    clue = base / "demo" / "clue"
    prepared = {t: prepare_task(clue, t, base / "prepared" / t) for t in ("tnews", "afqmc", "csl", "cluewsc")}
    return {"base": base, "prepared": prepared, "backbone": build_tiny_backbone(base / "backbone", demo_texts(clue))}


# ---------------------------------------------------------------------------------------------
# inputs


def test_wsc_spans_are_marked_in_place():
    text = "小明把书给了小红，她很高兴。"
    r = row(text, span1_text="小红", span1_index=6, span2_text="她", span2_index=9)
    assert input_texts(r) == ("小明把书给了_小红_，[她]很高兴。", None)
    # pronoun before the noun, and spans that touch: offsets refer to the original text
    assert mark_spans("他说老王来了", [(2, "老王", ("_", "_")), (0, "他", ("[", "]"))]) == "[他]说_老王_来了"
    assert mark_spans("甲乙", [(0, "甲", ("_", "_")), (1, "乙", ("[", "]"))]) == "_甲_[乙]"
    with pytest.raises(ValueError, match="not at index"):
        mark_spans(text, [(5, "小红", ("_", "_"))])


def test_pairs_and_csl_keep_two_texts_single_tasks_one():
    assert input_texts(row("花呗怎么还", "花呗如何还款")) == ("花呗怎么还", "花呗如何还款")
    csl = row("神经网络；深度学习", "本文研究神经网络")  # keywords already joined by prep, then the abstract
    assert input_texts(csl) == ("神经网络；深度学习", "本文研究神经网络")
    assert split_inputs([row("一"), row("二")]) == (["一", "二"], None)
    with pytest.raises(ValueError, match="mix"):
        split_inputs([row("一", "二"), row("三")])


def test_encoding_pairs_wsc_and_truncation(demo):
    clf = TransformerClassifier.from_pretrained(demo["backbone"], ["0", "1"], max_seq_len=16)
    hf = clf.tokenizer.hf
    (item,) = clf.encode([row("花呗怎么还", "花呗如何还款", label_id=1)])
    tokens = hf.convert_ids_to_tokens(item["input_ids"])
    assert tokens == ["[CLS]", "花", "呗", "怎", "么", "还", "[SEP]", "花", "呗", "如", "何", "还", "款", "[SEP]"]
    assert set(item["token_type_ids"]) == {0} and item["labels"] == 1  # segment ids all 0 (CLUE baselines)
    assert len(clf.encode([row("很" * 40, "长" * 40)])[0]["input_ids"]) == 16  # longest-first truncation

    added = clf.add_missing_tokens(["_", "[", "]"])  # brackets never occur in the demo text: [UNK] before
    assert {"[", "]"} <= set(added) and clf.model.get_input_embeddings().num_embeddings == len(hf)
    assert [clf.tokenizer.tokenize(t) for t in "_[]"] == [["_"], ["["], ["]"]]
    wsc = row("小明把书给了小红，她很高兴。", span1_text="小红", span1_index=6, span2_text="她", span2_index=9)
    tokens = hf.convert_ids_to_tokens(clf.encode([wsc])[0]["input_ids"])
    assert tokens[6:14] == ["了", "_", "小", "红", "_", "，", "[", "她"] and tokens[14] == "]"
    assert clf.add_missing_tokens(["_", "[", "]"]) == []


def test_word_mode_segments_with_jieba(demo, tmp_path):
    words = ("北京", "天气", "京天")  # "京天" is in the vocab but never a jieba word here
    backbone = build_tiny_backbone(tmp_path / "word", demo_texts(demo["base"] / "demo" / "clue"), mode="word", words=words)
    clf = TransformerClassifier.from_pretrained(backbone, ["0", "1"])
    assert clf.tokenizer.mode == "word"
    (item,) = clf.encode([row("今天北京天气很好", "北京的天气如何")])
    tokens = clf.tokenizer.hf.convert_ids_to_tokens(item["input_ids"])
    assert tokens == ["[CLS]", "今", "天", "北京", "天气", "很", "好", "[SEP]", "北京", "的", "天气", "如", "何", "[SEP]"]


# ---------------------------------------------------------------------------------------------
# metrics and config


def test_evaluate_probs_scores_prediction_probabilities():
    # the prediction-file format itself is tested in test_predictions.py
    probs = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    rows = [row("x", label_id=1), row("y", label_id=2)]
    assert evaluate_probs(rows, probs) == {"accuracy": 0.5, "macro_f1": pytest.approx(1 / 3), "rows": 2}


def test_train_config_applies_task_overrides_and_rejects_unknown_keys():
    cfg = ClassifierTraining.from_params({"num_train_epochs": 10, "seed": 1}, {"num_train_epochs": 20}, "cluewsc")
    assert cfg.num_train_epochs == 20 and cfg.seed == 1
    with pytest.raises(ValueError, match=r"^finetune.recipes.clue-base: unknown key 'num_epochs'; allowed keys: "):
        ClassifierTraining.from_params({"num_epochs": 3}, None, "tnews", "finetune.recipes.clue-base")
    with pytest.raises(ValueError, match=r"^finetune.overrides.cluewsc.seed: 'x' is not allowed; expected int"):
        ClassifierTraining.from_params({"seed": 1}, {"seed": "x"}, "cluewsc")


# ---------------------------------------------------------------------------------------------
# finetuning


def _fit(backbone: Path, data: TaskData, **overrides):
    cfg = ClassifierTraining.from_params(TINY | {"num_train_epochs": 3, "early_stopping_patience": 0} | overrides)
    clf = TransformerClassifier.from_pretrained(backbone, data.labels, seed=cfg.seed, max_seq_len=cfg.max_seq_len)
    summary = clf.fit(data.splits["train"], data.splits["dev"], cfg)
    return clf, summary


def test_fixed_seed_gives_identical_metrics(demo):
    data = TaskData.load(demo["prepared"]["tnews"])
    runs = [_fit(demo["backbone"], data) for _ in range(2)]
    (clf1, s1), (clf2, s2) = runs
    assert s1.history == s2.history and s1.best_epoch == s2.best_epoch
    dev = data.splits["dev"]
    assert np.array_equal(clf1.predict_proba(dev), clf2.predict_proba(dev))
    losses = [h["train.loss"] for h in s1.history]
    assert len(losses) == 3 and losses[-1] < losses[0]  # it trains (3 epochs are too few for dev to move)


def test_best_epoch_is_restored_and_training_stops_early(demo, tmp_path):
    # dev has the opposite labels of train: the better the model learns, the worse dev gets
    train = [row(t, label_id=i % 2) for i, t in enumerate(["好好好好", "坏坏坏坏"] * 16)]
    dev = [row(t, label_id=1 - i % 2) for i, t in enumerate(["好好好好", "坏坏坏坏"] * 4)]
    data = TaskData(["0", "1"], {"train": train, "dev": dev})
    clf, summary = _fit(demo["backbone"], data, num_train_epochs=8, early_stopping_patience=3, learning_rate=2e-2)
    accs = [h["dev.accuracy"] for h in summary.history]
    assert accs[-1] < max(accs)  # the last epoch is not the best one (here: 0.5, 0.5, 0.0, 0.0)
    assert summary.best_epoch == 1 + accs.index(max(accs))  # the first epoch with the best dev accuracy
    assert summary.epochs_run < 8 and summary.epochs_run == summary.best_epoch + 3  # stopped after patience 3
    assert evaluate_probs(dev, clf.predict_proba(dev))["accuracy"] == max(accs)  # the best weights were reloaded


def test_local_hf_checkpoint_without_zhnlp_metadata(demo, tmp_path):
    from transformers import AutoModelForSequenceClassification

    plain = tmp_path / "plain-hf-checkpoint"
    shutil.copytree(demo["backbone"], plain)
    (plain / "zhnlp_tokenizer.json").unlink()  # any local HF BERT checkpoint: AutoTokenizer + safetensors
    data = TaskData.load(demo["prepared"]["afqmc"])
    clf, summary = _fit(plain, data, num_train_epochs=1)
    assert clf.tokenizer.mode == "pretrained" and summary.epochs_run == 1
    probs = clf.predict_proba(data.splits["dev"])
    assert probs.shape == (len(data.splits["dev"]), 2) and np.allclose(probs.sum(axis=1), 1)

    saved = clf.save(tmp_path / "finetuned")
    assert (saved / "model.safetensors").is_file() and (saved / "zhnlp_tokenizer.json").is_file()
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(saved), use_safetensors=True, trust_remote_code=False)
    again = TransformerClassifier(reloaded, clf.tokenizer, data.labels, max_seq_len=clf.max_seq_len)
    assert np.allclose(again.predict_proba(data.splits["dev"]), probs)
    assert reloaded.config.id2label == {0: "0", 1: "1"}
