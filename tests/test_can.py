"""CAN (zhnlp.tasks.can): vectorised == literal loop, a hand-computed case, edge cases, bad input, and the can stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import zhnlp.tasks.can as can_module
import zhnlp.tasks.can_inputs as can_inputs
from zhnlp.tasks.can import EPS, CanConfig, can_adjust, can_apply, uncertainty
from zhnlp.tasks.can_reference import can_adjust_loop, can_apply_before_fusion
from zhnlp.tasks.can_report import can_report, reference_check, render_markdown, split_metrics
from zhnlp.tasks.can_select import CanParams, dev_selected, select_on_dev
from zhnlp.config import ConfigError, from_params
from zhnlp.tasks.predictions import PredictionError
from shared_data import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`): make `stages` importable
    sys.path.insert(0, str(ROOT))

PRED_SCHEMA = pa.schema([("id", pa.string()), ("label_id", pa.int32()), ("probs", pa.list_(pa.float64()))])


def random_probs(rng, n, m, zeros=0.05, conc=0.5):
    P = rng.dirichlet(np.full(m, conc), size=n)
    P[rng.random(P.shape) < zeros] = 0.0
    P[np.arange(n), P.argmax(axis=1)] += 1e-3  # no all-zero rows
    return P / P.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("iters", [1, 2, 3])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_vectorised_equals_the_literal_loop(iters, alpha):
    rng = np.random.default_rng(1000 * iters + int(10 * alpha))
    for m, k, tau, conc in ((3, 3, 0.6, 0.5), (7, 3, 0.7, 0.5), (15, 2, 0.9, 0.3), (30, 5, 0.8, 0.05)):
        P = random_probs(rng, 70, m, conc=conc)
        prior = rng.random(m) + 0.05
        res = can_apply(P, prior, k=k, tau=tau, alpha=alpha, iters=iters)
        ref = can_adjust_loop(P, prior, k=k, tau=tau, alpha=alpha, iters=iters)
        assert 0 < res.uncertain.sum() < len(P)  # both parts of the algorithm are exercised
        assert res.loop_rows == 0  # ... by the vectorised path, not its fallback
        np.testing.assert_allclose(res.probs, ref, rtol=0, atol=1e-9)
        np.testing.assert_allclose(res.probs.sum(axis=1), 1.0, atol=1e-12)


def assert_same_as_reference(P, prior, **kw):
    """The fused pass == the pre-fusion code (kept as can_apply_before_fusion), bit for bit: mask, scores and probs."""
    new, ref = can_apply(P, prior, **kw), can_apply_before_fusion(P, prior, **kw)
    np.testing.assert_array_equal(new.uncertain, ref.uncertain)
    np.testing.assert_array_equal(new.uncertainty, ref.uncertainty)  # same np.partition per row: same bits
    np.testing.assert_array_equal(new.probs, ref.probs)  # the same sums in the same order: the same bits
    np.testing.assert_array_equal(new.probs[~new.uncertain], np.asarray(P, dtype=np.float64)[~new.uncertain])
    assert (new.reference, new.loop_rows) == (ref.reference, ref.loop_rows)
    return new


# one chunk; many chunks with a ragged end, S's blocks ending inside them; one row per chunk; aligned blocks
@pytest.mark.parametrize("pass_rows, chunk_rows", [(1024, 32768), (7, 5), (1, 3), (16, 16), (13, 40)])
def test_fused_pass_equals_the_previous_implementation(monkeypatch, pass_rows, chunk_rows):
    monkeypatch.setattr(can_module, "PASS_ROWS", pass_rows)
    monkeypatch.setattr(can_inputs, "CHUNK_ROWS", chunk_rows)  # the reference's blocks too
    rng = np.random.default_rng(pass_rows)
    seen = set()
    for m, k, tau, alpha, conc in ((119, 3, 0.9, 1.0, 0.012), (9, 3, 0.8, 0.5, 0.3), (6, 6, 0.7, 2.0, 0.5), (4, 2, 0.5, 1.0, 1.0)):
        P = random_probs(rng, 200, m, zeros=0.3, conc=conc)
        P[:20] = 0.0  # ties: exact one-hot rows, and rows tied at the top
        P[np.arange(10), rng.integers(0, m, 10)] = 1.0
        P[10:20, :3] = 1 / 3
        prior = rng.random(m) + 0.01
        for iters in (1, 2):
            res = assert_same_as_reference(P, prior, k=k, tau=tau, alpha=alpha, iters=iters)
            seen.add(0 < res.uncertain.sum() < len(P))
        # all confident (tau = 1 and no uniform top-k), none confident (tau tiny)
        for sub, t in ((P[:10], 1.0), (P[20:], 1e-9)):
            for iters in (1, 2):
                res = assert_same_as_reference(sub, prior, k=k, tau=t, alpha=alpha, iters=iters)
                seen.add(("all" if not res.uncertain.any() else "none" if res.uncertain.all() else "mixed"))
    assert seen >= {True, "all", "none"}


def test_fused_pass_equals_the_previous_implementation_on_real_iflytek():
    """Real class frequencies and real (naive-Bayes) softmax outputs: FewCLUE iflytek, 119 classes."""
    d = shared_data_dir() / "clue" / "iflytek"
    read = lambda name: [json.loads(line) for line in (d / name).read_text(encoding="utf-8").split("\n") if line.strip()]
    train, rows = read("train_few_all.json"), read("dev_few_all.json") + read("test_public.json")
    labels = sorted({int(r["label"]) for r in train})
    col = {lab: i for i, lab in enumerate(labels)}
    chars = {c: i for i, c in enumerate(sorted({c for r in train + rows for c in r["sentence"]}))}
    counts = np.ones((len(labels), len(chars)))
    for r in train:
        np.add.at(counts[col[int(r["label"])]], [chars[c] for c in r["sentence"]], 1.0)
    logp = np.log(counts / counts.sum(axis=1, keepdims=True))
    X = np.zeros((len(rows), len(chars)))
    for i, r in enumerate(rows):
        np.add.at(X[i], [chars[c] for c in r["sentence"]], 1.0)
    z = 0.1 * (X @ logp.T)  # tempered: about 23% uncertain at tau 0.9, 10% of entries below EPS
    P = np.exp(z - z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    prior = np.bincount([col[int(r["label"])] for r in train], minlength=len(labels)) + 1.0
    assert P.shape[1] == 119 and len(P) > 3000
    for kw in ({}, {"alpha": 0.7}, {"k": 5, "tau": 0.5}, {"iters": 2}):
        res = assert_same_as_reference(P, prior, **kw)
        assert 0 < res.uncertain.sum() < len(P)


def test_fused_pass_reports_the_same_bad_row_as_before(monkeypatch):
    """The fused pass checks cheaply and re-runs the exact checks on flagged blocks: same row, same message."""
    good = random_probs(np.random.default_rng(4), 300, 5)
    nan, neg, off = good.copy(), good.copy(), good.copy()
    nan[250, 1] = np.nan
    neg[40] = [1.2, -1e-300, -0.2, 0.0, 0.0]
    off[40, 0] += 2e-6
    cases = []
    for first, second in ((neg, nan), (off, neg), (off, nan), (nan, off)):  # two faults: the block decides which is named
        both = first.copy()
        both[250] = second[250] if second is nan else second[40]
        cases.append(both)
    edge = good.copy()
    edge[7, 0] += 1e-6 - 5e-13  # inside the tolerance but outside the fast check's slack: a false alarm
    exact_checks = []
    check_rows = can_inputs.check_rows
    monkeypatch.setattr(can_inputs, "check_rows", lambda P, start, stop: exact_checks.append(start) or check_rows(P, start, stop))
    for chunk, pass_rows in ((32768, 1024), (100, 7), (64, 64), (7, 100)):
        monkeypatch.setattr(can_inputs, "CHUNK_ROWS", chunk)
        monkeypatch.setattr(can_module, "PASS_ROWS", pass_rows)
        for P in (nan, neg, off, *cases):
            for kw in ({}, {"k": 9}, {"iters": 2}):  # a bad parameter too: the bad row is still named first
                with pytest.raises(ValueError) as new:
                    can_apply(P, np.ones(5), **kw)
                with pytest.raises(ValueError) as ref:
                    can_apply_before_fusion(P, np.ones(5), **kw)
                assert str(new.value) == str(ref.value) and str(new.value).startswith("probs row ")
        exact_checks.clear()
        can_apply(edge, np.ones(5))
        # only the exact-check blocks under the pass chunk holding row 7 were re-checked, and they passed
        assert exact_checks == list(range(0, (7 // pass_rows + 1) * pass_rows, chunk))
        assert_same_as_reference(edge, np.ones(5), k=3, tau=0.6)


@pytest.mark.parametrize("block_rows", [1000, 64])
def test_threads_never_change_the_bits_and_blocks_stay_within_1e12_of_one_pass(monkeypatch, block_rows):
    """Blocks (small here) run on threads: every worker count gives the same bits, one block gives one pass's
    bits, and several blocks stay within 1e-12 of it (S adds the blocks' partial sums in block order)."""
    rng = np.random.default_rng(11)
    P, prior = random_probs(rng, 5000, 9, conc=0.3), rng.random(9) + 0.1
    one_pass = can_apply(P, prior, tau=0.6, alpha=0.8)
    monkeypatch.setattr(can_module, "BLOCK_ROWS", block_rows)
    monkeypatch.setattr(can_module, "PASS_ROWS", 16)
    results = [can_apply(P, prior, tau=0.6, alpha=0.8, workers=w) for w in (1, 2, 3, 8)]
    for res in results[1:]:
        assert np.array_equal(res.probs, results[0].probs) and np.array_equal(res.uncertainty, results[0].uncertainty)
    assert np.array_equal(results[0].uncertain, one_pass.uncertain) and 0 < one_pass.uncertain.sum() < len(P)
    assert np.abs(results[0].probs - one_pass.probs).max() <= 1e-12
    bad = P.copy()
    bad[4321, 2], bad[2345, 0] = -0.5, -0.5  # the later block's fault may be found first: the first row is named
    with pytest.raises(ValueError) as ref:
        can_apply_before_fusion(bad, prior)
    for workers in (1, 2, 4):
        with pytest.raises(ValueError, match=r"^probs row 2345 has a negative value") as err:
            can_apply(bad, prior, workers=workers)
        assert str(err.value) == str(ref.value)


def test_batching_of_uncertain_rows_does_not_change_the_result(monkeypatch):
    import zhnlp.tasks.can as can

    rng = np.random.default_rng(7)
    P, prior = random_probs(rng, 120, 6), rng.random(6) + 0.1
    whole = can_adjust(P, prior, tau=0.7, iters=3)
    monkeypatch.setattr(can, "CHUNK_BYTES", 8 * 10)  # one uncertain row per batch
    monkeypatch.setattr(can_inputs, "CHUNK_ROWS", 7)  # and tiny streaming chunks
    np.testing.assert_allclose(can_adjust(P, prior, tau=0.7, iters=3), whole, atol=1e-12)
    np.testing.assert_allclose(can_adjust(P, prior, tau=0.7, iters=1), can_adjust_loop(P, prior, tau=0.7), atol=1e-12)


def test_extreme_powers_fall_back_to_the_loop_and_stay_finite():
    rng = np.random.default_rng(3)
    P, prior = random_probs(rng, 60, 15, zeros=0.2), rng.random(15) + 0.1
    res = can_apply(P, prior, tau=0.6, alpha=3.0, iters=6)
    assert res.loop_rows > 0 and np.isfinite(res.probs).all()
    np.testing.assert_allclose(res.probs, can_adjust_loop(P, prior, tau=0.6, alpha=3.0, iters=6), atol=1e-9)


def test_hand_computed_three_class_example():
    # Two confident rows form C; the third row is uncertain (u = 0.991 >= 0.9).
    P = np.array([[0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.40, 0.30, 0.30]])
    prior = [0.2, 0.4, 0.4]
    # S = column sums of C = [0.99, 0.99, 0.02];  p'_c ∝ prior_c p_c / (S_c + p_c)
    raw = np.array([0.2 * 0.4 / (0.99 + 0.4), 0.4 * 0.3 / (0.99 + 0.3), 0.4 * 0.3 / (0.02 + 0.3)])
    expected = raw / raw.sum()  # [0.10951, 0.17699, 0.71350]
    out = can_adjust(P, prior, k=3, tau=0.9)
    np.testing.assert_allclose(out[2], expected, atol=1e-12)
    np.testing.assert_allclose(out[2], [0.10951, 0.17699, 0.71350], atol=1e-5)
    assert out[2].argmax() == 2 and P[2].argmax() == 0  # the prediction flips to the under-used class
    np.testing.assert_array_equal(out[:2], P[:2])  # confident rows unchanged, exactly
    # the same with the literal matrix steps, written out once more by hand
    X = P.copy()
    X = X / X.mean(axis=0) * np.array(prior)
    X = X / X.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out[2], X[2], atol=1e-12)


