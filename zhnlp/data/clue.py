"""CLUE and FewCLUE classification tasks: a task registry and a streaming reader.

A task is described by a :class:`TaskSpec` (built from its ``params.yaml`` entry),
so a new task of a known shape (single sentence, sentence pair, keywords plus
abstract, coreference spans) needs no code. Every split becomes rows of
:data:`CLUE_SCHEMA`. The whole ``clue:`` section is read strictly by :class:`ClueParams`.

Strict rows: a text field must be a string, except a field named in the task's
``list_fields`` (CSL's keyword list), which may be a list of strings joined with
``list_join``. Each text field is at most ``MAX_FIELD_CHARS`` characters (a longer one
is a bad row ``too_long``); lines are capped by :data:`zhnlp.data.rows.MAX_LINE_BYTES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from zhnlp.config import ConfigError, check_name, choice, from_params, in_range, require_mapping
from zhnlp.data.rows import InputFileError, RowError, RowPolicy, iter_json_lines

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
# Task kinds: what a task's rows look like and which head and metric it gets (readers in zhnlp.data.<corpus>).
KINDS = ("classification", "span_extraction", "multiple_choice", "idiom_cloze", "ner")
REQUIRED_SPLITS = ("train", "dev")
UNLABELLED_SPLITS = ("test",)
MAX_FIELD_CHARS = 65_536  # one text field (real data: under 5,200 bytes a line)
MAX_LABEL_CHARS = 256


@dataclass(frozen=True)
class TaskSpec:
    name: str
    text_a: str = ""  # dotted field path (classification)
    labels: tuple[str, ...] = ()  # classification: the labels; ner: the entity types; else unused
    kind: str = "classification"  # one of KINDS
    text_b: str | None = None
    spans: str | None = None  # path of an object with span1_text/index, span2_text/index
    label: str = "label"
    id: str = "id"
    dir: str = ""
    layout: str = "auto"
    list_fields: tuple[str, ...] = ()  # text fields that may be a list of strings (CSL keyword)
    list_join: str = "；"
    drop_labels: tuple[str, ...] = field(default_factory=tuple)
    carve: Mapping[str, Any] = field(default_factory=dict)  # new splits cut from a shipped one (zhnlp.data.split_carving)

    @classmethod
    def from_params(cls, name: str, entry: Mapping[str, Any], where: str | None = None) -> "TaskSpec":
        """The task ``clue.tasks.<name>``; every mistake is a one-line ConfigError."""
        where = where or f"clue.tasks.{name}"
        check_name("clue.tasks", name)
        entry = dict(require_mapping(where, entry))
        for key in ("labels", "drop_labels"):  # YAML labels may be numbers: compared as strings
            if key in entry:
                values = entry[key] = _label_list(f"{where}.{key}", entry[key])
                if len(set(values)) != len(values):
                    raise ConfigError(f"{where}.{key}: {values!r} has repeated values; use distinct labels")
        return from_params(_SpecParams, entry, where, name=name).spec()


@dataclass(frozen=True)
class _SpecParams(TaskSpec):
    """TaskSpec as read from params (its checks; ``spec()`` turns it back into a TaskSpec)."""

    def validate(self, where: str) -> None:
        choice(f"{where}.kind", self.kind, KINDS)
        if self.kind == "classification" and not self.text_a:
            raise ConfigError(f"{where}.text_a: missing; a classification task names its text field")
        if self.kind in ("classification", "ner") and len(self.labels) < (2 if self.kind == "classification" else 1):
            what = "at least 2 distinct labels" if self.kind == "classification" else "at least 1 entity type"
            raise ConfigError(f"{where}.labels: {list(self.labels)!r} is not allowed; use {what}")
        texts = [k for k in (self.text_a, self.text_b) if k]
        for key in self.list_fields:
            choice(f"{where}.list_fields", key, texts)

    def spec(self) -> TaskSpec:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(TaskSpec)}
        return TaskSpec(**values | {"dir": self.dir or self.name})


def _label_list(where: str, value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: {str(value)[:80]} is not allowed; expected a list of strings or integers")
    return [str(v) for v in value]


@dataclass(frozen=True)
class ClueParams:
    """The ``clue:`` params section (``prepare_clue@<task>``)."""

    path: str
    tasks: dict
    on_bad_rows: Literal["fail", "skip"] = "fail"
    max_bad_ratio: float = 0.1  # under skip: more bad rows than this share of a split fails it
    layouts: dict = field(default_factory=lambda: DEFAULT_LAYOUTS)

    def validate(self, where: str) -> None:
        in_range(f"{where}.max_bad_ratio", self.max_bad_ratio, 0.0, 1.0)
        for name, layout in self.layouts.items():
            check_name(f"{where}.layouts", name)
            for split, fname in require_mapping(f"{where}.layouts.{name}", layout).items():
                check_name(f"{where}.layouts.{name}", split)
                names = fname if isinstance(fname, list) else [fname]
                if not names or not all(isinstance(f, str) and f for f in names):
                    raise ConfigError(f"{where}.layouts.{name}.{split}: {fname!r} is not allowed; expected a file name or a list of them")
            if "train" not in layout:
                raise ConfigError(f"{where}.layouts.{name}: missing required split 'train'")
        for name, entry in self.tasks.items():
            spec = TaskSpec.from_params(name, entry, f"{where}.tasks.{name}")
            if spec.layout != "auto":
                choice(f"{where}.tasks.{name}.layout", spec.layout, ["auto", *self.layouts])

    def task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise ConfigError(f"clue.tasks: unknown task {name!r}; known tasks: {', '.join(self.tasks) or 'none'}")
        return TaskSpec.from_params(name, self.tasks[name])

    @classmethod
    def from_params(cls, section: Any) -> "ClueParams":
        return from_params(cls, section, "clue")


def split_paths(task_dir: Path, spec: TaskSpec, layouts: Mapping[str, Mapping[str, Any]] = DEFAULT_LAYOUTS) -> dict[str, list[Path]]:
    """Split name -> its existing files for the task's layout: the first layout whose train files all exist
    (``layout: auto``), or the one named. A layout may list several files for a split (C3: dialogue and
    mixed-genre), read in order. Every split of :data:`REQUIRED_SPLITS` must exist or be carved."""
    names = list(layouts) if spec.layout == "auto" else [spec.layout]
    for name in names:
        if name not in layouts:
            raise ConfigError(f"clue.tasks.{spec.name}.layout: {name!r} is not allowed; use one of auto, {', '.join(layouts)}")
        files = {split: [task_dir / f for f in (fname if isinstance(fname, list) else [fname])] for split, fname in layouts[name].items()}
        if all(p.exists() for p in files["train"]):
            for path in (p for paths in files.values() for p in paths):
                if path.is_dir():
                    raise InputFileError(f"clue task {spec.name!r}: {path} is a directory, expected a file")
            found = {split: paths for split, paths in files.items() if all(p.exists() for p in paths)}
            partial = [str(p) for split, paths in files.items() if split not in found for p in paths if p.exists()]
            if partial:
                raise InputFileError(f"clue task {spec.name!r} ({name} layout): {partial} found without the rest of its split's files")
            missing = [str(files[s][0]) for s in REQUIRED_SPLITS if s not in found and s not in spec.carve]
            if missing:
                raise InputFileError(f"clue task {spec.name!r} ({name} layout): missing {missing}")
            return found
    tried = [str(task_dir / (layouts[n]["train"] if isinstance(layouts[n]["train"], str) else layouts[n]["train"][0])) for n in names]
    raise InputFileError(f"clue task {spec.name!r}: no train file found, tried {tried}")


def split_files(task_dir: Path, spec: TaskSpec, layouts: Mapping[str, Mapping[str, Any]] = DEFAULT_LAYOUTS) -> dict[str, Path]:
    """:func:`split_paths` for a layout of one file per split (the classification tasks)."""
    out = {}
    for split, paths in split_paths(task_dir, spec, layouts).items():
        if len(paths) != 1:
            raise ConfigError(f"clue.tasks.{spec.name}: split {split!r} lists {len(paths)} files; classification reads one file per split")
        out[split] = paths[0]
    return out


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
            policy.drop(path, line, f"dropped_label: {str(_get(obj, spec.label))!r} is in drop_labels", obj)
            continue
        yield row


def _to_row(obj: dict, spec: TaskSpec, labelled: bool, default_id: str) -> dict | None:
    row = {
        "id": _id(obj, spec.id, default_id),
        "text_a": _text(obj, spec.text_a, spec),
        "text_b": _text(obj, spec.text_b, spec) if spec.text_b else None,
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
    if len(label) > MAX_LABEL_CHARS:
        raise RowError(f"too_long: {spec.label}: {len(label):,} > {MAX_LABEL_CHARS} characters")
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
    if len(value := str(value)) > MAX_LABEL_CHARS:
        raise RowError(f"too_long: {key}: {len(value):,} > {MAX_LABEL_CHARS} characters")
    return value


def text_field(value: Any, name: str, allow_empty: bool = False) -> str:
    """A string field of a row, at most ``MAX_FIELD_CHARS`` characters and (unless ``allow_empty``) not blank."""
    if value is None or value is _MISSING:
        raise RowError(f"missing field: {name}")
    if not isinstance(value, str):
        raise RowError(f"mistyped field: {name}: expected a string, got {type(value).__name__}")
    if len(value) > MAX_FIELD_CHARS:
        raise RowError(f"too_long: {name}: {len(value):,} > {MAX_FIELD_CHARS:,} characters")
    if not allow_empty and not value.strip():
        raise RowError(f"empty text: {name}")
    return value


def id_field(value: Any, name: str) -> str:
    """A row id (string or integer) as a string, at most ``MAX_LABEL_CHARS`` characters."""
    if value is None or value is _MISSING:
        raise RowError(f"missing field: {name}")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value):
        raise RowError(f"mistyped field: {name}: expected a string or integer, got {type(value).__name__}")
    if len(value := str(value)) > MAX_LABEL_CHARS:
        raise RowError(f"too_long: {name}: {len(value):,} > {MAX_LABEL_CHARS} characters")
    return value


def _text(obj: dict, key: str, spec: TaskSpec) -> str:
    value = _get(obj, key)
    if value is _MISSING or value is None:
        raise RowError(f"missing field: {key}")
    if isinstance(value, list) and key in spec.list_fields:
        if not all(isinstance(v, str) for v in value):
            raise RowError(f"mistyped field: {key}: expected a list of strings")
        if sum(len(v) for v in value) > MAX_FIELD_CHARS:
            raise RowError(f"too_long: {key}: over {MAX_FIELD_CHARS:,} characters")
        value = spec.list_join.join(v.strip() for v in value if v.strip())
    if not isinstance(value, str):
        want = "string or list of strings" if key in spec.list_fields else "string"
        raise RowError(f"mistyped field: {key}: expected {want}, got {type(value).__name__}")
    if len(value) > MAX_FIELD_CHARS:
        raise RowError(f"too_long: {key}: {len(value):,} > {MAX_FIELD_CHARS:,} characters")
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
            raise RowError(f"span mismatch: {key}.span{n}_text {span[:40]!r} is not at index {index}")
        out[f"span{n}_text"], out[f"span{n}_index"] = span, index
    return out


# ---------------------------------------------------------------------------------------------
# one reader per task kind


@dataclass(frozen=True)
class KindReader:
    """How ``prepare_clue`` reads a task of one kind: the row schema, the split reader
    (``iter_split(paths, split, policy, spec, counters)``; ``counters`` counts rows kept after a repair,
    such as a CMRC2018 answer offset moved onto its text), a row's length for the statistics, and the key
    that keeps related rows in one carved split (a passage's questions, a CHID passage's blanks)."""

    schema: pa.Schema
    iter_split: Callable[..., Iterator[dict]]
    row_chars: Callable[[dict], int]
    carve_key: Callable[[dict], str]


def _classification_split(paths: Sequence[Path], split: str, policy: RowPolicy, spec: TaskSpec, counters=None) -> Iterator[dict]:
    for path in paths:
        yield from iter_split(path, spec, split, policy)


def reader_for(kind: str) -> KindReader:
    """The reader of a task kind (:data:`KINDS`); the modules are imported on demand."""
    if kind == "classification":
        return KindReader(CLUE_SCHEMA, _classification_split, lambda r: len(r["text_a"]) + len(r["text_b"] or ""), lambda r: r["id"])
    if kind == "span_extraction":
        from zhnlp.data import cmrc2018 as mod

        key = lambda r: r["context"]  # noqa: E731  (a passage's questions stay together)
    elif kind == "multiple_choice":
        from zhnlp.data import c3 as mod

        key = lambda r: r["passage"]  # noqa: E731
    elif kind == "idiom_cloze":
        from zhnlp.data import chid as mod

        key = lambda r: r["group"]  # noqa: E731
    elif kind == "ner":
        from zhnlp.data import cluener as mod

        key = lambda r: r["text"]  # noqa: E731
    else:
        raise ConfigError(f"clue task kind {kind!r} is not allowed; use one of {', '.join(KINDS)}")
    return KindReader(mod.SCHEMA, mod.iter_split, mod.row_chars, key)
