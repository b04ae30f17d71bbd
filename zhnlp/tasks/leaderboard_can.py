"""What stands behind each ``+CAN`` score on the leaderboard, per model and classification task.

From reports/can/<task>.json (zhnlp.tasks.can_report, the can stage), on the split the leaderboard
scores: the reference set CAN re-normalised against (its size, the minimum size, its accuracy and the
flag for one too small), what Su's fixed defaults did (accuracy before and after, predictions fixed and
broken: these give the ``+CAN`` rows), and the τ/α picked on dev with its test_public accuracy, the
only unbiased figure for it. Reports written before these fields existed give None for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

KEYS = ("classes", "reference_min_rows", "accuracy_before", "accuracy_after", "fixed", "broken", "tau", "alpha")


def can_summary(reports: Mapping[str, object], models: Sequence[str], splits: Mapping[str, str]) -> dict:
    """{model: {task: entry}} for every task whose CAN report applies (classification) and has the model's split."""
    out: dict[str, dict] = {}
    for task, report in reports.items():
        split = splits.get(task)
        if not isinstance(report, dict) or report.get("applicable") is False or split is None:
            continue
        for model in models:
            entry = report.get(model)
            block = entry.get(split) if isinstance(entry, dict) else None
            if not isinstance(block, dict):
                continue
            out.setdefault(model, {})[task] = _entry(block, split) | {"dev_selected": _selected(entry.get("dev_selected"))}
    return out


def _entry(block: dict, split: str) -> dict:
    rows = block.get("reference_rows")
    if rows is None and isinstance(block.get("rows"), int) and isinstance(block.get("uncertain_rows"), int):
        rows = block["rows"] - block["uncertain_rows"]  # reports without the field: the confident rows
    return {
        "split": split,
        "reference_rows": rows,
        "reference_accuracy": block.get("reference_accuracy", block.get("accuracy_confident")),
        "reference_too_small": bool(block.get("reference_too_small", False)),
        **{k: block.get(k) for k in KEYS},
    }


def _selected(sel) -> dict | None:
    if not isinstance(sel, dict):
        return None
    test = sel.get("test_public")
    return {
        "tau": sel.get("tau"),
        "alpha": sel.get("alpha"),
        "test_public": _entry(test, "test_public") if isinstance(test, dict) else None,
    }


def can_counts(summary: Mapping[str, Mapping[str, dict]]) -> dict[str, int]:
    """Model–task pairs where Su's defaults helped, hurt or left the accuracy alone, and those flagged."""
    counts = {"pairs": 0, "helped": 0, "hurt": 0, "unchanged": 0, "reference_too_small": 0}
    for per_task in summary.values():
        for e in per_task.values():
            before, after = e.get("accuracy_before"), e.get("accuracy_after")
            if before is None or after is None:
                continue
            counts["pairs"] += 1
            counts["helped" if after > before else "hurt" if after < before else "unchanged"] += 1
            counts["reference_too_small"] += bool(e["reference_too_small"])
    return counts