def test_uncertainty_is_top_k_entropy_normalised():
    u = uncertainty(np.array([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]]), k=2)
    # Su: top-2 renormalised, [.5,.5,0] is the more uncertain one (plain entropy says the opposite)
    np.testing.assert_allclose(u, [-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)) / np.log(2), 1.0, 0.0, 1.0])
    assert np.all((uncertainty(random_probs(np.random.default_rng(0), 50, 9), k=3) >= 0))


def test_edge_cases_all_confident_none_confident_and_zeros():
    prior = np.array([0.5, 0.3, 0.2])
    P = np.array([[1.0, 0.0, 0.0], [0.0, 0.99, 0.01]])
    out = can_adjust(P, prior)
    np.testing.assert_array_equal(out, P)  # all confident: unchanged
    assert out is not P

    U = np.array([[0.34, 0.33, 0.33], [0.3, 0.4, 0.3]])  # nothing confident: reference I_m
    res = can_apply(U, prior, alpha=1.0)
    assert res.reference == "identity" and res.uncertain.all()
    raw = prior * U / (1 + 2 * EPS + U)  # S_c = 1 + (m-1)·EPS
    np.testing.assert_allclose(res.probs, raw / raw.sum(axis=1, keepdims=True), atol=1e-12)
    for iters in (1, 2, 3):
        np.testing.assert_allclose(can_adjust(U, prior, iters=iters), can_adjust_loop(U, prior, iters=iters), atol=1e-12)

    Z = np.array([[1.0, 0.0, 0.0], [0.98, 0.02, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])  # zero columns in C
    for iters in (1, 2):
        out = can_adjust(Z, prior, k=2, tau=0.9, iters=iters)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, can_adjust_loop(Z, prior, k=2, tau=0.9, iters=iters), atol=1e-12)


