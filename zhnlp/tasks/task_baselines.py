"""The score a task gives for free: the majority-class or chance baseline of each leaderboard task.

A model at or below it has learnt nothing the label distribution does not give away (a collapsed
model predicts one class and lands exactly on it). Per task kind, on the split the leaderboard scores:

* classification: **majority**, the share of the split's most frequent label (the best a constant
  prediction can do there), from the prepare report ``reports/prepare_clue/<task>.json[<split>].majority_share``;
  without it, **chance** 1/#labels from ``data/prepared/clue/<task>/task.json``;
* multiple choice (C3) and idiom cloze (CHID): **chance**, the mean of 1/#choices over the split's rows
  (``choices`` / ``candidates`` in ``data/prepared/clue/<task>/<split>.parquet``): a uniform guess;
* span extraction (EM) and NER (entity F1): none; there is no free answer, and the non-neural floor
  (the ``tfidf`` row) is the reference instead.

Each baseline is ``{"value": fraction, "kind": "majority" | "chance", "source": where it came from}`` or None.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from zhnlp.errors import UserError

MARGIN = 5e-5  # prepare reports round majority_share to 4 decimals: a score within that is "at" the baseline
BASELINE_TITLES = {
    "majority": "majority class (share of the split's most frequent label)",
    "chance": "chance (1/#labels, or mean 1/#choices)",
}
NO_BASELINE = {"span_extraction": "EM", "ner": "entity F1"}
CHOICE_COLUMNS = {"multiple_choice": "choices", "idiom_cloze": "candidates"}


def task_baselines(root: Path, tasks: Sequence[str], splits: Mapping[str, str], kinds: Mapping[str, str]) -> tuple[dict, list[str]]:
    """({task: baseline or None}, notes) for the leaderboard's tasks on their scored splits."""
    out, missing = {}, []
    for task in tasks:
        split, kind = splits.get(task), kinds.get(task, "classification")
        out[task] = None if split is None or kind in NO_BASELINE else _baseline(Path(root), task, split, kind)
        if out[task] is None and kind not in NO_BASELINE:
            missing.append(task)
    notes = []
    if missing:
        notes.append(f"no majority/chance baseline for {', '.join(missing)}: reports/prepare_clue/<task>.json and "
                     "data/prepared/clue/<task>/ do not give it; those cells are not marked")
    return out, notes


def at_or_below(score: float | None, baseline: dict | None) -> bool:
    """Whether ``score`` is at or below the baseline (False without one)."""
    return baseline is not None and score is not None and score <= baseline["value"] + MARGIN


def _baseline(root: Path, task: str, split: str, kind: str) -> dict | None:
    if kind == "classification":
        block = _get(_json(root / "reports" / "prepare_clue" / f"{task}.json"), split)
        share = _get(block, "majority_share")
        if _fraction(share):
            return {"value": float(share), "kind": "majority", "source": f"reports/prepare_clue/{task}.json[{split}].majority_share"}
        labels = _get(_json(root / "data" / "prepared" / "clue" / task / "task.json"), "labels")
        if isinstance(labels, list) and labels:
            return {"value": 1 / len(labels), "kind": "chance", "source": f"1/{len(labels)} labels (data/prepared/clue/{task}/task.json)"}
        return None
    column = CHOICE_COLUMNS.get(kind)
    path = root / "data" / "prepared" / "clue" / task / f"{split}.parquet"
    if column is None or not path.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        if column not in pq.read_schema(path).names:
            return None
        counts = [len(c) for c in pq.read_table(path, columns=[column]).column(column).to_pylist() if c]
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable parquet file ({err})") from err
    if not counts:
        return None
    return {"value": sum(1 / n for n in counts) / len(counts), "kind": "chance",
            "source": f"mean 1/#{column} over {len(counts)} rows of data/prepared/clue/{task}/{split}.parquet"}


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from err


def _get(obj, key):
    return obj.get(key) if isinstance(obj, dict) else None


def _fraction(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
