"""Scores, aggregate means, calibration bins and rankings: the one owner of every metric.

Classification: accuracy and macro-F1 (sklearn). Generation: corpus BLEU (sacrebleu) and
distinct-n. Aggregation: power means. Calibration: reliability bins and ECE. Rankings:
competition ranks and Kendall's tau-b (scipy).

Power means (techniques.md §2): M_γ(s) = ((1/T) Σ s_t^γ)^(1/γ); γ=1 arithmetic, γ→0
geometric, γ=-1 harmonic, γ=±inf max/min. M_γ is non-decreasing in γ.
"""

from __future__ import annotations

import math
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


def plot_reliability(curves: Mapping[str, dict], path, title: str = "") -> None:
    """PNG reliability diagram: one line per entry of ``curves`` (name -> reliability_bins output)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="perfect calibration")
    for name, rel in curves.items():
        pts = [(b["confidence"], b["accuracy"]) for b in rel["bins"] if b["count"]]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", label=f"{name} (ECE {rel['ece']:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)


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
