"""Scores, aggregate means, calibration bins and rankings: the one owner of every metric.

Classification: accuracy and macro-F1 (sklearn). Generation: corpus BLEU (sacrebleu) and
distinct-n. Reading comprehension: CMRC2018 EM/F1. NER: entity-level micro
precision/recall/F1. Aggregation: power means. Calibration: reliability bins and ECE. Rankings:
competition ranks and Kendall's tau-b (scipy).

Power means (techniques.md §2): M_γ(s) = ((1/T) Σ s_t^γ)^(1/γ); γ=1 arithmetic, γ→0
geometric, γ=-1 harmonic, γ=±inf max/min. M_γ is non-decreasing in γ.
"""

from __future__ import annotations

import math
import string
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

MEAN_NAMES = {1.0: "am", 0.0: "gm", -1.0: "hm"}


# --------------------------------------------------------------------------- classification scores


def accuracy(y_true, y_pred) -> float:
    """Share of rows with y_pred == y_true."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def macro_f1(y_true, y_pred, labels: Sequence | None = None) -> float:
    """Unweighted mean of per-class F1 (sklearn, zero_division=0).

    ``labels=None`` averages over the classes present in y_true or y_pred (sklearn's
    default, the usual CLUE convention); pass ``labels=range(m)`` to count every class.
    """
    from sklearn.metrics import f1_score

    t, p = _pair(y_true, y_pred)
    return float(f1_score(t, p, labels=None if labels is None else list(labels), average="macro", zero_division=0))


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim != 1 or t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must be 1-D and the same length; got {t.shape} and {p.shape}")
    if t.size == 0:
        raise ValueError("no rows to score")
    return t, p


# --------------------------------------------------------------------------- generation scores


def corpus_bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]], max_n: int = 4, epsilon: float = 0.1) -> float:
    """Corpus BLEU of token sequences, one reference each, in 0-100 (sacrebleu).

    Uniform weights up to ``max_n``, clipped n-gram counts summed over the corpus, brevity
    penalty ``exp(1 - ref_len / hyp_len)`` when the hypotheses are shorter. An order with no
    match counts ``epsilon`` matches (sacrebleu's ``floor`` smoothing, which is NLTK's
    ``method1``), so one empty order does not zero the score; no match at all, or no
    hypothesis n-grams of some order, gives 0. Tokens are joined with spaces and split again
    (``tokenize="none"``): for single characters this is sacrebleu's ``tokenize="char"``.
    """
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references):
        raise ValueError("one reference per hypothesis")
    bleu = BLEU(tokenize="none", max_ngram_order=max_n, smooth_method="floor", smooth_value=epsilon)
    return float(bleu.corpus_score([" ".join(h) for h in hypotheses], [[" ".join(r) for r in references]]).score)


def _ngrams(seq: Sequence[str], n: int) -> Counter:
    return Counter(tuple(seq[i : i + n]) for i in range(len(seq) - n + 1))


def distinct_n(texts: Sequence[Sequence[str]], n: int) -> float:
    """Distinct n-grams / all n-grams over every text (0 when there are none)."""
    grams: Counter = Counter()
    for text in texts:
        grams.update(_ngrams(text, n))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


# --------------------------------------------------------------------------- power means


def mean_name(gamma: float) -> str:
    """'am', 'gm', 'hm' for γ = 1, 0, -1; otherwise 'm_<γ>' (e.g. m_2, m_0.5, m_-2, m_inf)."""
    g = float(gamma)
    if g in MEAN_NAMES:
        return MEAN_NAMES[g]
    if math.isinf(g):
        return "m_inf" if g > 0 else "m_-inf"
    return f"m_{int(g)}" if g.is_integer() else f"m_{g:g}"


def power_mean(scores, gamma: float) -> float:
    """M_γ of ``scores`` for any real γ (±inf give max/min).

    Errors (ValueError): no scores; a NaN/inf score; γ NaN; a score <= 0 when γ <= 0
    (GM and HM are undefined there); a negative score when γ > 0 and γ != 1 (only the
    arithmetic mean is defined for negative scores such as MCC).

    Computed as ``c + log1p(mean(expm1(γ(log s - c)))) / γ`` in log space with c the log of
    the max (γ > 0) or min (γ < 0) score, which is exact at γ → 0 (no cancellation) and
    cannot overflow; the result is clipped to [min, max], where the exact value lies.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = float(gamma)
    if s.size == 0:
        raise ValueError("power_mean of no scores")
    if not np.isfinite(s).all():
        raise ValueError(f"power_mean needs finite scores; got {s.tolist()}")
    if math.isnan(g):
        raise ValueError("gamma is NaN")
    lo, hi = float(s.min()), float(s.max())
    if g <= 0 and lo <= 0:
        raise ValueError(f"the power mean with gamma={g:g} (<= 0: GM, HM, ...) is undefined for scores <= 0; got {lo!r}")
    if g == 1:
        return min(max(math.fsum(s.tolist()) / s.size, lo), hi)
    if lo < 0:
        raise ValueError(f"the power mean with gamma={g:g} is undefined for negative scores; got {lo!r} (only gamma=1 is)")
    if math.isinf(g):
        return hi if g > 0 else lo
    if lo == 0:  # only γ > 0 reaches here: zeros contribute 0 to Σ s^γ
        pos = s[s > 0]
        if pos.size == 0:
            return 0.0
        return min(max(power_mean(pos, g) * (pos.size / s.size) ** (1.0 / g), lo), hi)
    logs = np.log(s)
    if g == 0:
        return min(max(math.exp(math.fsum(logs.tolist()) / s.size), lo), hi)
    c = float(logs.max() if g > 0 else logs.min())
    inner = math.fsum(np.expm1(g * (logs - c)).tolist()) / s.size  # in (-1, 0]
    return min(max(math.exp(c + math.log1p(inner) / g), lo), hi)


