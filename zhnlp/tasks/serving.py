"""A served finetuned model, per task kind: the request it reads, the response it gives, and the predictor behind it.

The ``register`` stage logs every finetuned model (the CLUE tasks, Ape210K, LCCC) as an MLflow pyfunc
(``stages/registry_model.py``); this module is what that model runs, without MLflow. A request is a
table with the columns of the task kind's :class:`ServedKind` (for CLUE the prepared parquet's own
names, so a prepared split is a valid request); the response has one row per request row:

==================  ==============================================  ==========================================
kind                request columns (* required)                    response columns
==================  ==============================================  ==========================================
classification      text_a*, text_b, span1/2_text, span1/2_index    label, score (its probability)
span_extraction     context*, question*                             answer (a span of the context, or "")
multiple_choice     passage*, question*, choices* (list of str)     choice (index), answer, score
idiom_cloze         text* (one #idiom# blank), candidates*, group   choice (index), answer, score
ner                 text*                                           entities (list of {type, start, end, text})
math_word_problem   question* (Ape210K)                             equation, answer (its value; NaN if invalid)
dialogue            history* (LCCC: the turns so far, oldest first)  reply
==================  ==============================================  ==========================================

Rows are encoded exactly as in training, by the finetune stage's own head (the classifier's zero
segments, jieba pieces and WSC span markers; the span head's windows; CHID's one-to-one assignment of
the candidates over the blanks of one ``group``) and decoded as its evaluation decodes (Ape210K: beam
search with ``num_beams``; LCCC: the model's sampling settings, seeded per request, so the same request
gets the same reply).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from zhnlp.errors import UserError

EXAMPLE_SPLITS = ("test", "test_public", "dev", "valid")  # the input example comes from the first present
# Column types, named as MLflow's signature names them; "strings" is a list of strings, "entities" a list of entity records.
STRING, LONG, DOUBLE, STRINGS, ENTITIES = "string", "long", "double", "strings", "entities"
ENTITY_FIELDS = (("type", STRING), ("start", LONG), ("end", LONG), ("text", STRING))  # end inclusive, as CLUENER


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False


@dataclass(frozen=True)
class ServedKind:
    """What a served model of one task kind reads (``inputs``) and answers (``outputs``)."""

    kind: str
    inputs: tuple[Column, ...]
    outputs: tuple[Column, ...]


_CHOSEN = (Column("choice", LONG), Column("answer", STRING), Column("score", DOUBLE))
SERVED = {
    "classification": ServedKind(
        "classification",
        (Column("text_a", STRING, True), Column("text_b", STRING), Column("span1_text", STRING), Column("span1_index", LONG),
         Column("span2_text", STRING), Column("span2_index", LONG)),
        (Column("label", STRING), Column("score", DOUBLE)),
    ),
    "span_extraction": ServedKind("span_extraction", (Column("context", STRING, True), Column("question", STRING, True)), (Column("answer", STRING),)),
    "multiple_choice": ServedKind(
        "multiple_choice", (Column("passage", STRING, True), Column("question", STRING, True), Column("choices", STRINGS, True)), _CHOSEN
    ),
    "idiom_cloze": ServedKind("idiom_cloze", (Column("text", STRING, True), Column("candidates", STRINGS, True), Column("group", STRING)), _CHOSEN),
    "ner": ServedKind("ner", (Column("text", STRING, True),), (Column("entities", ENTITIES),)),
    "math_word_problem": ServedKind("math_word_problem", (Column("question", STRING, True),), (Column("equation", STRING), Column("answer", DOUBLE))),
    "dialogue": ServedKind("dialogue", (Column("history", STRINGS, True),), (Column("reply", STRING),)),
}


@dataclass
class Generator:
    """A saved generation head (``models/finetune_ape210k``, ``models/finetune_lccc``) and how it decodes."""

    model: Any
    codec: Any
    settings: Any
    num_beams: int = 1
    seed: int = 0


def served_kind(kind: str) -> ServedKind:
    if kind not in SERVED:
        raise UserError(f"task kind {kind!r} has no served form; known: {', '.join(SERVED)}")
    return SERVED[kind]


def example_rows(data_dir: Path, kind: str, n: int = 3) -> list[dict[str, Any]]:
    """The first ``n`` rows of the prepared task's first present split in :data:`EXAMPLE_SPLITS`, with the
    kind's input columns that the task fills (text_b for pairs, the spans for WSC, CHID's group)."""
    names = [c.name for c in served_kind(kind).inputs]
    for split in EXAMPLE_SPLITS:
        path = data_dir / f"{split}.parquet"
        if path.is_file() and kind == "dialogue":  # LCCC: the turns before the last are the history its reply answers
            rows = pq.read_table(path, columns=["turns"]).to_pylist()[:n]
            if rows:
                return [{"history": list(r["turns"][:-1])} for r in rows]
        elif path.is_file():
            present = [c for c in names if c in pq.read_schema(path).names]
            rows = pq.read_table(path, columns=present).to_pylist()
            used = [c for c in present if any(r[c] is not None for r in rows)]
            if rows:
                return [{c: r[c] for c in used} for r in rows[:n]]
    raise UserError(f"{data_dir}: no rows in any of {', '.join(s + '.parquet' for s in EXAMPLE_SPLITS)}; run its prepare stage first")


def rows_from_records(kind: str, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prepared-row dicts from a request table's records: each input column of the kind, absent or NaN
    values as None, indices as ints, lists (or arrays) as lists of strings. A missing required value is a
    one-line error naming the row and the column."""
    inputs = served_kind(kind).inputs
    rows = []
    for i, record in enumerate(records):
        row: dict[str, Any] = {}
        for column in inputs:
            value = record.get(column.name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                value = None
            elif column.type == LONG:
                value = int(value)
            elif column.type == STRINGS:
                if isinstance(value, str) or not isinstance(value, (list, tuple, np.ndarray)):
                    raise UserError(f"input row {i}: {column.name} must be a list of strings, not {type(value).__name__}")
                value = [str(v) for v in value]
            else:
                value = str(value)
            if column.required and not value and value != 0:
                raise UserError(f"input row {i}: {column.name} is missing")
            row[column.name] = value
        rows.append(row)
    return rows


def saved_labels(model_dir: Path) -> list[str]:
    """The label names of a saved classifier, in label-id order (config.json ``id2label``)."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    if sorted(id2label) != list(range(len(id2label))) or not id2label:
        raise UserError(f"{model_dir}/config.json: id2label is not labels 0..n-1; rerun its finetune stage")
    return [id2label[i] for i in range(len(id2label))]


def load_predictor(model_dir: str | Path, kind: str, max_seq_len: int = 128, num_beams: int = 1):
    """The finetuned model in ``model_dir`` as the finetune stage's head of ``kind`` (safetensors, no remote code).
    ``max_seq_len``: a CLUE head's recipe setting; ``num_beams``: Ape210K's beam size (the generation heads read
    their lengths and sampling from their ``zhnlp_generation.json``)."""
    served_kind(kind)
    if kind == "math_word_problem":
        from zhnlp.models.decoding import load_model
        from zhnlp.tasks.generation import TextCodec, default_device, read_head
        from zhnlp.tasks.seq2seq import ApeSettings

        head = read_head(model_dir)
        settings = ApeSettings(max_source_len=int(head["max_source_len"]), max_target_len=int(head["max_target_len"]))
        return Generator(load_model(model_dir, default_device(), head="unilm"), TextCodec.load(model_dir), settings, num_beams=num_beams)
    if kind == "dialogue":
        from zhnlp.tasks.dialogue import load_chat_model

        return Generator(*load_chat_model(model_dir))
    if kind == "classification":
        from zhnlp.tasks.classification import TransformerClassifier

        return TransformerClassifier.from_pretrained(model_dir, saved_labels(Path(model_dir)), max_seq_len=max_seq_len)
    from zhnlp.tasks.kind_models import head_class

    extra = {"kind": kind} if kind in ("multiple_choice", "idiom_cloze") else {}
    return head_class(kind).from_pretrained(model_dir, max_seq_len=max_seq_len, **extra)


def predict(predictor, kind: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """The response columns (:data:`SERVED`) for prepared ``rows``."""
    if kind == "classification":
        probs = predictor.predict_proba(rows)
        best = probs.argmax(axis=1)
        return {"label": [predictor.labels[i] for i in best], "score": [float(p) for p in probs[np.arange(len(best)), best]]}
    if kind == "span_extraction":
        return {"answer": predictor.predict(rows)}
    if kind == "ner":
        return {"entities": [[{k: e[k] for k, _ in ENTITY_FIELDS} for e in found] for found in predictor.predict(rows)]}
    if kind == "math_word_problem":
        return _solve(predictor, [r["question"] for r in rows])
    if kind == "dialogue":
        import torch

        from zhnlp.tasks.dialogue import generate_replies

        contexts = [predictor.codec.encode_many(r["history"]) for r in rows]
        generator = torch.Generator().manual_seed(predictor.seed)
        return {"reply": generate_replies(predictor.model, predictor.codec, contexts, predictor.settings, generator, show_progress=False)}
    from zhnlp.tasks.multiple_choice import assign_blanks

    probs = predictor.predict_proba(rows)
    options = "choices" if kind == "multiple_choice" else "candidates"
    if kind == "idiom_cloze":  # as MultipleChoiceHead.predict: one-to-one within a group, from the same probabilities
        chosen = assign_blanks(probs, [r.get("group") for r in rows], [r[options] for r in rows])
    else:
        chosen = [int(np.argmax(p)) for p in probs]
    return {"choice": chosen, "answer": [r[options][c] for r, c in zip(rows, chosen)], "score": [float(p[c]) for p, c in zip(probs, chosen)]}


def _solve(gen: Generator, questions: list[str]) -> dict[str, list]:
    """Ape210K: the beam-searched equation of each question, and its value (NaN when it is not a valid expression)."""
    from zhnlp.data.ape210k import MAX_ABS
    from zhnlp.data.safe_eval import safe_eval
    from zhnlp.tasks.seq2seq import decode_equations

    equations, _ = decode_equations(gen.model, gen.codec, questions, num_beams=gen.num_beams, settings=gen.settings)
    answers = []
    for equation in equations:
        try:
            answers.append(float(safe_eval(equation, max_abs=MAX_ABS)))
        except (ValueError, ArithmeticError, RecursionError):  # as the stage's check_prediction: not a valid expression
            answers.append(math.nan)
    return {"equation": equations, "answer": answers}