def test_input_is_not_modified_and_output_is_float64():
    P = random_probs(np.random.default_rng(2), 30, 4).astype(np.float32)
    P /= P.sum(axis=1, keepdims=True)
    before = P.copy()
    out = can_adjust(P, [1, 1, 1, 1], tau=0.5)
    np.testing.assert_array_equal(P, before)
    assert out.dtype == np.float64


GOOD = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])


@pytest.mark.parametrize(
    "probs, prior, kw, message",
    [
        (np.array([0.5, 0.5]), [1, 1], {}, "2-D array"),
        (np.array([[0.7, 0.2, 0.1], [np.nan, 0.5, 0.5]]), [1, 1, 1], {}, "row 1 has a non-finite"),
        (np.array([[0.7, 0.2, 0.1], [np.inf, 0.5, 0.5]]), [1, 1, 1], {}, "row 1 has a non-finite"),
        (np.array([[0.7, 0.2, 0.1], [1.2, -0.2, 0.0]]), [1, 1, 1], {}, "row 1 has a negative value"),
        (np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.2]]), [1, 1, 1], {}, "row 1 sums to 0.8999"),
        (np.array([[1.0], [1.0]]), [1], {}, "at least 2 classes"),
        (GOOD, [1, 1], {}, "prior must have one entry per class: probs has 3 classes"),
        (GOOD, [[1, 1, 1]], {}, "prior must have one entry per class"),
        (GOOD, [1, 0, 1], {}, "prior must be positive: entry 1 is 0.0"),
        (GOOD, [1, -2, 1], {}, "prior must be positive: entry 1 is -2.0"),
        (GOOD, [1, np.nan, 1], {}, "prior has a non-finite"),
        (GOOD, [1, 1, 1], {"k": 1}, "k must be an integer in [2, m=3]"),
        (GOOD, [1, 1, 1], {"k": 4}, "k must be an integer in [2, m=3]"),
        (GOOD, [1, 1, 1], {"tau": 0.0}, "tau must be in (0, 1]"),
        (GOOD, [1, 1, 1], {"tau": 1.5}, "tau must be in (0, 1]"),
        (GOOD, [1, 1, 1], {"alpha": 0}, "alpha must be positive"),
        (GOOD, [1, 1, 1], {"iters": 0}, "iters must be an integer >= 1"),
    ],
)
def test_bad_input_raises_a_clear_value_error(probs, prior, kw, message):
    for fn in (can_adjust, can_adjust_loop):
        with pytest.raises(ValueError) as err:
            fn(probs, prior, **kw)
        assert message in str(err.value)


