"""C3 multiple-choice reading comprehension: a streaming reader to :data:`SCHEMA` rows.

The official files (``c3-d-*`` dialogue, ``c3-m-*`` mixed genre; one format) are a JSON list of
``[[passage line, ...], [{question, choice: [2-4 strings], answer: <choice text>}, ...], passage_id]``,
streamed one passage at a time by :func:`zhnlp.data.json_stream.iter_json_elements`. One row
per question, id ``<passage_id>-<0-based question index>`` (the files have no question ids);
the passage lines are joined with ``"\\n"``; ``label_id`` is the answer's index in ``choices``.

Duplicate choice texts (real: 3 questions of c3-d-train, 1 of c3-d-dev) are the same option
offered twice, so the later copies are removed (order kept) and counted as
``duplicate_choices`` in the caller's ``counters``; the label is then never ambiguous. An
answer that is none of the choices is a bad row. A malformed passage is one bad row at the
line where it starts; a malformed question is a bad row at its passage's line naming its id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from zhnlp.data.clue import MAX_FIELD_CHARS, MAX_LABEL_CHARS, UNLABELLED_SPLITS, TaskSpec, text_field
from zhnlp.data.json_stream import iter_json_elements
from zhnlp.data.rows import RowError, RowPolicy

__all__ = ["SCHEMA", "MAX_CHOICES", "iter_split", "row_chars"]

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # <passage_id>-<question index>
        pa.field("passage", pa.string(), nullable=False),  # passage lines joined with "\n"
        pa.field("question", pa.string(), nullable=False),
        pa.field("choices", pa.list_(pa.string()), nullable=False),
        pa.field("label_id", pa.int32()),  # index of the answer in choices; null when unlabelled
    ]
)
MIN_CHOICES, MAX_CHOICES = 2, 16  # real: 2-4
MAX_QUESTIONS = 1024  # questions of one passage (real: at most 6)
MAX_LINES = 4096  # lines of one passage


def iter_split(
    paths: Sequence[Path], split: str, policy: RowPolicy, spec: TaskSpec, counters: Counter | None = None
) -> Iterator[dict]:
    """Stream the questions of the split's files (in list order) as schema rows; bad rows go to the policy.

    ``counters["duplicate_choices"]`` is incremented for every removed repeated choice.
    """
    labelled = split not in UNLABELLED_SPLITS
    counters = Counter() if counters is None else counters
    for path in paths:
        for line, element in iter_json_elements(path):
            try:
                passage, questions, pid = _passage(element)
            except RowError as err:
                policy.reject(path, line, str(err), element)
                continue
            for idx, q in enumerate(questions):
                try:
                    yield _question(q, f"{pid}-{idx}", passage, labelled, counters)
                except RowError as err:
                    policy.reject(path, line, str(err), q)


def row_chars(row: dict) -> int:
    """Characters the model reads: passage, question and every choice."""
    return len(row["passage"]) + len(row["question"]) + sum(len(c) for c in row["choices"])


def _passage(element: Any) -> tuple[str, list, str]:
    if not isinstance(element, list) or len(element) != 3:
        got = f"a list of {len(element)}" if isinstance(element, list) else type(element).__name__
        raise RowError(f"mistyped field: passage: expected [lines, questions, passage_id], got {got}")
    lines, questions, pid = element
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or not str(pid).strip():
        raise RowError("mistyped field: passage_id: expected a non-empty string")
    pid = str(pid)
    if len(pid) > MAX_LABEL_CHARS:
        raise RowError(f"too_long: passage_id: {len(pid):,} > {MAX_LABEL_CHARS} characters")
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise RowError(f"mistyped field: passage {pid}: lines: expected a list of strings")
    if len(lines) > MAX_LINES or sum(len(x) + 1 for x in lines) > MAX_FIELD_CHARS:
        raise RowError(f"too_long: passage {pid}: over {MAX_LINES:,} lines or {MAX_FIELD_CHARS:,} characters")
    passage = "\n".join(lines)
    if not passage.strip():
        raise RowError(f"empty text: passage {pid}")
    if not isinstance(questions, list) or not questions:
        raise RowError(f"mistyped field: passage {pid}: questions: expected a non-empty list")
    if len(questions) > MAX_QUESTIONS:
        raise RowError(f"too_long: passage {pid}: {len(questions):,} questions > {MAX_QUESTIONS:,}")
    return passage, questions, pid


def _question(q: Any, qid: str, passage: str, labelled: bool, counters: Counter) -> dict:
    if not isinstance(q, dict):
        raise RowError(f"mistyped field: question {qid}: expected an object, got {type(q).__name__}")
    question = text_field(q.get("question"), f"question {qid}: question")
    raw = q.get("choice")
    if not isinstance(raw, list):
        raise RowError(f"{'missing' if raw is None else 'mistyped'} field: question {qid}: choice: expected a list")
    if len(raw) > MAX_CHOICES:
        raise RowError(f"too_long: question {qid}: {len(raw)} choices > MAX_CHOICES={MAX_CHOICES}")
    choices: list[str] = []
    for i, c in enumerate(raw):
        c = text_field(c, f"question {qid}: choice[{i}]")
        if c in choices:
            counters["duplicate_choices"] += 1
        else:
            choices.append(c)
    if len(choices) < MIN_CHOICES:
        raise RowError(f"too few choices: question {qid}: {len(choices)} distinct choice(s), need {MIN_CHOICES}")
    answer, label_id = q.get("answer"), None
    if answer is None:
        if labelled:
            raise RowError(f"missing field: question {qid}: answer")
    elif not isinstance(answer, str):
        raise RowError(f"mistyped field: question {qid}: answer: expected a string, got {type(answer).__name__}")
    elif answer not in choices:
        raise RowError(f"answer not among choices: question {qid}: {answer[:40]!r} is none of {len(choices)} choices")
    else:
        label_id = choices.index(answer)
    return {"id": qid, "passage": passage, "question": question, "choices": choices, "label_id": label_id}
