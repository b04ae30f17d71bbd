"""CLUE classification data: the prepared splits, model inputs as the published baselines build them, labels.

Inputs follow the published CLUE baselines (bojone/CLUE-bert4keras, techniques §5): single
sentence ``text_a``; pairs and CSL ``text_a`` + ``text_b``; WSC one sequence with span1 wrapped as
``_span1_`` and span2 as ``[span2]`` (:func:`mark_spans`). Shared by the transformer classifier
(:mod:`zhnlp.tasks.classification`) and the TF-IDF baseline; no torch here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from zhnlp.metrics import accuracy, macro_f1

SPLITS = ("train", "dev", "test_public", "test")
LABELLED_EVAL_SPLITS = ("dev", "test_public")
SPAN1_MARKERS = ("_", "_")  # the candidate noun phrase: _x_
SPAN2_MARKERS = ("[", "]")  # the pronoun: [y]

# ---------------------------------------------------------------------------------------------
# inputs


def mark_spans(text: str, spans: Sequence[tuple[int, str, tuple[str, str]]]) -> str:
    """Wrap each ``(index, span_text, (open, close))`` span of ``text`` in its markers.

    Markers are placed at the original offsets (inserting right to left), so spans may
    even touch or nest. A span that is not at its index raises ValueError.
    """
    inserts: dict[int, tuple[list[str], list[str]]] = {}
    for index, span, (open_, close) in spans:
        if index < 0 or text[index : index + len(span)] != span:
            raise ValueError(f"span {span!r} is not at index {index} of {text!r}")
        inserts.setdefault(index, ([], []))[1].append(open_)
        inserts.setdefault(index + len(span), ([], []))[0].insert(0, close)
    out = text
    for pos in sorted(inserts, reverse=True):  # right to left: earlier offsets stay valid
        closes, opens = inserts[pos]
        out = out[:pos] + "".join(closes) + "".join(opens) + out[pos:]
    return out


def wsc_text(row: Mapping[str, Any]) -> str:
    """The WSC input: span1 as ``_x_`` and the pronoun (span2) as ``[y]``, in place."""
    return mark_spans(
        row["text_a"],
        [
            (row["span1_index"], row["span1_text"], SPAN1_MARKERS),
            (row["span2_index"], row["span2_text"], SPAN2_MARKERS),
        ],
    )


def input_texts(row: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(first, second)`` texts of one prepared row; second is None for single-sequence tasks."""
    if row.get("span1_text") is not None:
        return wsc_text(row), None
    return row["text_a"], row.get("text_b")


def split_inputs(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str] | None]:
    """Firsts and seconds (None for a single-sequence task) of a list of rows, checked for consistency."""
    pairs = [input_texts(r) for r in rows]
    firsts = [a for a, _ in pairs]
    seconds = [b for _, b in pairs]
    has_second = [b is not None for b in seconds]
    if any(has_second) and not all(has_second):
        raise ValueError("rows mix single texts and text pairs (text_b is null in some rows only)")
    return firsts, (seconds if rows and all(has_second) else None)


# ---------------------------------------------------------------------------------------------
# prepared data, metrics, prediction files


@dataclass
class TaskData:
    """A prepared CLUE task: its labels and the splits present (rows as dicts)."""

    labels: list[str]
    splits: dict[str, list[dict]]

    @classmethod
    def load(cls, task_dir: str | Path) -> "TaskData":
        task_dir = Path(task_dir)
        labels_path = task_dir / "labels.json"
        if not labels_path.is_file():
            raise FileNotFoundError(f"{labels_path} not found (run prepare_clue first)")
        labels = [str(x) for x in json.loads(labels_path.read_text(encoding="utf-8"))]
        splits = {s: read_split(task_dir / f"{s}.parquet") for s in SPLITS if (task_dir / f"{s}.parquet").is_file()}
        for required in ("train", "dev"):
            if required not in splits:
                raise FileNotFoundError(f"{task_dir / (required + '.parquet')} not found")
        return cls(labels, splits)

    def label_counts(self, split: str = "train") -> list[int]:
        """Rows per label (labels.json order) in a labelled split: the prior for CAN."""
        return label_counts(self.splits[split], len(self.labels))


def read_split(path: str | Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def label_ids(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    ids = [r["label_id"] for r in rows]
    if any(i is None for i in ids):
        raise ValueError("rows without label_id cannot be used for training or evaluation")
    return np.asarray(ids, dtype=np.int64)


def label_counts(rows: Sequence[Mapping[str, Any]], num_labels: int) -> list[int]:
    return np.bincount(label_ids(rows), minlength=num_labels).astype(int).tolist()


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1 of :mod:`zhnlp.metrics` (macro over the labels present in ``y_true`` or ``y_pred``); NaN for no rows."""
    if len(y_true) == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred)}


def evaluate_probs(rows: Sequence[Mapping[str, Any]], probs: np.ndarray) -> dict[str, float]:
    """``{"accuracy", "macro_f1", "rows"}`` of probability rows against the rows' label_id."""
    return classification_metrics(label_ids(rows), np.asarray(probs).argmax(axis=1)) | {"rows": len(rows)}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