def test_rows_within_tolerance_are_accepted():
    P = GOOD + np.array([[5e-7, 0, 0], [0, 0, -5e-7]])
    assert can_adjust(P, [1, 1, 1]).shape == (2, 3)


def biased_case(seed=0, n=2000):
    """A classifier that ignores a skewed class prior: CAN with that prior should help."""
    rng = np.random.default_rng(seed)
    pi = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    y = rng.choice(6, size=n, p=pi)
    z = 2.0 * np.eye(6)[y] + rng.normal(size=(n, 6))
    P = np.exp(z)
    return P / P.sum(axis=1, keepdims=True), y, np.round(pi * 1000)  # prior as training counts


def test_can_corrects_a_systematic_bias():
    P, y, counts = biased_case()
    r = can_report(P, counts, y)
    assert r["uncertain_rows"] > 0.1 * len(y)
    assert r["accuracy_after"] > r["accuracy_before"] + 0.01
    assert r["accuracy_uncertain_after"] > r["accuracy_uncertain_before"] + 0.03
    # the final accuracy is (n_conf · acc_conf + right corrected) / N
    n_unc = r["uncertain_rows"]
    total = (len(y) - n_unc) * r["accuracy_confident"] + n_unc * r["accuracy_uncertain_after"]
    assert total / len(y) == pytest.approx(r["accuracy_after"])
    assert r["fixed"] - r["broken"] == round((r["accuracy_after"] - r["accuracy_before"]) * len(y))


