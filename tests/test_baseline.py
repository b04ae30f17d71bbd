"""zhnlp.tasks.baseline: the character n-gram TF-IDF + logistic regression baseline, on demo and real FewCLUE data."""

from __future__ import annotations

import time

import numpy as np
import pytest
from shared_data import shared_data_dir
from test_classification import prepare_task

from zhnlp.tasks.baseline import TfidfClassifier, TfidfConfig, pair_overlap
from zhnlp.tasks.classification_data import TaskData, evaluate_probs
from demo import write_demo_corpora


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, TaskData]:
    base = tmp_path_factory.mktemp("tfidf")
    write_demo_corpora(base / "demo", scale=0.5)
    return {t: TaskData.load(prepare_task(base / "demo" / "clue", t, base / t)) for t in ("tnews", "afqmc", "csl", "cluewsc")}


def fit_eval(data: TaskData, cfg: TfidfConfig = TfidfConfig()) -> tuple[TfidfClassifier, dict]:
    clf = TfidfClassifier(data.labels, cfg).fit(data.splits["train"])
    return clf, {s: evaluate_probs(data.splits[s], clf.predict_proba(data.splits[s])) for s in ("dev", "test_public") if s in data.splits}


@pytest.mark.parametrize(("task", "chance", "floor"), [("tnews", 1 / 6, 0.7), ("afqmc", 0.5, 0.6), ("csl", 0.5, 0.8)])
def test_beats_chance_clearly_on_demo_data(demo, task, chance, floor):
    _, metrics = fit_eval(demo[task])
    assert metrics["dev"]["accuracy"] >= floor > chance
    assert metrics["dev"]["rows"] == len(demo[task].splits["dev"])


def test_probabilities_cover_every_label_and_sum_to_one(demo):
    data = demo["tnews"]  # labels.json has 15 TNEWS labels; the demo uses 6 of them
    clf, _ = fit_eval(data)
    probs = clf.predict_proba(data.splits["test"])  # unlabelled rows work too
    assert probs.shape == (len(data.splits["test"]), 15) and probs.dtype == np.float64
    assert np.allclose(probs.sum(axis=1), 1.0)
    unseen = [i for i, n in enumerate(data.label_counts()) if n == 0]
    assert len(unseen) == 9 and np.all(probs[:, unseen] == 0)


def test_pairs_get_overlap_features_and_wsc_is_marked(demo):
    assert pair_overlap(["花呗还款"], ["花呗怎么还款"], (1, 1)).tolist() == [[1.0, 4 / 6]]
    without, _ = fit_eval(demo["csl"], TfidfConfig(pair_overlap=False))
    with_overlap, _ = fit_eval(demo["csl"])
    assert with_overlap._features(demo["csl"].splits["dev"]).shape[1] == without._features(demo["csl"].splits["dev"]).shape[1] + 2
    clf, metrics = fit_eval(demo["cluewsc"])  # single (marked) text: runs, no claim about accuracy
    assert "_" in clf._vectorizers[0].vocabulary_ and "[" in clf._vectorizers[0].vocabulary_


def test_config_from_params_and_degenerate_training_set():
    cfg = TfidfConfig.from_params({"ngram_range": [1, 2], "max_features": 100, "C": 1.0, "max_iter": 50})
    assert cfg.ngram_range == (1, 2) and cfg.max_features == 100
    with pytest.raises(ValueError, match=r"^finetune.tfidf: unknown key 'ngrams'; allowed keys: "):
        TfidfConfig.from_params({"ngrams": [1, 2]})
    with pytest.raises(ValueError, match="ngram_range"):
        TfidfConfig.from_params({"ngram_range": [3, 1]})
    rows = [dict(text_a=t, text_b=None, label_id=1, span1_text=None) for t in ("一二", "三四")]
    probs = TfidfClassifier(["a", "b", "c"]).fit(rows).predict_proba(rows)  # one class only: no solver, all mass on it
    assert probs.tolist() == [[0.0, 1.0, 0.0]] * 2


@pytest.mark.shared_data
def test_real_fewclue_tnews_and_iflytek_reach_the_reference(tmp_path):
    """Published-style TF-IDF numbers on the real FewCLUE samples: ~0.43 TNEWS, ~0.54 IFLYTEK (test_public)."""
    clue = shared_data_dir() / "clue"
    t0 = time.perf_counter()
    for task, floor in (("tnews", 0.38), ("iflytek", 0.48)):
        data = TaskData.load(prepare_task(clue, task, tmp_path / task))
        _, metrics = fit_eval(data)
        assert metrics["test_public"]["rows"] == {"tnews": 2010, "iflytek": 1749}[task]
        assert metrics["test_public"]["accuracy"] >= floor, (task, metrics)
    assert time.perf_counter() - t0 < 180  # ~30 s on an idle 2-core machine
