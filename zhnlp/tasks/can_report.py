"""What CAN did to a set of predictions: accuracy before and after, on the confident and the
uncertain rows, and the predictions it fixed and broke (the ``can`` stage's metrics)."""

from __future__ import annotations

import numpy as np

from zhnlp.metrics import accuracy
from zhnlp.tasks.can import can_apply


def summarize(before: np.ndarray, after: np.ndarray, uncertain: np.ndarray, labels) -> dict:
    """Accuracy before/after, overall and on the confident and uncertain rows (None when a subset is empty)."""
    y = np.asarray(labels)
    if y.shape != (before.shape[0],):
        raise ValueError(f"labels must have one entry per row: {before.shape[0]} rows, labels shape {y.shape}")
    pred_b = before.argmax(axis=1)
    pred_a = after.argmax(axis=1)
    right_b = pred_b == y
    right_a = pred_a == y
    conf = ~uncertain

    def acc(mask_right, subset):
        return float(mask_right[subset].mean()) if subset.any() else None

    n = int(y.shape[0])
    return {
        "rows": n,
        "uncertain_rows": int(uncertain.sum()),
        "uncertain_share": float(uncertain.mean()) if n else None,
        "accuracy_before": accuracy(y, pred_b) if n else None,
        "accuracy_after": accuracy(y, pred_a) if n else None,
        "accuracy_confident": acc(right_b, conf),
        "accuracy_uncertain_before": acc(right_b, uncertain),
        "accuracy_uncertain_after": acc(right_a, uncertain),
        "changed_predictions": int((pred_a != pred_b).sum()),
        "fixed": int((right_a & ~right_b).sum()),  # wrong before, right after
        "broken": int((right_b & ~right_a).sum()),  # right before, wrong after
    }


def can_report(probs, prior, labels, **kw) -> dict:
    """Run CAN and return the diagnostics of ``summarize`` plus the reference used."""
    res = can_apply(probs, prior, **kw)
    P = np.asarray(probs, dtype=np.float64)
    return summarize(P, res.probs, res.uncertain, labels) | {"reference": res.reference}