# --------------------------------------------------------------------------- the can stage


def write_predictions(root: Path, task: str, model: str, probs, labels, counts, splits=("dev", "test_public")):
    d = root / "data" / "predictions" / "clue" / task / model
    d.mkdir(parents=True, exist_ok=True)
    m = probs.shape[1]
    for split in splits:
        table = pa.table(
            {"id": [f"{split}-{i}" for i in range(len(labels))], "label_id": np.asarray(labels, dtype=np.int32), "probs": probs.tolist()},
            schema=PRED_SCHEMA,
        )
        pq.write_table(table, d / f"{split}.parquet")
    (d / "meta.json").write_text(
        json.dumps({"model": model, "task": task, "labels": [f"l{i}" for i in range(m)], "train_label_counts": list(counts)}),
        encoding="utf-8",
    )
    return d


def test_can_stage_writes_same_schema_metrics_and_reliability(tmp_path):
    from stages.can import run_task

    P, y, counts = biased_case(n=600)
    write_predictions(tmp_path, "tnews", "char", P, y, counts)
    write_predictions(tmp_path, "tnews", "tfidf", P[::-1].copy(), y[::-1].copy(), [0, *counts[1:]], splits=("dev",))
    out_dir = tmp_path / "data" / "predictions_can" / "clue" / "tnews"
    cfg = {"k": 3, "tau": 0.9, "alpha": 1.0, "iters": 1}
    metrics, rel_rows, curves = run_task(tmp_path / "data" / "predictions" / "clue" / "tnews", out_dir, CanParams(**cfg))

    assert set(metrics) == {"char", "tfidf"}
    assert set(metrics["char"]) == {"dev", "test_public", "dev_selected"} and set(metrics["tfidf"]) == {"dev", "dev_selected"}
    r = metrics["char"]["test_public"]
    for key in ("accuracy_before", "accuracy_after", "uncertain_rows", "accuracy_confident", "accuracy_uncertain_before",
                "accuracy_uncertain_after", "macro_f1_before", "macro_f1_after", "ece_before", "ece_after"):
        assert key in r
    assert r["accuracy_after"] > r["accuracy_before"] and r["reported"] and not metrics["char"]["dev"]["reported"]
    assert metrics["tfidf"]["dev"]["prior_smoothed"] and not r["prior_smoothed"]

    table = pq.read_table(out_dir / "char" / "test_public.parquet")
    assert table.schema.equals(PRED_SCHEMA)
    adjusted = np.array(table.column("probs").to_pylist())
    np.testing.assert_allclose(adjusted, can_adjust(P, counts), atol=1e-15)
    assert table.column("id").to_pylist()[:2] == ["test_public-0", "test_public-1"]
    assert json.loads((out_dir / "char" / "meta.json").read_text())["can"] == cfg

    # reliability rows: the reported split per model, before and after, counts summing to N
    for model, split, n in (("char", "test_public", 600), ("tfidf", "dev", 600)):
        for when in ("before", "after"):
            rows = [x for x in rel_rows if x["model"] == model and x["when"] == when]
            assert rows and all(x["split"] == split for x in rows)
            assert sum(x["count"] for x in rows) == n
            assert set(rows[0]) == {"model", "split", "when", "confidence", "accuracy", "count"}
    assert set(curves["char"]) == {"test_public"}


def test_can_stage_rejects_predictions_that_break_the_contract(tmp_path):
    from stages.can import run_task

    P, y, counts = biased_case(n=50)
    d = write_predictions(tmp_path, "t", "char", P, y, counts, splits=("dev",))
    bad = P.copy()
    bad[3] *= 2
    write_predictions(tmp_path, "t", "word", bad, y, counts, splits=("dev",))
    with pytest.raises(PredictionError, match=r"word/dev.parquet: probs row 3 sums to"):
        run_task(tmp_path / "data" / "predictions" / "clue" / "t", tmp_path / "out", CanParams())
    (d / "meta.json").write_text(json.dumps({"labels": ["a", "b"], "train_label_counts": [1, 2]}))
    with pytest.raises(PredictionError, match="row 0 has 6 probabilities; the task has 2 labels"):
        run_task(tmp_path / "data" / "predictions" / "clue" / "t", tmp_path / "out", CanParams())


