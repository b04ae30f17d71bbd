"""CMRC 2018 span-extraction reading comprehension: a streaming reader to :data:`SCHEMA` rows.

The official files are SQuAD v1 JSON, ``{"version": ..., "data": [article, ...]}`` with
``article.paragraphs[].{id, context, qas[].{id, question, answers[].{text, answer_start}}}``.
Articles are streamed one at a time by :func:`zhnlp.data.json_stream.iter_json_elements`
(so an article is at most ``MAX_ELEMENT_CHARS``); one row per question.

Answer offsets: the official files hold a few answers whose ``answer_start`` is off (the
trial file: 5 of 1,002, all one character too far). Rule: the text at ``answer_start`` ->
kept; else the occurrence in the context nearest to ``answer_start`` -> kept and counted as
``fixed_answer_offsets`` in the caller's ``counters``; the text nowhere in the context -> a
bad row (``answer offset mismatch``). An empty question (real: 2 in the trial file) is kept and
counted as ``empty_questions``. A malformed article is one bad row at the line where
it starts; a malformed question is a bad row at its article's line naming the question id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from zhnlp.data.clue import UNLABELLED_SPLITS, TaskSpec, id_field, text_field
from zhnlp.data.json_stream import iter_json_elements
from zhnlp.data.rows import RowError, RowPolicy

__all__ = ["SCHEMA", "MAX_ANSWERS", "iter_split", "row_chars"]

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("context", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answers", pa.list_(pa.string()), nullable=False),  # all gold answers, file order; [] unlabelled
        pa.field("answer_starts", pa.list_(pa.int32()), nullable=False),  # char offset of each answer
    ]
)
MAX_ANSWERS = 32  # answers of one question (official dev/test: 3 or 4)
MAX_QUESTIONS = 4096  # paragraphs of an article, questions of a paragraph (bounded work per element)


def iter_split(
    paths: Sequence[Path], split: str, policy: RowPolicy, spec: TaskSpec, counters: Counter | None = None
) -> Iterator[dict]:
    """Stream the questions of the split's files (in list order) as schema rows; bad rows go to the policy.

    ``counters["fixed_answer_offsets"]`` counts answers moved to their nearest occurrence,
    ``counters["empty_questions"]`` questions kept with an empty question text.
    """
    labelled = split not in UNLABELLED_SPLITS
    counters = Counter() if counters is None else counters
    for path in paths:
        for line, article in iter_json_elements(path, "data"):
            try:
                paragraphs = _paragraphs(article)
            except RowError as err:
                policy.reject(path, line, str(err), article)
                continue
            for p_idx, para in paragraphs:
                try:
                    context, qas = _paragraph(para, p_idx)
                except RowError as err:
                    policy.reject(path, line, str(err), para)
                    continue
                for q_idx, qa in enumerate(qas):
                    try:
                        yield _question(qa, context, labelled, counters, f"paragraphs[{p_idx}].qas[{q_idx}]")
                    except RowError as err:
                        policy.reject(path, line, str(err), qa)


def row_chars(row: dict) -> int:
    """Characters the model reads: context plus question."""
    return len(row["context"]) + len(row["question"])


def _paragraphs(article: Any) -> list[tuple[int, Any]]:
    if not isinstance(article, dict):
        raise RowError(f"mistyped field: article: expected an object, got {type(article).__name__}")
    paragraphs = article.get("paragraphs")
    if not isinstance(paragraphs, list):
        what = "missing field" if paragraphs is None else "mistyped field"
        raise RowError(f"{what}: paragraphs: expected a list")
    if len(paragraphs) > MAX_QUESTIONS:
        raise RowError(f"too_long: paragraphs: {len(paragraphs):,} > {MAX_QUESTIONS:,}")
    return list(enumerate(paragraphs))


def _paragraph(para: Any, p_idx: int) -> tuple[str, list]:
    where = f"paragraphs[{p_idx}]"
    if not isinstance(para, dict):
        raise RowError(f"mistyped field: {where}: expected an object, got {type(para).__name__}")
    context = text_field(para.get("context"), f"{where}.context")
    qas = para.get("qas")
    if not isinstance(qas, list):
        raise RowError(f"{'missing' if qas is None else 'mistyped'} field: {where}.qas: expected a list")
    if len(qas) > MAX_QUESTIONS:
        raise RowError(f"too_long: {where}.qas: {len(qas):,} > {MAX_QUESTIONS:,}")
    return context, qas


def _question(qa: Any, context: str, labelled: bool, counters: Counter, where: str) -> dict:
    if not isinstance(qa, dict):
        raise RowError(f"mistyped field: {where}: expected an object, got {type(qa).__name__}")
    qid = id_field(qa.get("id"), f"{where}.id")
    question = text_field(qa.get("question"), f"question {qid}: question", allow_empty=True)
    if not question.strip():  # real: 2 of the 1,002 trial questions; kept, as the official scorer does
        counters["empty_questions"] += 1
    answers = qa.get("answers")
    if answers is None or answers == []:
        if labelled:
            raise RowError(f"missing field: question {qid}: answers")
        answers = []
    if not isinstance(answers, list):
        raise RowError(f"mistyped field: question {qid}: answers: expected a list")
    if len(answers) > MAX_ANSWERS:
        raise RowError(f"too_long: question {qid}: {len(answers)} answers > MAX_ANSWERS={MAX_ANSWERS}")
    texts, starts = [], []
    for i, ans in enumerate(answers):
        if not isinstance(ans, dict):
            raise RowError(f"mistyped field: question {qid}: answers[{i}]: expected an object")
        text = text_field(ans.get("text"), f"question {qid}: answers[{i}].text")
        start = ans.get("answer_start")
        if isinstance(start, bool) or not isinstance(start, int):
            what = "missing" if start is None else "mistyped"
            raise RowError(f"{what} field: question {qid}: answers[{i}].answer_start: expected an integer")
        texts.append(text)
        starts.append(_locate(context, text, start, qid, counters))
    return {"id": qid, "context": context, "question": question, "answers": texts, "answer_starts": starts}


def _locate(context: str, text: str, start: int, qid: str, counters: Counter) -> int:
    """``start`` if ``text`` is there, else its nearest occurrence (counted); absent is a RowError."""
    if 0 <= start and context.startswith(text, start):
        return start
    best, pos = None, context.find(text)
    while pos != -1:
        if best is None or abs(pos - start) < abs(best - start):
            best = pos
        if pos > start:  # later occurrences are only farther
            break
        pos = context.find(text, pos + 1)
    if best is None:
        why = f"answer {text[:40]!r} is not in the context (answer_start {start})"
        raise RowError(f"answer offset mismatch: question {qid}: {why}")
    counters["fixed_answer_offsets"] += 1
    return best
