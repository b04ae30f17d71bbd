"""The transformer head and the non-neural floor of each CLUE task kind beyond classification.

See :mod:`zhnlp.tasks.task_kinds` for the table of kinds. The modules are imported on demand: a floor
needs no torch, and a head only its own module.
"""

from __future__ import annotations


def head_class(kind: str):
    """The head class of ``kind`` (``from_pretrained``, ``fit``, ``predict``, ``save``)."""
    if kind == "span_extraction":
        from zhnlp.tasks.span_extraction import SpanExtractionHead

        return SpanExtractionHead
    if kind in ("multiple_choice", "idiom_cloze"):
        from zhnlp.tasks.multiple_choice import MultipleChoiceHead

        return MultipleChoiceHead
    if kind == "ner":
        from zhnlp.tasks.token_classification import NerHead

        return NerHead
    raise ValueError(f"no head for task kind {kind!r}")


def floor_for(kind: str):
    """A fresh instance of the non-neural floor of ``kind`` (``fit(train_rows)``, ``predict(rows)``)."""
    from zhnlp.tasks import floors

    if kind == "span_extraction":
        return floors.OverlapSpanFloor()
    if kind in ("multiple_choice", "idiom_cloze"):
        return floors.TfidfChoiceFloor()
    if kind == "ner":
        return floors.GazetteerNerFloor()
    raise ValueError(f"no floor for task kind {kind!r}")
