"""CLUENER2020 fine-grained NER: a streaming reader to :data:`SCHEMA` rows.

The official files are JSON lines ``{"text": ..., "label": {type: {entity text: [[start, end], ...]}}}``
with INCLUSIVE ``end`` (kept so in the rows); the unlabelled test file has ``{"id", "text"}``.
Entities are flattened and sorted by (start, end, type). Checked per entity: the type is one of the
task's ``labels`` (params), ``0 <= start <= end``, ``text[start:end + 1]`` is the entity text, no
entity listed twice; any failure makes the row bad. Nested or overlapping entities are kept and
counted as ``overlapping_entities`` (real: train line 1507, two companies inside a book title), so a BIO
tagger must choose between them.
The id is the row's ``id`` field, else its 0-based line index.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from zhnlp.data.clue import UNLABELLED_SPLITS, TaskSpec, id_field, text_field
from zhnlp.data.rows import RowError, RowPolicy, iter_json_lines

__all__ = ["SCHEMA", "ENTITY", "MAX_ENTITIES", "iter_split", "row_chars"]

ENTITY = pa.struct(
    [
        pa.field("type", pa.string(), nullable=False),
        pa.field("start", pa.int32(), nullable=False),
        pa.field("end", pa.int32(), nullable=False),  # inclusive
        pa.field("text", pa.string(), nullable=False),
    ]
)
SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("entities", pa.list_(ENTITY), nullable=False),  # sorted by (start, end, type); [] unlabelled
    ]
)
MAX_ENTITIES = 1024  # entities of one row (real: at most 10)


def iter_split(
    paths: Sequence[Path], split: str, policy: RowPolicy, spec: TaskSpec, counters: Counter | None = None
) -> Iterator[dict]:
    """Stream the split's files (in list order) as schema rows; bad rows go to the policy.

    ``counters["overlapping_entities"]`` counts kept entities that overlap an earlier one of their row.
    """
    labelled = split not in UNLABELLED_SPLITS
    types = frozenset(spec.labels)
    counters = Counter() if counters is None else counters
    for path in paths:
        for line, obj in iter_json_lines(path, policy):
            try:
                row = _row(obj, types, labelled, default_id=str(line - 1))
            except RowError as err:
                policy.reject(path, line, str(err), obj)
                continue
            reach = -1
            for e in row["entities"]:  # sorted by start
                if e["start"] <= reach:
                    counters["overlapping_entities"] += 1
                reach = max(reach, e["end"])
            yield row


def row_chars(row: dict) -> int:
    return len(row["text"])


def _row(obj: dict, types: frozenset[str], labelled: bool, default_id: str) -> dict:
    rid = id_field(obj.get("id", default_id), "id")
    text = text_field(obj.get("text"), "text")
    label = obj.get("label")
    if label is None:
        if labelled:
            raise RowError("missing field: label")
        return {"id": rid, "text": text, "entities": []}
    return {"id": rid, "text": text, "entities": _entities(label, text, types)}


def _entities(label: Any, text: str, types: frozenset[str]) -> list[dict]:
    if not isinstance(label, dict):
        raise RowError(f"mistyped field: label: expected an object of type -> entities, got {type(label).__name__}")
    out: list[dict] = []
    for etype, by_text in label.items():
        if etype not in types:
            raise RowError(f"unknown label: {etype[:40]!r} is not one of the {len(types)} entity types")
        if not isinstance(by_text, dict):
            raise RowError(f"mistyped field: label.{etype}: expected an object of entity text -> spans")
        for etext, spans in by_text.items():
            if not isinstance(spans, list):
                raise RowError(f"mistyped field: label.{etype}.{etext[:40]}: expected a list of [start, end]")
            for span in spans:
                if len(out) >= MAX_ENTITIES:
                    raise RowError(f"too_long: label: over MAX_ENTITIES={MAX_ENTITIES} entities")
                start, end = _span(span, etype, etext)
                if text[start : end + 1] != etext:
                    got = text[start : end + 1][:40]
                    raise RowError(f"entity mismatch: {etype} {etext[:40]!r} at [{start}, {end}] reads {got!r}")
                out.append({"type": etype, "start": start, "end": end, "text": etext})
    out.sort(key=lambda e: (e["start"], e["end"], e["type"]))
    for a, b in zip(out, out[1:]):
        if (a["start"], a["end"], a["type"]) == (b["start"], b["end"], b["type"]):
            raise RowError(f"duplicate entity: {a['type']} [{a['start']}, {a['end']}] is listed twice")
    return out


def _span(span: Any, etype: str, etext: str) -> tuple[int, int]:
    ok = isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in span)
    if not ok:
        raise RowError(f"mistyped field: label.{etype}.{etext[:40]}: span {str(span)[:40]} is not [start, end] integers")
    start, end = span
    if not 0 <= start <= end:
        raise RowError(f"entity mismatch: {etype} {etext[:40]!r}: span [{start}, {end}] needs 0 <= start <= end")
    return start, end
