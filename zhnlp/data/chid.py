"""CHID idiom cloze: a streaming reader of both official layouts to :data:`SCHEMA` rows.

* FewCLUE (one row per line): ``{id, candidates: [7 idioms], content: "...#idiom#...", answer: index}``,
  exactly one ``#idiom#`` blank; ``group`` is the row's own id.
* CLUE (one line, many blanks): ``{candidates: [...], content: [passage, ...]}`` whose passages
  hold blanks ``#idiom<digits>#``; the answers are a JSON object ``{"#idiom000123#": index, ...}``
  in ``<data file stem>_answer.json`` beside the data file. One row per blank, id = its tag;
  ``text`` is its passage with this blank as ``#idiom#`` and every other blank as ``#other#``.
  All blanks of a line share its candidates, so they share a ``group`` (``<file stem>:<line>``),
  the unit of the one-to-one answer assignment.

The layout is told per line (``content`` a string or a list). Checked: candidates are 2-64 unique
non-empty strings, the answer index is in range, a FewCLUE row has exactly one ``#idiom#``, a CLUE
blank has an answer. A labelled split whose answer file is missing is an InputFileError; a bad
answer file is a one-line BadInputError; an unlabelled split (``test``) reads answers if present.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from zhnlp.data.clue import MAX_LABEL_CHARS, UNLABELLED_SPLITS, TaskSpec, id_field, text_field
from zhnlp.data.rows import BadInputError, InputFileError, RowError, RowPolicy, check_file, iter_json_lines

__all__ = ["SCHEMA", "BLANK", "OTHER", "MAX_CANDIDATES", "answer_file", "iter_split", "row_chars"]

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # FewCLUE: the row id; CLUE: the blank tag
        pa.field("text", pa.string(), nullable=False),  # this blank "#idiom#", other blanks "#other#"
        pa.field("candidates", pa.list_(pa.string()), nullable=False),
        pa.field("label_id", pa.int32()),  # index into candidates; null when unlabelled
        pa.field("group", pa.string(), nullable=False),  # rows sharing candidates (one CLUE line)
    ]
)
BLANK, OTHER = "#idiom#", "#other#"
MAX_CANDIDATES = 64
MAX_PASSAGES = 1024  # passages of one CLUE-layout line
MAX_ANSWER_FILE_BYTES = 256 << 20  # CLUE train_answer.json: ~10 MB
TAG = re.compile(r"#idiom\d+#")


def answer_file(path: Path) -> Path:
    """The CLUE-layout answer file of a data file: ``<stem>_answer.json`` beside it."""
    return path.with_name(f"{path.stem}_answer.json")


def iter_split(
    paths: Sequence[Path], split: str, policy: RowPolicy, spec: TaskSpec, counters: Counter | None = None
) -> Iterator[dict]:
    """Stream the blanks of the split's files (in list order) as schema rows; bad rows go to the policy.

    ``counters`` is accepted like the other kind readers' and left alone: nothing here is repaired.
    """
    labelled = split not in UNLABELLED_SPLITS
    for path in paths:
        path = Path(path)
        answers: dict[str, int] | None = None  # loaded at the first CLUE-layout line
        for line, obj in iter_json_lines(path, policy):
            content = obj.get("content")
            if not isinstance(content, list):
                try:
                    yield _fewclue_row(obj, labelled, default_id=str(line - 1))
                except RowError as err:
                    policy.reject(path, line, str(err), obj)
                continue
            if answers is None:
                answers = _load_answers(path, labelled)
            yield from _clue_rows(path, line, obj, content, answers, labelled, policy)


def row_chars(row: dict) -> int:
    """Characters of the passage (candidates are scored against it)."""
    return len(row["text"])


def _fewclue_row(obj: dict, labelled: bool, default_id: str) -> dict:
    rid = id_field(obj.get("id", default_id), "id")
    text = text_field(obj.get("content"), "content")
    if (n := text.count(BLANK)) != 1:
        raise RowError(f"bad blanks: content has {n} {BLANK} blanks, expected exactly 1")
    candidates = _candidates(obj.get("candidates"))
    label_id = _answer(obj.get("answer"), len(candidates), labelled, "answer")
    return {"id": rid, "text": text, "candidates": candidates, "label_id": label_id, "group": rid}


def _clue_rows(
    path: Path, line: int, obj: dict, content: list, answers: dict, labelled: bool, policy: RowPolicy
) -> Iterator[dict]:
    """The rows of one CLUE-layout line; a line-level problem rejects it, a blank-level one that blank."""
    try:
        candidates = _candidates(obj.get("candidates"))
        if len(content) > MAX_PASSAGES:
            raise RowError(f"too_long: content: {len(content):,} passages > {MAX_PASSAGES:,}")
        passages = [text_field(p, f"content[{i}]") for i, p in enumerate(content)]
        tags = [[m.group() for m in TAG.finditer(p)] for p in passages]
        flat = [t for ts in tags for t in ts]
        if not flat:
            raise RowError("bad blanks: content has no #idiom<digits># blank")
        if any(BLANK in p or OTHER in p for p in passages):
            raise RowError(f"bad blanks: a CLUE-layout passage holds a bare {BLANK} or {OTHER}")
        if len(set(flat)) != len(flat):
            dup = next(t for t in flat if flat.count(t) > 1)
            raise RowError(f"bad blanks: blank {dup} occurs more than once in the line")
    except RowError as err:
        policy.reject(path, line, str(err), obj)
        return
    group = f"{path.stem}:{line}"
    for passage, passage_tags in zip(passages, tags):
        for tag in passage_tags:
            try:
                label_id = _answer(answers.get(tag), len(candidates), labelled, f"answer of {tag}")
            except RowError as err:
                policy.reject(path, line, str(err), {"blank": tag, "answer": answers.get(tag)})
                continue
            text = TAG.sub(lambda m, tag=tag: BLANK if m.group() == tag else OTHER, passage)
            yield {"id": tag, "text": text, "candidates": candidates, "label_id": label_id, "group": group}


def _load_answers(path: Path, labelled: bool) -> dict[str, int]:
    """The answer object of a CLUE-layout data file ({} for an unlabelled split without one)."""
    apath = answer_file(path)
    if not apath.exists():
        if labelled:
            raise InputFileError(f"{path}: CLUE-layout CHID needs its answer file {apath}, not found")
        return {}
    check_file(apath, "CHID answer file")
    if apath.stat().st_size > MAX_ANSWER_FILE_BYTES:
        raise InputFileError(f"CHID answer file {apath} is over {MAX_ANSWER_FILE_BYTES >> 20} MiB")
    try:
        data = json.loads(apath.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise BadInputError(apath, 1, f"invalid utf-8: byte {err.start}") from None
    except json.JSONDecodeError as err:
        raise BadInputError(apath, err.lineno, f"malformed json: {err.msg} at column {err.colno}") from None
    except (RecursionError, ValueError) as err:
        raise BadInputError(apath, 1, f"malformed json: {str(err)[:120]}") from None
    if not isinstance(data, dict):
        raise BadInputError(apath, 1, f"malformed answer file: expected an object of blank -> index, got {type(data).__name__}")
    for tag, idx in data.items():
        if isinstance(idx, bool) or not isinstance(idx, int):
            why = f"{tag[:40]!r}: expected an integer index, got {type(idx).__name__}"
            raise BadInputError(apath, 1, f"malformed answer file: {why}")
    return data


def _candidates(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        what = "missing" if value is None else "mistyped"
        raise RowError(f"{what} field: candidates: expected a list of strings")
    if not 2 <= len(value) <= MAX_CANDIDATES:
        raise RowError(f"bad candidates: {len(value)} candidates, expected 2..{MAX_CANDIDATES}")
    if any(not c.strip() or len(c) > MAX_LABEL_CHARS for c in value):
        raise RowError(f"bad candidates: an empty candidate or one over {MAX_LABEL_CHARS} characters")
    if len(set(value)) != len(value):
        dup = next(c for c in value if value.count(c) > 1)
        raise RowError(f"bad candidates: {dup!r} occurs more than once")
    return value


def _answer(value: Any, n: int, labelled: bool, name: str) -> int | None:
    if value is None:
        if labelled:
            raise RowError(f"missing field: {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RowError(f"mistyped field: {name}: expected an integer index, got {type(value).__name__}")
    if not 0 <= value < n:
        raise RowError(f"answer out of range: {name}: {value} is not an index of {n} candidates")
    return value
