"""Tests for the demo package: determinism, official formats, planted defects and learnability."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from demo import ape_mismatch_positions, write_demo_corpora
from demo.__main__ import main

SCALE = 0.5
FEWCLUE_TASKS = ["tnews", "iflytek", "ocnli", "csl", "cluewsc"]
FEWCLUE_FILES = ["train_few_all.json", "dev_few_all.json", "test_public.json", "test.json"]
CLUE_TASKS = ["afqmc", "cmnli"]
CLUE_FILES = ["train.json", "dev.json", "test.json"]
NLI_LABELS = {"entailment", "neutral", "contradiction"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("demo")
    return out, write_demo_corpora(out, seed=0, scale=SCALE)


@pytest.fixture(scope="module")
def demo_full(tmp_path_factory) -> Path:
    """Scale 1 (the size the pipeline uses); learnability is measured on these sizes."""
    out = tmp_path_factory.mktemp("demo_full")
    write_demo_corpora(out, seed=0)
    return out


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- determinism and counts -------------------------------------------------

def test_same_seed_identical_bytes_other_seed_differs(tmp_path, demo):
    first, _ = demo
    write_demo_corpora(tmp_path / "again", seed=0, scale=SCALE)
    write_demo_corpora(tmp_path / "other", seed=1, scale=SCALE)
    a, b, c = tree_bytes(first), tree_bytes(tmp_path / "again"), tree_bytes(tmp_path / "other")
    assert a == b
    assert a.keys() == c.keys()
    differing = [k for k in a if a[k] != c[k]]
    assert len(differing) >= len(a) - 1  # everything but tnews/labels.json changes


def test_counts_match_files(demo):
    out, counts = demo
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert set(counts) == files
    for rel, n in counts.items():
        if rel == "lccc/dialogues.json":
            data = json.loads((out / rel).read_text(encoding="utf-8"))
            assert n == sum(len(v) for v in data.values())
        else:
            assert n == len((out / rel).read_text(encoding="utf-8").splitlines()), rel
    assert counts["clue/tnews/train_few_all.json"] == 120
    assert counts["clue/afqmc/train.json"] == 160
    assert counts["ape210k/train.ape.json"] == 750


def test_scale_one_is_fast_and_has_documented_sizes(tmp_path):
    t0 = time.perf_counter()
    counts = write_demo_corpora(tmp_path, seed=3)
    assert time.perf_counter() - t0 < 2.0
    assert counts["clue/iflytek/train_few_all.json"] == 240
    assert counts["clue/iflytek/dev_few_all.json"] == 80
    assert counts["clue/iflytek/test_public.json"] == 80
    assert counts["clue/iflytek/test.json"] == 40
    assert [counts[f"clue/cmnli/{f}"] for f in CLUE_FILES] == [320, 100, 40]
    assert [counts[f"ape210k/{s}.ape.json"] for s in ("train", "valid", "test")] == [1500, 150, 150]
    assert [counts[f"lccc/{s}.txt"] for s in ("train", "valid", "test")] == [800, 100, 100]


def test_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--seed", "2", "--scale", "0.1"]) == 0
    assert (tmp_path / "clue" / "tnews" / "labels.json").is_file()
    assert "ape210k/valid.ape.json" in capsys.readouterr().out


def test_demo_params_are_strict_and_a_mistake_is_one_error_line(tmp_path):
    import subprocess
    import sys

    import yaml

    from conftest import make_project, project_env
    from zhnlp.config import ConfigError, from_params

    from demo import DemoConfig

    assert from_params(DemoConfig, {"seed": 3, "scale": 0.5}, "demo") == DemoConfig(3, 0.5)
    for entry, message in (
        ({"seed": 0, "scael": 1.0}, "demo: unknown key 'scael'; allowed keys: scale, seed"),
        ({"seed": "0"}, "demo.seed: '0' is not allowed; expected int"),
        ({"scale": 0}, r"demo.scale: 0.0 is not allowed; use a number in \(0, 100\]"),
    ):
        with pytest.raises(ConfigError, match=message):
            from_params(DemoConfig, entry, "demo")
    project = make_project(tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    params["demo"]["scale"] = -1
    (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "stages.demo_data"], cwd=project, env=project_env(project), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: demo.scale: -1.0 is not allowed; use a number in (0, 100]"
    assert not (project / "data" / "demo").exists()


def test_word_lists_are_data_files_the_stage_depends_on():
    import yaml

    root = Path(__file__).resolve().parents[1]
    stage = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["demo_data"]
    assert "demo" in stage["deps"] and stage["params"] == ["demo"]  # code and word lists, every demo param
    lists = sorted(p.stem for p in (root / "demo" / "words").glob("*.yaml"))
    assert lists == ["afqmc", "ape210k", "cluewsc", "csl", "iflytek", "lccc", "nli", "reading", "shared", "tnews"]
    shim = root / "zhnlp" / "demo.py"  # demo corpora are not library code (at most a re-export while callers move)
    assert not shim.exists() or "def " not in shim.read_text(encoding="utf-8")


# --- CLUE formats -----------------------------------------------------------

def test_clue_layouts_and_fields(demo):
    out, _ = demo
    clue = out / "clue"
    for task in FEWCLUE_TASKS:
        assert sorted(p.name for p in (clue / task).iterdir()) == sorted(
            FEWCLUE_FILES + (["labels.json"] if task == "tnews" else []))
    for task in CLUE_TASKS:
        assert sorted(p.name for p in (clue / task).iterdir()) == sorted(CLUE_FILES)

    for f in FEWCLUE_FILES[:3]:
        for r in read_jsonl(clue / "tnews" / f):
            assert set(r) == {"label", "label_desc", "sentence", "keywords", "id"}
            assert isinstance(r["label"], int) and r["label_desc"].startswith("news_")
            assert isinstance(r["keywords"], str) and " " not in r["keywords"]
        for r in read_jsonl(clue / "iflytek" / f):
            assert set(r) == {"label", "label_des", "sentence", "id"} and isinstance(r["label"], int)
        for r in read_jsonl(clue / "ocnli" / f):
            assert set(r) == {"level", "sentence1", "sentence2", "label", "label0", "label1", "label2",
                              "label3", "label4", "genre", "prem_id", "id"}
            assert r["label"] in NLI_LABELS and all(r[f"label{i}"] == r["label"] for i in range(5))
        for r in read_jsonl(clue / "csl" / f):
            assert set(r) == {"id", "abst", "keyword", "label"} and r["label"] in {"0", "1"}
            assert isinstance(r["keyword"], list) and 3 <= len(r["keyword"]) <= 4
            assert (r["label"] == "1") == all(k in r["abst"] for k in r["keyword"])
        for r in read_jsonl(clue / "cluewsc" / f):
            assert set(r) == {"target", "idx", "label", "text"} and r["label"] in {"true", "false"}

    labels = read_jsonl(clue / "tnews" / "labels.json")
    assert all(isinstance(r["label"], str) for r in labels)
    label_desc = {int(r["label"]): r["label_desc"] for r in labels}
    for r in read_jsonl(clue / "tnews" / "train_few_all.json"):
        assert label_desc[r["label"]] == r["label_desc"]

    assert all(set(r) == {"id", "sentence"} and isinstance(r["id"], str)
               for r in read_jsonl(clue / "tnews" / "test.json"))
    assert all(set(r) == {"id", "sentence"} for r in read_jsonl(clue / "iflytek" / "test.json"))
    assert all(set(r) == {"id", "sentence1", "sentence2"} for r in read_jsonl(clue / "ocnli" / "test.json"))
    assert all(set(r) == {"id", "abst", "keyword"} for r in read_jsonl(clue / "csl" / "test.json"))
    assert all(set(r) == {"idx", "target", "text"} for r in read_jsonl(clue / "cluewsc" / "test.json"))

    for f in CLUE_FILES[:2]:
        for r in read_jsonl(clue / "afqmc" / f):
            assert set(r) == {"sentence1", "sentence2", "label"} and r["label"] in {"0", "1"}
        for r in read_jsonl(clue / "cmnli" / f):
            assert set(r) == {"sentence1", "sentence2", "label"} and r["label"] in NLI_LABELS
    for task in CLUE_TASKS:
        rows = read_jsonl(clue / task / "test.json")
        assert all(set(r) == {"id", "sentence1", "sentence2"} for r in rows)
        assert [r["id"] for r in rows] == list(range(len(rows)))


def test_files_are_utf8_not_ascii_escaped(demo):
    out, _ = demo
    text = (out / "clue" / "tnews" / "train_few_all.json").read_text(encoding="utf-8")
    assert "\\u" not in text and re.search(r"[\u4e00-\u9fff]", text)


def test_cluewsc_offsets(demo):
    out, _ = demo
    n_true = 0
    for f in FEWCLUE_FILES:
        for r in read_jsonl(out / "clue" / "cluewsc" / f):
            t, text = r["target"], r["text"]
            assert list(t) == ["span2_index", "span1_index", "span1_text", "span2_text"]
            assert text[t["span1_index"]:t["span1_index"] + len(t["span1_text"])] == t["span1_text"]
            assert text[t["span2_index"]:t["span2_index"] + len(t["span2_text"])] == t["span2_text"]
            assert t["span2_text"] in {"他", "她", "它"} and t["span1_index"] < t["span2_index"]
            n_true += r.get("label") == "true"
    assert n_true > 0


# --- Ape210K ----------------------------------------------------------------

def _parse(tokens: list[str]) -> Fraction:
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def atom():
        tok = take()
        if tok == "(":
            v = expr()
            assert take() == ")"
            return v
        if tok == "-":
            return -atom()
        return Fraction(tok)

    def term():
        v = atom()
        while peek() in ("*", "/"):
            v = v * atom() if take() == "*" else v / atom()
        return v

    def expr():
        v = term()
        while peek() in ("+", "-"):
            v = v + term() if take() == "+" else v - term()
        return v

    v = expr()
    assert pos == len(tokens), tokens
    return v


def ape_value(s: str) -> Fraction:
    """Exact value of an Ape210K equation or answer: mixed numbers, %, ':' and + - * / ( )."""
    s = s.removeprefix("x=")
    s = re.sub(r"(\d+)\((\d+)/(\d+)\)", r"(\1+\2/\3)", s)
    s = re.sub(r"(\d+(?:\.\d+)?)%", r"(\1/100)", s).replace(":", "/")
    tokens = re.findall(r"\d+(?:\.\d+)?|[-+*/()]", s)
    assert "".join(tokens) == s, s
    return _parse(tokens)


def test_ape210k_rows(demo):
    out, _ = demo
    ids = set()
    features = Counter()
    for split in ("train", "valid", "test"):
        rows = read_jsonl(out / "ape210k" / f"{split}.ape.json")
        bad = [i for i, r in enumerate(rows) if ape_value(r["equation"]) != ape_value(r["ans"])]
        assert bad == list(ape_mismatch_positions(len(rows))), split
        for r in rows:
            assert list(r) == ["id", "segmented_text", "original_text", "ans", "equation"]
            assert all(isinstance(v, str) for v in r.values()) and r["equation"].startswith("x=")
            assert r["segmented_text"].replace(" ", "") == r["original_text"]
            ids.add(r["id"])
            features.update({
                "fraction": "(1/" in r["equation"], "percent": "%" in r["equation"],
                "mixed": bool(re.search(r"\d\(\d+/\d+\)", r["equation"])), "ratio": ":" in r["equation"],
                "ans_fraction": "/" in r["ans"], "ans_percent": r["ans"].endswith("%"),
                "ans_decimal": "." in r["ans"]})
    assert len(ids) == sum(1 for s in ("train", "valid", "test")
                           for _ in (out / "ape210k" / f"{s}.ape.json").open())
    assert all(features[k] > 0 for k in ("fraction", "percent", "mixed", "ratio", "ans_fraction",
                                         "ans_percent", "ans_decimal")), features


def test_ape_evaluator_sanity():
    assert ape_value("x=1-(1/5)-(1/4)") == Fraction(11, 20) == ape_value("(11/20)")
    assert ape_value("x=(15/(15+1))*100%") == ape_value("93.75%")
    assert ape_value("x=126(8/9)*1(2/7)") == ape_value("163(1/7)")
    assert ape_value("4:5") == Fraction(4, 5)


# --- LCCC -------------------------------------------------------------------

def test_lccc_formats_and_planted_defects(demo):
    out, _ = demo
    raw = (out / "lccc" / "dialogues.json").read_text(encoding="utf-8")
    assert raw.startswith('{\n"train": [\n[\n"')  # one turn per line, like toy_data.json
    data = json.loads(raw)
    assert list(data) == ["train", "valid", "test"]
    all_keys = []
    for split, dialogues in data.items():
        lines = (out / "lccc" / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        assert lines == ["\t".join(d) for d in dialogues]
        for d in dialogues:
            assert 2 <= len(d) <= 5 and all(isinstance(t, str) for t in d)
            for t in d:
                assert "  " not in t and all(len(c) == 1 for c in t.split(" ") if t)
        keys = [tuple(d) for d in dialogues]
        assert len(keys) - len(set(keys)) == 2, split  # exactly two exact duplicates
        assert sum("" in d for d in dialogues) == 1, split  # exactly one empty turn
        all_keys += list(dict.fromkeys(keys))
    assert len(all_keys) == len(set(all_keys))  # no duplicates across splits


def test_lccc_replies_echo_context(demo):
    out, _ = demo
    data = json.loads((out / "lccc" / "dialogues.json").read_text(encoding="utf-8"))
    cities = ["北 京", "上 海", "成 都", "杭 州", "西 安"]
    echoed = 0
    for d in data["train"]:
        for prev, reply in zip(d, d[1:]):
            echoed += any(c in prev and c in reply for c in cities)
    assert echoed > 20


# --- learnability -----------------------------------------------------------

def _bag(texts: list[str], vocab: dict[str, int]) -> np.ndarray:
    x = np.zeros((len(texts), len(vocab)))
    for i, t in enumerate(texts):
        for c in set(t):
            if c in vocab:
                x[i, vocab[c]] = 1.0
    return x


def naive_bayes_accuracy(x_train, y_train, x_dev, y_dev) -> float:
    """Bernoulli naive Bayes on binary features, Laplace smoothing."""
    classes = sorted(set(y_train))
    y_train, y_dev = np.array(y_train), np.array(y_dev)
    p = np.stack([(x_train[y_train == c].sum(0) + 1) / ((y_train == c).sum() + 2) for c in classes])
    prior = np.log([(y_train == c).mean() for c in classes])
    scores = x_dev @ np.log(p).T + (1 - x_dev) @ np.log(1 - p).T + prior
    return float((np.array(classes)[scores.argmax(1)] == y_dev).mean())


def _single_text_accuracy(out: Path, task: str) -> tuple[float, int]:
    train = read_jsonl(out / "clue" / task / "train_few_all.json")
    dev = read_jsonl(out / "clue" / task / "dev_few_all.json")
    vocab = {c: i for i, c in enumerate(sorted({c for r in train for c in r["sentence"]}))}
    acc = naive_bayes_accuracy(_bag([r["sentence"] for r in train], vocab), [r["label"] for r in train],
                               _bag([r["sentence"] for r in dev], vocab), [r["label"] for r in dev])
    return acc, len({r["label"] for r in train})


@pytest.mark.parametrize("task", ["tnews", "iflytek"])
def test_single_text_labels_are_learnable(demo_full, task):
    acc, k = _single_text_accuracy(demo_full, task)
    print(f"{task}: naive Bayes dev accuracy {acc:.3f} ({k} classes)")
    assert acc > max(0.7, 2 / k)


def test_afqmc_is_learnable(demo_full):
    """Pair features: characters in exactly one sentence, and characters in both."""
    out = demo_full
    train = read_jsonl(out / "clue" / "afqmc" / "train.json")
    dev = read_jsonl(out / "clue" / "afqmc" / "dev.json")
    vocab = {c: i for i, c in enumerate(sorted({c for r in train for c in r["sentence1"] + r["sentence2"]}))}

    def feats(rows):
        a = _bag([r["sentence1"] for r in rows], vocab)
        b = _bag([r["sentence2"] for r in rows], vocab)
        return np.hstack([np.abs(a - b), a * b])

    acc = naive_bayes_accuracy(feats(train), [r["label"] for r in train], feats(dev), [r["label"] for r in dev])
    print(f"afqmc: naive Bayes dev accuracy {acc:.3f}")
    assert acc > 0.7