def test_can_params_are_strict():
    assert from_params(CanConfig, {"k": 3, "tau": 0.9, "alpha": 1.0, "iters": 1}, "can") == CanConfig()
    for entry, message in (
        ({"kk": 3}, "can: unknown key 'kk'; allowed keys: alpha, iters, k, tau"),
        ({"k": 1}, "can.k: 1 is not allowed; use an integer >= 2"),
        ({"k": 2.5}, "can.k: 2.5 is not allowed; expected int"),
        ({"tau": 0}, r"can.tau: 0.0 is not allowed; use a number in \(0, 1\]"),
        ({"tau": 1.5}, r"can.tau: 1.5 is not allowed; use a number in \[0.0, 1.0\]"),
        ({"alpha": -1}, "can.alpha: -1.0 is not allowed; use a positive, finite number"),
        ({"iters": 0}, "can.iters: 0 is not allowed; use an integer >= 1"),
    ):
        with pytest.raises(ConfigError, match=message):
            from_params(CanConfig, entry, "can")


def test_can_output_keeps_pred_id_consistent_with_probs(tmp_path):
    """A predictions file with pred_id (as finetune_clue writes it) gets the argmax of the adjusted probs."""
    from stages.can import run_task
    from zhnlp.tasks.predictions import PREDICTION_SCHEMA, write_predictions

    P, y, counts = biased_case(n=300)
    d = tmp_path / "pred" / "char"
    for split in ("dev", "test_public"):
        write_predictions(d / f"{split}.parquet", [str(i) for i in range(len(y))], P, y)
    (d / "meta.json").write_text(json.dumps({"labels": [f"l{i}" for i in range(P.shape[1])], "train_label_counts": list(counts)}))
    run_task(tmp_path / "pred", tmp_path / "out", CanParams())
    table = pq.read_table(tmp_path / "out" / "char" / "dev.parquet")
    assert table.schema.equals(PREDICTION_SCHEMA, check_metadata=False)
    adjusted = np.array(table.column("probs").to_pylist())
    assert table.column("pred_id").to_pylist() == adjusted.argmax(axis=1).tolist()
    assert (adjusted.argmax(axis=1) != P.argmax(axis=1)).any()  # CAN changed some predictions


# --------------------------------------------------------------------------- the reference set and τ/α picked on dev


def prior_mismatch_case(per_class=10):
    """Three balanced classes, a prior (training counts) that says class 0 is 90%, and a model that is always
    right: per class ``per_class`` confident rows (0.9 on the label, u = 0.359) and ``per_class`` hesitant
    ones (0.5 on the label, 0.25 elsewhere: u = 0.946). Su's τ = 0.9 corrects the hesitant rows towards
    the wrong prior, so CAN can only break predictions; τ = 0.95 leaves them alone."""
    rows, labels = [], []
    for c in range(3):
        for p_label, rest in ((0.9, 0.05), (0.5, 0.25)):
            row = np.full(3, rest)
            row[c] = p_label
            rows += [row] * per_class
            labels += [c] * per_class
    return np.array(rows), np.array(labels), [90, 5, 5]


def test_uncertainty_of_the_constructed_rows():
    u = uncertainty(np.array([[0.9, 0.05, 0.05], [0.25, 0.5, 0.25]]), k=3)
    assert u[0] == pytest.approx(0.3590, abs=1e-4) and u[1] == pytest.approx(0.9464, abs=1e-4)


