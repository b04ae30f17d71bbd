"""The CLUE task kinds beyond classification: each kind's head, floor, official metric and output files.

A CLUE task is one of five kinds (``clue.tasks.<task>.kind``, :data:`zhnlp.data.clue.KINDS`).
Classification has its own path (probabilities for CAN, :mod:`zhnlp.tasks.classification`); the
other four share one shape, given here per kind by a :class:`TaskKind`:

==================  ======================  ==========================  ======================  ============
kind                task (CLUE)             head (transformers)         floor (non-neural)      score
==================  ======================  ==========================  ======================  ============
span_extraction     CMRC2018                QuestionAnswering, windows  question-overlap span   EM (and F1)
multiple_choice     C3                      MultipleChoice              TF-IDF choice match     accuracy
idiom_cloze         CHID                    MultipleChoice + assignment TF-IDF + assignment     accuracy
ner                 CLUENER                 TokenClassification (BIO)   training gazetteer      entity F1
==================  ======================  ==========================  ======================  ============

Every head and floor (:mod:`zhnlp.tasks.kind_models`) has ``predict(rows) -> list`` (an answer string,
a choice index, or a list of entity dicts per row); :meth:`TaskKind.score` turns predictions into the
official metrics (fractions), with ``score`` the headline figure the leaderboard ranks by. Prediction
files are JSON lines (``{"id", "prediction", "gold"}``), byte-stable for the same predictions. This
module imports no torch and no head, so the leaderboard can read the metric names from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from zhnlp.errors import UserError
from zhnlp.metrics import accuracy, cmrc2018_scores, entity_scores

SPLITS = ("train", "dev", "test_public", "test")


@dataclass(frozen=True)
class TaskKind:
    """One task kind: its headline metric (``metric``, titled ``title``), its gold answers and its scores."""

    name: str
    metric: str
    title: str

    def gold(self, row: Mapping[str, Any]) -> Any:
        if self.name == "span_extraction":
            return list(row["answers"] or [])
        if self.name == "ner":
            return [dict(e) for e in row["entities"] or []]
        return row["label_id"]

    def score(self, rows: Sequence[Mapping[str, Any]], predictions: Sequence[Any]) -> dict[str, Any]:
        """The official metrics of the kind over labelled rows, with ``score`` the headline one."""
        if len(rows) != len(predictions):
            raise ValueError(f"{len(rows)} rows but {len(predictions)} predictions")
        if self.name == "span_extraction":
            out = cmrc2018_scores({r["id"]: p for r, p in zip(rows, predictions)}, {r["id"]: self.gold(r) for r in rows})
        elif self.name == "ner":
            out = entity_scores([_entity_set(p) for p in predictions], [_entity_set(self.gold(r)) for r in rows])
        else:
            out = {"accuracy": accuracy([r["label_id"] for r in rows], list(predictions))}
        return {"score": out[self.metric], **out, "rows": len(rows)}


KIND_TABLE = {
    "span_extraction": TaskKind("span_extraction", "em", "EM"),
    "multiple_choice": TaskKind("multiple_choice", "accuracy", "Acc"),
    "idiom_cloze": TaskKind("idiom_cloze", "accuracy", "Acc"),
    "ner": TaskKind("ner", "f1", "F1"),
}
CLASSIFICATION = TaskKind("classification", "accuracy", "Acc")


def task_kind(name: str) -> TaskKind:
    """The :class:`TaskKind` named ``name`` (classification included, for its metric's name)."""
    if name == "classification":
        return CLASSIFICATION
    if name not in KIND_TABLE:
        raise UserError(f"unknown task kind {name!r}; known: classification, {', '.join(KIND_TABLE)}")
    return KIND_TABLE[name]


def _entity_set(entities: Sequence[Mapping[str, Any]]) -> set[tuple[str, int, int]]:
    return {(e["type"], int(e["start"]), int(e["end"])) for e in entities}


def load_task(data_dir: str | Path) -> tuple[dict, dict[str, list[dict]]]:
    """A prepared task: (``task.json``: kind and labels, {split: rows}) from ``data/prepared/clue/<task>``."""
    data_dir = Path(data_dir)
    info_path = data_dir / "task.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path} not found; run the prepare_clue stage first")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    splits = {s: pq.read_table(data_dir / f"{s}.parquet").to_pylist() for s in SPLITS if (data_dir / f"{s}.parquet").is_file()}
    for split in ("train", "dev"):
        if not splits.get(split):
            raise FileNotFoundError(f"{data_dir}/{split}.parquet is missing or empty; check the task's layout and carve in clue.tasks")
    return info, splits


def write_predictions(path: str | Path, kind: TaskKind, rows: Sequence[Mapping[str, Any]], predictions: Sequence[Any]) -> Path:
    """One ``{"id", "prediction", "gold"}`` JSON line per row (gold null for unlabelled rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row, pred in zip(rows, predictions):
            labelled = row.get("label_id") is not None or row.get("answers") or row.get("entities")
            record = {"id": row["id"], "prediction": pred, "gold": kind.gold(row) if labelled else None}
            fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    return path
