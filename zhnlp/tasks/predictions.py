"""The predictions folder of a CLUE classifier: the one owner of its file format.

``data/predictions/clue/<task>/<model>/`` (written by ``finetune_clue``; ``can`` writes the
same layout under ``data/predictions_can``):

- ``<split>.parquet`` per labelled split, :data:`PREDICTION_SCHEMA`: ``id``, gold ``label_id``,
  ``pred_id`` (the argmax of probs) and ``probs`` (float64 over labels.json, each row sums to 1);
- ``meta.json``: model, task, labels, ``train_label_counts`` (the CAN prior), kind.

:func:`write_predictions` writes a split, :func:`read_predictions` reads ids and probabilities
back, :func:`load_predictions` reads and checks a split against the task's label count, and
:func:`replace_probs` rewrites a split with adjusted probabilities (CAN), schema unchanged.
A file that breaks the contract is a :class:`PredictionError` naming the file and the row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zhnlp.errors import UserError

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("label_id", pa.int32(), nullable=False),  # gold label
        pa.field("pred_id", pa.int32(), nullable=False),  # argmax of probs
        pa.field("probs", pa.list_(pa.float64()), nullable=False),  # over labels.json, sums to 1
    ]
)
META_FILE = "meta.json"


class PredictionError(UserError):
    """A predictions file or meta.json that does not follow the contract."""


def predictions_table(ids: Sequence[str], probs: np.ndarray, gold: Sequence[int]) -> pa.Table:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(ids) != probs.shape[0] or len(gold) != len(ids):
        raise ValueError(f"{len(ids)} ids and {len(gold)} gold labels but probs of shape {probs.shape}")
    if len(ids) and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("probability rows must sum to 1")
    return pa.Table.from_pydict(
        {
            "id": [str(i) for i in ids],
            "label_id": np.asarray(gold, dtype=np.int32),
            "pred_id": probs.argmax(axis=1).astype(np.int32) if len(ids) else np.zeros(0, np.int32),
            "probs": [row.tolist() for row in probs],
        },
        schema=PREDICTION_SCHEMA,
    )


def write_predictions(path: str | Path, ids: Sequence[str], probs: np.ndarray, gold: Sequence[int]) -> Path:
    """One labelled split's predictions: ``id``, gold ``label_id``, ``pred_id`` (argmax) and ``probs``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(predictions_table(ids, probs, gold), path)
    return path


def read_predictions(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``(ids, probs)`` of a predictions file; probs as an (n, labels) float64 array."""
    table = pq.read_table(path, schema=PREDICTION_SCHEMA)
    probs = table.column("probs").to_pylist()
    return table.column("id").to_pylist(), np.asarray(probs, dtype=np.float64).reshape(len(probs), -1)


def load_predictions(path: str | Path, n_classes: int) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """``(table, label_id as int64, probs as N×m float64)``, checked: columns, row lengths, gold labels.

    Only ``id``, ``label_id`` and ``probs`` are required (``pred_id`` is derived from probs).
    """
    table = pq.read_table(path)
    missing = [c for c in ("id", "label_id", "probs") if c not in table.column_names]
    if missing:
        raise PredictionError(f"{path}: missing columns {missing} (need id, label_id, probs)")
    probs_col = table.column("probs").combine_chunks()
    if not (pa.types.is_list(probs_col.type) or pa.types.is_large_list(probs_col.type)):
        raise PredictionError(f"{path}: column probs must be list<float64>; got {probs_col.type}")
    if probs_col.null_count:
        raise PredictionError(f"{path}: column probs has {probs_col.null_count} null rows")
    lengths = pc.list_value_length(probs_col).to_numpy(zero_copy_only=False)
    if lengths.size and (lengths != n_classes).any():
        row = int(np.argmax(lengths != n_classes))
        raise PredictionError(f"{path}: row {row} has {lengths[row]} probabilities; the task has {n_classes} labels")
    values = probs_col.flatten()
    if values.null_count:
        raise PredictionError(f"{path}: column probs contains null values")
    probs = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False).reshape(len(table), n_classes)
    labels_col = table.column("label_id")
    if labels_col.null_count:
        raise PredictionError(f"{path}: label_id has {labels_col.null_count} nulls (gold labels are required)")
    labels = labels_col.to_numpy().astype(np.int64)
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        row = int(np.argmax(bad))
        raise PredictionError(f"{path}: row {row} has label_id {labels[row]}, outside [0, {n_classes})")
    return table, labels, probs


def replace_probs(table: pa.Table, probs: np.ndarray, path: str | Path) -> Path:
    """Write ``table`` with new ``probs`` (and ``pred_id``, where present, their argmax); schema unchanged."""
    n, m = probs.shape
    offsets = pa.array(np.arange(0, (n + 1) * m, m, dtype=np.int32))
    field = table.schema.field("probs")
    column = pa.ListArray.from_arrays(offsets, pa.array(probs.ravel(), type=pa.float64())).cast(field.type)
    out = table.set_column(table.column_names.index("probs"), field, column)
    if "pred_id" in out.column_names:
        index = out.column_names.index("pred_id")
        pred = out.schema.field("pred_id")
        out = out.set_column(index, pred, pa.array(probs.argmax(axis=1) if n else np.zeros(0, np.int64)).cast(pred.type))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(out, path)
    return path


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """A model's ``meta.json``, with ``labels`` checked to list at least two labels."""
    path = Path(model_dir) / META_FILE
    if not path.is_file():
        raise PredictionError(f"{model_dir}: no {META_FILE}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PredictionError(f"{path}: not valid JSON ({err})") from err
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, list) or len(labels) < 2:
        raise PredictionError(f"{path}: labels must list the task's labels; got {labels!r}")
    return meta


def training_prior(meta: dict, n_classes: int) -> tuple[np.ndarray, bool]:
    """Class frequencies of the training labels; (+1 smoothed if a class has no example, whether it was)."""
    counts = meta.get("train_label_counts")
    if not isinstance(counts, list) or len(counts) != n_classes:
        raise PredictionError(f"meta.json train_label_counts must list {n_classes} class counts; got {counts!r}")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in counts):
        raise PredictionError(f"meta.json train_label_counts must be numbers; got {counts!r}")
    c = np.asarray(counts, dtype=np.float64)
    if not np.isfinite(c).all() or (c < 0).any() or c.sum() <= 0:
        raise PredictionError(f"meta.json train_label_counts must be non-negative counts, not all zero; got {counts!r}")
    smoothed = bool((c == 0).any())
    if smoothed:
        c = c + 1.0
    return c / c.sum(), smoothed
