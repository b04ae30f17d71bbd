"""CLUE and FewCLUE classification tasks: a task registry and a streaming reader.

A task is described by a :class:`TaskSpec` (built from its ``params.yaml`` entry),
so a new task of a known shape (single sentence, sentence pair, keywords plus
abstract, coreference spans) needs no code. Every split becomes rows of
:data:`CLUE_SCHEMA`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from zhnlp.rows import RowError, RowPolicy, iter_json_lines

CLUE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text_a", pa.string(), nullable=False),
        pa.field("text_b", pa.string()),  # second sentence, or the abstract (CSL)
        pa.field("label", pa.string()),  # null in the unlabelled test split
        pa.field("label_id", pa.int32()),  # index into the task's label list
        pa.field("span1_text", pa.string()),  # coreference spans (WSC), else null
        pa.field("span1_index", pa.int32()),
        pa.field("span2_text", pa.string()),
        pa.field("span2_index", pa.int32()),
    ]
)

# Split name -> file name, per official layout; tried in this order when layout is "auto".
DEFAULT_LAYOUTS: dict[str, dict[str, str]] = {
    "fewclue": {
        "train": "train_few_all.json",
        "dev": "dev_few_all.json",
        "test_public": "test_public.json",
        "test": "test.json",
    },
    "clue": {"train": "train.json", "dev": "dev.json", "test": "test.json"},
}
REQUIRED_SPLITS = ("train", "dev")
UNLABELLED_SPLITS = ("test",)
_SPEC_KEYS = {"dir", "layout", "text_a", "text_b", "spans", "label", "id", "labels", "list_join", "drop_labels"}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    text_a: str  # dotted field path; a list of strings is joined with list_join
    labels: tuple[str, ...]
    text_b: str | None = None
    spans: str | None = None  # path of an object with span1_text/index, span2_text/index
    label: str = "label"
    id: str = "id"
    dir: str = ""
    layout: str = "auto"
    list_join: str = "；"
    drop_labels: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_params(cls, name: str, entry: Mapping[str, Any]) -> "TaskSpec":
        unknown = set(entry) - _SPEC_KEYS
        if unknown:
            raise ValueError(f"clue task {name!r}: unknown keys {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}")
        for key in ("text_a", "labels"):
            if key not in entry:
                raise ValueError(f"clue task {name!r}: missing required key {key!r}")
        labels = tuple(str(x) for x in entry["labels"])
        if len(set(labels)) != len(labels) or len(labels) < 2:
            raise ValueError(f"clue task {name!r}: labels must be at least 2 distinct values")
        kwargs = dict(entry)
        kwargs["labels"] = labels
        kwargs["drop_labels"] = tuple(str(x) for x in entry.get("drop_labels", ()))
        kwargs.setdefault("dir", name)
        return cls(name=name, **kwargs)


def split_files(task_dir: Path, spec: TaskSpec, layouts: Mapping[str, Mapping[str, str]] = DEFAULT_LAYOUTS) -> dict[str, Path]:
    """Split name -> existing file for the task's layout (auto-detected from the train file)."""
    names = list(layouts) if spec.layout == "auto" else [spec.layout]
    for name in names:
        if name not in layouts:
            raise ValueError(f"clue task {spec.name!r}: unknown layout {name!r}; known: {sorted(layouts)}")
        files = {split: task_dir / fname for split, fname in layouts[name].items()}
        if files["train"].exists():
            missing = [str(files[s]) for s in REQUIRED_SPLITS if not files[s].exists()]
            if missing:
                raise FileNotFoundError(f"clue task {spec.name!r} ({name} layout): missing {missing}")
            return {split: path for split, path in files.items() if path.exists()}
    tried = [str(task_dir / layouts[n]["train"]) for n in names]
    raise FileNotFoundError(f"clue task {spec.name!r}: no train file found, tried {tried}")


def iter_split(path: Path, spec: TaskSpec, split: str, policy: RowPolicy) -> Iterator[dict]:
    """Stream one split file as schema rows; bad rows go to the policy."""
    labelled = split not in UNLABELLED_SPLITS
    for line, obj in iter_json_lines(path, policy):
        try:
            row = _to_row(obj, spec, labelled, default_id=str(line - 1))
        except RowError as err:
            policy.reject(path, line, str(err), obj)
            continue
        if row is None:
            policy.drop(path, line, f"dropped_label: {_get(obj, spec.label)!r} is in drop_labels", obj)
            continue
        yield row


def _to_row(obj: dict, spec: TaskSpec, labelled: bool, default_id: str) -> dict | None:
    row = {
        "id": _id(obj, spec.id, default_id),
        "text_a": _text(obj, spec.text_a, spec.list_join),
        "text_b": _text(obj, spec.text_b, spec.list_join) if spec.text_b else None,
        "label": None,
        "label_id": None,
    }
    row.update(_spans(obj, spec.spans, row["text_a"]) if spec.spans else dict.fromkeys(_SPAN_COLUMNS))
    raw_label = _get(obj, spec.label)
    if raw_label is _MISSING or raw_label is None:
        if labelled:
            raise RowError(f"missing field: {spec.label}")
        return row
    if isinstance(raw_label, bool) or not isinstance(raw_label, (str, int)):
        raise RowError(f"mistyped field: {spec.label}: expected string or integer, got {type(raw_label).__name__}")
    label = str(raw_label)
    if label in spec.drop_labels:
        return None
    if label not in spec.labels:
        raise RowError(f"unknown label: {label!r} is not one of the {len(spec.labels)} labels of {spec.name}")
    row["label"], row["label_id"] = label, spec.labels.index(label)
    return row


_MISSING = object()
_SPAN_COLUMNS = ("span1_text", "span1_index", "span2_text", "span2_index")


def _get(obj: dict, dotted: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _id(obj: dict, key: str, default: str) -> str:
    value = _get(obj, key)
    if value is _MISSING:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RowError(f"mistyped field: {key}: expected string or integer, got {type(value).__name__}")
    return str(value)


def _text(obj: dict, key: str, list_join: str) -> str:
    value = _get(obj, key)
    if value is _MISSING or value is None:
        raise RowError(f"missing field: {key}")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = list_join.join(v.strip() for v in value if v.strip())
    if not isinstance(value, str):
        raise RowError(f"mistyped field: {key}: expected string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(f"empty text: {key}")
    return value  # kept as is, so span offsets stay valid


def _spans(obj: dict, key: str, text: str) -> dict:
    target = _get(obj, key)
    if not isinstance(target, dict):
        raise RowError(f"missing field: {key}" if target is _MISSING else f"mistyped field: {key}: expected object")
    out = {}
    for n in ("1", "2"):
        span, index = target.get(f"span{n}_text"), target.get(f"span{n}_index")
        if not isinstance(span, str) or not span or isinstance(index, bool) or not isinstance(index, int):
            raise RowError(f"mistyped field: {key}.span{n}: expected span{n}_text (string) and span{n}_index (integer)")
        if text[index : index + len(span)] != span:
            raise RowError(f"span mismatch: {key}.span{n}_text {span!r} is not at index {index}")
        out[f"span{n}_text"], out[f"span{n}_index"] = span, index
    return out