def test_reference_size_accuracy_and_warning():
    # 4 classes, 10 rows: rows 0-2 confident (u = 0.24 < 0.9), one of them right; rows 3-9 uniform-ish (u ~ 1)
    P = np.full((10, 4), 0.25)
    P[:3] = [0.94, 0.02, 0.02, 0.02]
    y = np.array([0, 1, 2, 0, 1, 2, 3, 0, 1, 2])
    params = CanParams()
    assert params.min_reference_rows(4) == 30 and params.min_reference_rows(119) == 238  # max(30, 2 x classes)
    _, r = split_metrics(P, [1, 1, 1, 1], y, k=3, tau=0.9, alpha=1.0, iters=1, min_rows=params.min_reference_rows(4))
    assert r["reference_rows"] == 3 and r["reference_accuracy"] == pytest.approx(1 / 3) and r["accuracy_confident"] == r["reference_accuracy"]
    assert r["reference_too_small"] and r["reference_min_rows"] == 30 and r["classes"] == 4
    assert "reference of 3 confident rows is below 30" in r["reference_warning"] and "applied anyway, flagged" in r["reference_warning"]
    assert (r["tau"], r["alpha"], r["k"], r["iters"]) == (0.9, 1.0, 3, 1)
    # a lower bar: 3 rows are enough, no warning
    small = CanParams(min_reference=2, min_reference_per_class=0.5)
    assert small.min_reference_rows(4) == 2
    _, r = split_metrics(P, [1, 1, 1, 1], y, k=3, tau=0.9, alpha=1.0, iters=1, min_rows=small.min_reference_rows(4))
    assert not r["reference_too_small"] and r["reference_warning"] is None
    # no confident row at all: the identity reference, always flagged
    _, r = split_metrics(P[3:], [1, 1, 1, 1], y[3:], k=3, tau=0.9, alpha=1.0, iters=1, min_rows=2)
    assert r["reference_rows"] == 0 and r["reference_accuracy"] is None and r["reference_identity"]
    assert r["reference_too_small"] and "identity matrix I_4" in r["reference_warning"]
    assert reference_check(30, 4, 30)["reference_too_small"] is False and reference_check(29, 4, 30)["reference_too_small"] is True


def test_dev_selection_picks_a_no_op_setting_where_the_defaults_hurt():
    P, y, counts = prior_mismatch_case()
    prior = np.asarray(counts, dtype=float) / sum(counts)
    _, fixed = split_metrics(P, prior, y, k=3, tau=0.9, alpha=1.0, iters=1, min_rows=30)
    # the defaults break every hesitant row of classes 1 and 2 (10 each), fix nothing
    assert fixed["accuracy_before"] == 1.0 and fixed["broken"] == 20 and fixed["fixed"] == 0
    assert fixed["accuracy_after"] == pytest.approx(40 / 60) and fixed["reference_rows"] == 30 and not fixed["reference_too_small"]

    params = CanParams(tau_grid=(0.5, 0.9, 0.95, 0.99), alpha_grid=(1.0, 2.0))
    pick, grid = select_on_dev(P, prior, y, k=3, iters=1, tau_grid=params.tau_grid, alpha_grid=params.alpha_grid)
    assert len(grid) == 8 and [(g["tau"], g["alpha"]) for g in grid[:2]] == [(0.5, 1.0), (0.5, 2.0)]
    by = {(g["tau"], g["alpha"]): g for g in grid}
    assert by[(0.9, 1.0)]["dev_right"] == 40 and by[(0.9, 1.0)]["dev_changed"] == 20 and by[(0.9, 1.0)]["reference_rows"] == 30
    assert by[(0.95, 1.0)]["dev_right"] == 60 and by[(0.95, 1.0)]["dev_changed"] == 0 and by[(0.95, 1.0)]["reference_rows"] == 60
    # four settings tie at 100%, no change, no corrected row: the larger τ wins, then α nearer 1
    assert pick == {"tau": 0.99, "alpha": 1.0}

    # the test split: same rows shuffled; the pick is evaluated there, and does no harm
    order = np.random.default_rng(0).permutation(len(y))
    out = dev_selected({"dev": (P, y), "test_public": (P[order], y[order])}, prior, params, k=3)
    assert (out["tau"], out["alpha"], out["unbiased_split"]) == (0.99, 1.0, "test_public")
    assert out["test_public"]["accuracy_after"] == out["test_public"]["accuracy_before"] == 1.0
    assert out["test_public"]["changed_predictions"] == 0 and out["test_public"]["reference_rows"] == 60
    assert "dev accuracy" in out["selected_by"] and len(out["grid"]) == 8
    assert dev_selected({"dev": (P, y)}, prior, params, k=3)["test_public"] is None


def test_dev_selection_tie_goes_to_the_fewest_changes_and_never_loses_to_a_default_in_the_grid():
    P, y, counts = biased_case(n=900, seed=3)
    prior = np.asarray(counts, dtype=float)
    pick, grid = select_on_dev(P, prior, y, k=3, iters=1, tau_grid=(0.5, 0.9, 0.99), alpha_grid=(0.5, 1.0, 2.0))
    best = max(g["dev_right"] for g in grid)
    chosen = next(g for g in grid if (g["tau"], g["alpha"]) == (pick["tau"], pick["alpha"]))
    assert chosen["dev_right"] == best >= next(g["dev_right"] for g in grid if (g["tau"], g["alpha"]) == (0.9, 1.0))
    assert chosen["dev_changed"] == min(g["dev_changed"] for g in grid if g["dev_right"] == best)
    assert best > round(accuracy_of(P, y) * len(y))  # on this biased case some setting helps on dev


