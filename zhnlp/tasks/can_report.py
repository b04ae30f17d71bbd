"""What CAN did to a set of predictions: accuracy before and after, on the confident and the
uncertain rows, the predictions it fixed and broke, and whether its reference set could carry it
(the ``can`` stage's metrics and its markdown report).

The *reference* is the set of confident rows (uncertainty < τ) every uncertain row is re-normalised
against (zhnlp.tasks.can). A weak model has few confident rows, and few of them right: CAN then
re-normalises against a handful of rows (or, with none, the identity matrix) and its corrections mean
nothing. :func:`reference_check` flags a reference below a minimum size; CAN is still applied and
reported, with the flag beside it.
"""

from __future__ import annotations

import numpy as np

from zhnlp.metrics import accuracy, macro_f1
from zhnlp.tasks.can import CanResult, can_apply


def summarize(before: np.ndarray, after: np.ndarray, uncertain: np.ndarray, labels) -> dict:
    """Accuracy before/after, overall and on the confident and uncertain rows (None when a subset is empty),
    and the reference (the confident rows): its size and accuracy."""
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
        "reference_rows": int(conf.sum()),
        "reference_accuracy": acc(right_b, conf),
    }


def reference_check(reference_rows: int, classes: int, min_rows: int) -> dict:
    """Whether a reference of ``reference_rows`` confident rows is too small (< ``min_rows``), with a warning."""
    too_small = reference_rows < min_rows
    if reference_rows == 0:
        warning = (f"no confident rows: CAN re-normalised against the identity matrix I_{classes}, not against data; "
                   f"its changes rest on no reference (min {min_rows} rows)")
    elif too_small:
        warning = (f"reference of {reference_rows} confident rows is below {min_rows} "
                   f"(max(can.min_reference, can.min_reference_per_class × {classes} classes)): "
                   "too few to estimate the column means CAN normalises to; applied anyway, flagged")
    else:
        warning = None
    return {"classes": classes, "reference_min_rows": min_rows, "reference_too_small": too_small, "reference_warning": warning}


def split_metrics(probs, prior, labels, *, k: int, tau: float, alpha: float, iters: int, min_rows: int) -> tuple[CanResult, dict]:
    """CAN on one split's probabilities: (the result, its metrics: ``summarize``, the settings, macro-F1
    before/after and ``reference_check``)."""
    P = np.asarray(probs, dtype=np.float64)
    res = can_apply(P, prior, k=k, tau=tau, alpha=alpha, iters=iters)
    y = np.asarray(labels)
    metrics = summarize(P, res.probs, res.uncertain, y) | {
        "k": k,
        "tau": float(tau),
        "alpha": float(alpha),
        "iters": iters,
        "macro_f1_before": macro_f1(y, P.argmax(axis=1)),
        "macro_f1_after": macro_f1(y, res.probs.argmax(axis=1)),
        "reference_identity": res.reference == "identity",
    }
    return res, metrics | reference_check(metrics["reference_rows"], P.shape[1], min_rows)


def can_report(probs, prior, labels, **kw) -> dict:
    """Run CAN and return the diagnostics of ``summarize`` plus the reference used."""
    res = can_apply(probs, prior, **kw)
    P = np.asarray(probs, dtype=np.float64)
    return summarize(P, res.probs, res.uncertain, labels) | {"reference": res.reference}


# --------------------------------------------------------------------------- markdown


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _ref(r: dict) -> str:
    mark = " †" if r.get("reference_too_small") else ""
    return f"{r['reference_rows']} / {r['reference_min_rows']}{mark}"


def _grid_text(values) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


def render_markdown(task: str, metrics: dict, fixed: dict, selection: dict | None = None) -> str:
    """The can stage's report of one task: Su's fixed defaults per model and split, the dev-picked τ/α
    (``selection``: {"tau_grid", "alpha_grid", "selected_by"}) and every reference warning."""
    lines = [
        f"# CAN on {task}",
        "",
        f"Reference = the split's confident rows (uncertainty < τ), which CAN re-normalises every uncertain row against. "
        "`ref rows / min` gives its size and the minimum, max(can.min_reference, can.min_reference_per_class × classes); "
        "† marks a reference below it (CAN is still applied, and flagged). Accuracies in %.",
        "",
        f"## Su's fixed defaults (k={fixed['k']}, τ={fixed['tau']:g}, α={fixed['alpha']:g}, iters={fixed['iters']})",
        "",
        "| model | split | rows | classes | ref rows / min | ref acc | uncertain | acc before → after | fixed / broken | acc uncertain before → after | ECE before → after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    warnings = []
    for model, entry in metrics.items():
        for split in ("dev", "test_public"):
            r = entry.get(split)
            if not isinstance(r, dict):
                continue
            lines.append(
                f"| {model} | {split} | {r['rows']} | {r['classes']} | {_ref(r)} | {_pct(r['reference_accuracy'])} | {r['uncertain_rows']} | "
                f"{_pct(r['accuracy_before'])} → {_pct(r['accuracy_after'])} | {r['fixed']} / {r['broken']} | "
                f"{_pct(r['accuracy_uncertain_before'])} → {_pct(r['accuracy_uncertain_after'])} | {r['ece_before']:.3f} → {r['ece_after']:.3f} |"
            )
            if r.get("reference_warning"):
                warnings.append(f"{model} {split} (Su's defaults): {r['reference_warning']}")
    if selection is not None:
        lines += [
            "",
            f"## τ and α picked on dev (τ ∈ {_grid_text(selection['tau_grid'])}, α ∈ {_grid_text(selection['alpha_grid'])})",
            "",
            f"Picked by {selection['selected_by']}. The dev columns are what the grid maximised (optimistic); "
            "**test_public is the only unbiased estimate** of the picked setting.",
            "",
            "| model | τ | α | dev before → after (selection) | test_public before → after | test_public ref rows / min | test_public ref acc | test_public fixed / broken |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for model, entry in metrics.items():
            sel = entry.get("dev_selected")
            if not isinstance(sel, dict):
                continue
            dev, test = sel.get("dev") or {}, sel.get("test_public")
            t = test or {}
            lines.append(
                f"| {model} | {sel['tau']:g} | {sel['alpha']:g} | {_pct(dev.get('accuracy_before'))} → {_pct(dev.get('accuracy_after'))} | "
                + (f"{_pct(t['accuracy_before'])} → {_pct(t['accuracy_after'])} | {_ref(t)} | {_pct(t['reference_accuracy'])} | {t['fixed']} / {t['broken']} |"
                   if test else "no test_public split: no unbiased estimate | – | – | – |")
            )
            for split in ("dev", "test_public"):
                if isinstance(sel.get(split), dict) and sel[split].get("reference_warning"):
                    warnings.append(f"{model} {split} (dev-picked τ={sel['tau']:g}, α={sel['alpha']:g}): {sel[split]['reference_warning']}")
    lines += ["", "## Reference warnings", ""] + ([f"- {w}" for w in warnings] or ["- none"])
    return "\n".join(lines) + "\n"