def power_means(scores, gammas: Sequence[float] = (1, 0, -1)) -> dict[str, float]:
    """{mean_name(γ): M_γ} for each γ (errors as in power_mean)."""
    return {mean_name(g): power_mean(scores, g) for g in gammas}


# --------------------------------------------------------------------------- calibration


def reliability_bins(probs, labels, n_bins: int = 10) -> dict:
    """Confidence (max prob) vs accuracy in ``n_bins`` equal-width bins over [0, 1].

    Returns {"bins": [{"lower", "upper", "confidence", "accuracy", "count"}], "ece", "rows"}:
    confidence/accuracy are None for an empty bin; ece = Σ_b count_b/N · |acc_b - conf_b|.
    A confidence of exactly 1 falls in the last bin.
    """
    P = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if P.ndim != 2 or y.shape != (P.shape[0],):
        raise ValueError(f"reliability_bins needs N×m probs and N labels; got {P.shape} and {y.shape}")
    if P.shape[0] == 0:
        raise ValueError("reliability_bins of no rows")
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")
    conf = P.max(axis=1)
    right = (P.argmax(axis=1) == y).astype(np.float64)
    idx = np.clip((conf * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    right_sum = np.bincount(idx, weights=right, minlength=n_bins)
    bins, ece = [], 0.0
    for b in range(n_bins):
        c = int(counts[b])
        mean_conf = conf_sum[b] / c if c else None
        mean_acc = right_sum[b] / c if c else None
        if c:
            ece += c / P.shape[0] * abs(mean_acc - mean_conf)
        bins.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "confidence": None if mean_conf is None else float(mean_conf),
                "accuracy": None if mean_acc is None else float(mean_acc),
                "count": c,
            }
        )
    return {"bins": bins, "ece": float(min(max(ece, 0.0), 1.0)), "rows": int(P.shape[0])}


# --------------------------------------------------------------------------- rankings


def rank(scores: Mapping[str, float | None], higher_is_better: bool = True) -> dict[str, int | None]:
    """Competition ranks (1, 2, 2, 4; scipy's ``rankdata(method="min")``): ties share the best rank; None scores get rank None."""
    from scipy.stats import rankdata

    valid = {k: float(v) for k, v in scores.items() if v is not None and math.isfinite(v)}
    out: dict[str, int | None] = {k: None for k in scores}
    if valid:
        values = np.fromiter(valid.values(), dtype=np.float64)
        ranks = rankdata(-values if higher_is_better else values, method="min")
        out.update({name: int(r) for name, r in zip(valid, ranks)})
    return out


def kendall_tau(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """Kendall's tau-b between two scorings of the same items (scipy; None if undefined: < 2 items or all tied)."""
    from scipy.stats import kendalltau

    keys = [k for k in a if k in b and a[k] is not None and b[k] is not None]
    if len(keys) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant scoring: tau is undefined (NaN), reported as None
        tau = kendalltau([a[k] for k in keys], [b[k] for k in keys], variant="b").statistic
    return None if not math.isfinite(tau) else float(tau)


def metric_key(name: str) -> str:
    """A name as one part of a metric key, safe for tracking stores ("char+CAN" -> "char_CAN")."""
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in name)


def swapped_pairs(rank_a: Mapping[str, int | None], rank_b: Mapping[str, int | None]) -> list[tuple[str, str]]:
    """Pairs (x, y) ordered x above y under ``rank_a`` but not under ``rank_b`` (or vice versa)."""
    keys = [k for k in rank_a if rank_a[k] is not None and rank_b.get(k) is not None]
    out = []
    for i, x in enumerate(keys):
        for y in keys[i + 1 :]:
            if np.sign(rank_a[x] - rank_a[y]) != np.sign(rank_b[x] - rank_b[y]):
                out.append((x, y) if rank_a[x] <= rank_a[y] else (y, x))
    return out