def accuracy_of(P, y):
    return float((P.argmax(axis=1) == y).mean())


def test_can_stage_reports_reference_and_both_variants(tmp_path):
    from stages.can import run_task

    P, y, counts = prior_mismatch_case()
    write_predictions(tmp_path, "t", "char", P, y, counts)
    write_predictions(tmp_path, "t", "word", P, y, counts, splits=("dev",))
    params = CanParams(tau_grid=(0.9, 0.95), alpha_grid=(1.0,), min_reference=40)
    metrics, _, _ = run_task(tmp_path / "data" / "predictions" / "clue" / "t", tmp_path / "out", params)
    r = metrics["char"]["test_public"]
    assert r["reference_rows"] == 30 and r["reference_accuracy"] == 1.0 and r["reference_too_small"] and r["reference_min_rows"] == 40
    assert r["accuracy_after"] < r["accuracy_before"] and (r["tau"], r["alpha"]) == (0.9, 1.0)
    sel = metrics["char"]["dev_selected"]
    assert (sel["tau"], sel["alpha"]) == (0.95, 1.0) and sel["test_public"]["accuracy_after"] == 1.0
    assert not sel["test_public"]["reference_too_small"]  # 60 confident rows >= 40
    assert metrics["word"]["dev_selected"]["test_public"] is None

    md = render_markdown("t", metrics, {"k": 3, "tau": 0.9, "alpha": 1.0, "iters": 1},
                         {"tau_grid": params.tau_grid, "alpha_grid": params.alpha_grid, "selected_by": "dev accuracy"})
    assert "| char | test_public | 60 | 3 | 30 / 40 † | 100.00 | 30 | 100.00 → 66.67 | 0 / 20 |" in md
    assert "## τ and α picked on dev (τ ∈ {0.9, 0.95}, α ∈ {1})" in md and "**test_public is the only unbiased estimate**" in md
    assert "| char | 0.95 | 1 | 100.00 → 100.00 | 100.00 → 100.00 | 60 / 40 | 100.00 | 0 / 0 |" in md
    assert "| word | 0.95 | 1 | 100.00 → 100.00 | no test_public split: no unbiased estimate |" in md
    assert "- char test_public (Su's defaults): reference of 30 confident rows is below 40" in md
    assert not any(line.startswith("- char test_public (dev-picked") for line in md.splitlines())


def test_can_stage_params_are_strict_and_match_params_yaml():
    import yaml

    entry = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["can"]
    params = from_params(CanParams, entry, "can")
    assert params.fixed() == CanConfig(k=3, tau=0.9, alpha=1.0, iters=1) and params.select_on_dev
    assert 0.9 in params.tau_grid and 1.0 in params.alpha_grid  # Su's defaults are among the dev candidates
    for bad, message in (
        ({"tau_grid": [0.5, 1.5]}, r"can.tau_grid\[1\]: 1.5 is not allowed; use numbers in \(0, 1\]"),
        ({"alpha_grid": []}, "can.alpha_grid: empty; list at least one value"),
        ({"min_reference": -1}, "can.min_reference: -1 is not allowed"),
        ({"select_on_dev": "yes"}, "can.select_on_dev: 'yes' is not allowed; expected bool"),
        ({"tau": 0}, r"can.tau: 0.0 is not allowed"),
    ):
        with pytest.raises(ConfigError, match=message):
            from_params(CanParams, entry | bad, "can")
    assert from_params(CanParams, entry | {"alpha_grid": [], "select_on_dev": False}, "can").alpha_grid == ()


def test_the_can_benchmark_runs_and_checks_itself_on_a_small_array():
    """``make bench``'s CAN benchmark calls this module's internals by name: a rename must break a test, not the
    benchmark. On 5,000 rows it runs every phase and its own equality checks against the reference."""
    from benchmarks import bench_can

    results = bench_can.run(1, rows=5_000, loop_rows_full=2)
    assert results["uncertain_rows"] > 0 and results["max_abs_diff_vs_reference"]["probs"] <= 1e-12
    assert {"fused: first pass, 1 thread", "reference: S over confident rows"} <= set(results["phases_s"])
    assert "fused pass: speed-up vs before" in bench_can.summary(results)
    from benchmarks import targets

    (row,) = [line for line in targets.table({"bench_can": results}).splitlines() if line.startswith("CAN 1M")]
    assert f"{results['vectorised_s']:.3f} s ({results['workers']} threads)" in row and "this run" in row