# --------------------------------------------------------------------------- span extraction (CMRC2018)

# The official CMRC2018 punctuation list (full-width Chinese and a few ASCII marks; "……" is
# taken per character), plus every ASCII punctuation mark.
CMRC_PUNCTUATION = frozenset("-:_*^/\\~`+=，。：？！“”；’《》…·、「」（）－～『』") | frozenset(string.punctuation)


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF


def cmrc_segments(text: str) -> list[str]:
    """CMRC2018 "mixed segmentation", punctuation removed: tokens of the lower-cased text.

    Each CJK character is one token; a run of other characters (ASCII letters and digits,
    or any other non-space, non-punctuation character) is one token; whitespace and the
    punctuation marks of :data:`CMRC_PUNCTUATION` end a run and are dropped.
    """
    out: list[str] = []
    run: list[str] = []
    for ch in text.lower():
        if _is_cjk(ch) or ch in CMRC_PUNCTUATION or ch.isspace():
            if run:
                out.append("".join(run))
                run = []
            if _is_cjk(ch):
                out.append(ch)
        else:
            run.append(ch)
    if run:
        out.append("".join(run))
    return out


def cmrc_normalize(text: str) -> str:
    """The text compared for CMRC2018 exact match: lower-cased, punctuation and whitespace removed."""
    return "".join(ch for ch in text.lower() if ch not in CMRC_PUNCTUATION and not ch.isspace())


def _longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run shared by the token lists ``a`` and ``b``."""
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def cmrc_f1(prediction: str, gold: str) -> float:
    """One prediction against one gold answer: LCS precision/recall F1 over :func:`cmrc_segments`."""
    p, g = cmrc_segments(prediction), cmrc_segments(gold)
    common = _longest_common_substring(p, g)
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def cmrc2018_scores(predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Official CMRC2018 EM and F1 as fractions in [0, 1] (the published script reports x100).

    For each question of ``golds`` (id -> its gold answers): EM is 1 when the normalised
    prediction (:func:`cmrc_normalize`) equals a normalised gold answer; F1 is the best
    :func:`cmrc_f1` over the gold answers. A question without a prediction scores 0 on both;
    predictions for ids not in ``golds`` are ignored. Both are means over the questions.
    """
    if not golds:
        raise ValueError("cmrc2018_scores: no gold questions to score")
    em = f1 = 0.0
    for qid, answers in golds.items():
        if isinstance(answers, str) or not answers:
            raise ValueError(f"cmrc2018_scores: question {qid!r} needs a non-empty list of gold answers")
        pred = predictions.get(qid)
        if pred is None:
            continue
        norm = cmrc_normalize(pred)
        em += float(any(norm == cmrc_normalize(a) for a in answers))
        f1 += max(cmrc_f1(pred, a) for a in answers)
    return {"em": em / len(golds), "f1": f1 / len(golds)}


# --------------------------------------------------------------------------- entities (NER)


def _entity_set(row) -> set[tuple[str, int, int]]:
    out = set()
    for e in row:
        if isinstance(e, Mapping):
            out.add((str(e["type"]), int(e["start"]), int(e["end"])))
        else:
            t, s, end = e
            out.add((str(t), int(s), int(end)))
    return out


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def entity_scores(pred: Sequence, gold: Sequence) -> dict:
    """Entity-level micro precision, recall and F1 (exact (type, start, end) match), plus per type.

    ``pred`` and ``gold`` hold one collection of entities per row, each entity a
    ``(type, start, end)`` tuple or a dict with those keys (extra keys such as ``text`` are
    ignored; duplicates within a row count once). Returns {"precision", "recall", "f1",
    "per_type": {type: {"precision", "recall", "f1", "support"}}} with support the number of
    gold entities of the type; a ratio with a zero denominator is 0, and F1 is 0 when
    precision + recall is 0.
    """
    if len(pred) != len(gold):
        raise ValueError(f"entity_scores: {len(pred)} predicted rows but {len(gold)} gold rows")
    tp: Counter = Counter()
    n_pred: Counter = Counter()
    n_gold: Counter = Counter()
    for p_row, g_row in zip(pred, gold):
        p, g = _entity_set(p_row), _entity_set(g_row)
        n_pred.update(t for t, _, _ in p)
        n_gold.update(t for t, _, _ in g)
        tp.update(t for t, _, _ in p & g)
    precision, recall, f1 = _prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))
    per_type = {}
    for t in sorted(set(n_pred) | set(n_gold)):
        tp_, pp, gg = tp[t], n_pred[t], n_gold[t]
        p_, r_, f_ = _prf(tp_, pp, gg)
        per_type[t] = {"precision": p_, "recall": r_, "f1": f_, "support": gg}
    return {"precision": precision, "recall": recall, "f1": f1, "per_type": per_type}
