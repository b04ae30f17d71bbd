"""Ape210K question -> equation with a UniLM seq2seq head on a BERT backbone (techniques.md section 3).

Sequence ``[CLS] question [SEP] equation [SEP]``, token types 0 for ``[CLS] question [SEP]``
and 1 for ``equation [SEP]``; UniLM mask (bidirectional over the question, causal over the
equation); cross-entropy only on predicting the segment-1 tokens, the final ``[SEP]``
included. Decoding is beam search (greedy = 1 beam) with ``[SEP]`` as the end token.

A prediction is correct when ``safe_eval(pred)`` rounded to 6 decimals equals the
answer's value rounded the same way (``zhnlp.data.ape210k.answers_agree``); any evaluation
error counts as wrong, and as an *invalid* expression.

Entry point for the stage and the tests: :func:`finetune`, which trains, then evaluates the
trained model and — measured the same way — the untrained backbone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from zhnlp.data.ape210k import MAX_ABS, answers_agree
from zhnlp.config import ConfigError
from zhnlp.tasks.generation import (
    IGNORE,
    Example,
    TextCodec,
    default_device,
    ensure_token_types,
    evaluate_loss,
)
from zhnlp.models.decoding import BertDecoder, Prompt, load_model
from zhnlp.models.search import beam_search
from zhnlp.progress import counter
from zhnlp.data.safe_eval import safe_eval
from zhnlp.train.arguments import TrainingSettings
from zhnlp.train.heads import TrainResult, compare_with_untrained, train_head, training_components

__all__ = [
    "EQUATION_PIECES",
    "ApeSettings",
    "EncodeStats",
    "encode_problems",
    "question_prompt",
    "decode_equations",
    "check_prediction",
    "evaluate_split",
    "load_backbone",
    "finetune",
    "ApeResult",
]

# What an equation is written with; each must be a token, or such equations cannot be generated.
EQUATION_PIECES = tuple("0123456789.+-*/()")


@dataclass(frozen=True, kw_only=True)
class ApeSettings(TrainingSettings):
    """The ``finetune_ape210k`` params (strict, :func:`zhnlp.config.from_params`): the shared Trainer keys plus these."""

    backbone: str = "char"  # a name under models/pretrain/, or a path (runs by hand, tests)
    max_source_len: int = 96  # [CLS] question [SEP], in tokens
    max_target_len: int = 40  # equation [SEP], in tokens; also the decoding limit
    beams: list[int] = field(default_factory=lambda: [1, 3])
    eval_batch_size: int = 32

    def validate(self, where: str) -> None:
        super().validate(where)
        for key, low in (("max_source_len", 3), ("max_target_len", 1), ("eval_batch_size", 1)):  # [CLS] q [SEP]: 3 tokens
            if getattr(self, key) < low:
                raise ConfigError(f"{where}.{key}: {getattr(self, key)!r} is not allowed; use a number >= {low}")
        if not self.beams or any(k < 1 for k in self.beams):
            raise ConfigError(f"{where}.beams: {self.beams!r} is not allowed; use a non-empty list of beam sizes >= 1")


@dataclass
class EncodeStats:
    problems: int = 0
    encoded: int = 0
    truncated_questions: int = 0
    dropped_long_equations: int = 0  # equation [SEP] longer than max_target_len: no training target

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _source_ids(codec: TextCodec, question_ids: list[int], settings: ApeSettings) -> tuple[list[int], bool]:
    room = settings.max_source_len - 2
    return [codec.cls_id, *question_ids[:room], codec.sep_id], len(question_ids) > room


def encode_problems(codec: TextCodec, rows: Sequence[Mapping[str, Any]], settings: ApeSettings) -> tuple[list[Example], EncodeStats]:
    """Training sequences ``[CLS] q [SEP] eq [SEP]`` with labels on ``eq [SEP]`` only.

    Questions longer than ``max_source_len - 2`` tokens are cut at the end; problems whose
    equation does not fit ``max_target_len`` are left out (a cut equation is a wrong target).
    """
    stats = EncodeStats(problems=len(rows))
    questions = codec.encode_many([r["question"] for r in rows])
    equations = codec.encode_many([r["equation"] for r in rows])
    examples = []
    for q_ids, e_ids in zip(questions, equations):
        target = [*e_ids, codec.sep_id]
        if len(target) > settings.max_target_len:
            stats.dropped_long_equations += 1
            continue
        source, cut = _source_ids(codec, q_ids, settings)
        stats.truncated_questions += cut
        examples.append(Example(source + target, [0] * len(source) + [1] * len(target), [IGNORE] * len(source) + target))
    stats.encoded = len(examples)
    return examples, stats


def question_prompt(codec: TextCodec, question_ids: list[int], settings: ApeSettings) -> Prompt:
    source, _ = _source_ids(codec, question_ids, settings)
    return Prompt(source, [0] * len(source), next_segment=1)


def decode_equations(
    model,
    codec: TextCodec,
    questions: Sequence[str],
    *,
    num_beams: int,
    settings: ApeSettings,
    use_cache: bool = True,
) -> tuple[list[str], float]:
    """Beam-search an equation for every question; returns ``(equations, seconds)``.

    Batches are formed over questions sorted by length (less padding); the output keeps the input order.
    """
    ids = codec.encode_many(list(questions))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[str] = [""] * len(ids)
    max_new = min(settings.max_target_len, model.config.max_position_embeddings - settings.max_source_len)
    decoder = BertDecoder(model, kind="unilm", use_cache=use_cache)
    t0 = time.perf_counter()
    with counter(f"beam search ({num_beams} beam{'s' * (num_beams > 1)})", total=len(order), unit="problems") as bar:
        for start in range(0, len(order), settings.eval_batch_size):
            chunk = order[start : start + settings.eval_batch_size]
            prompts = [question_prompt(codec, ids[i], settings) for i in chunk]
            for i, gen in zip(chunk, beam_search(decoder, prompts, num_beams=num_beams, max_new_tokens=max_new, eos_id=codec.sep_id)):
                out[i] = codec.decode(gen.tokens)
            bar.update(len(chunk))
    return out, time.perf_counter() - t0


def check_prediction(pred: str, answer_value: float) -> tuple[bool, bool]:
    """``(correct, valid)``: valid when ``safe_eval`` accepts ``pred``; correct when it also matches to 6 decimals."""
    try:
        value = safe_eval(pred, max_abs=MAX_ABS)
    except (ValueError, ArithmeticError, RecursionError):  # UnsafeExpression is a ValueError; any error is wrong
        return False, False
    return answers_agree(value, float(answer_value)), True


def evaluate_split(model, codec: TextCodec, rows: Sequence[Mapping[str, Any]], settings: ApeSettings) -> tuple[dict, dict[str, list]]:
    """Loss on the gold equations and, for each beam size, accuracy / invalid rate / problems per second.

    Returns ``(metrics, columns)``: columns of the predictions table (id, question,
    gold_equation, answer, pred_beam<k>, correct_beam<k>).
    """
    examples, stats = encode_problems(codec, rows, settings)
    metrics: dict[str, Any] = {"problems": len(rows)}
    loss = evaluate_loss(model, examples, "unilm", pad_id=codec.pad_id, batch_size=settings.eval_batch_size)
    metrics.update(loss=loss["loss"], perplexity=loss["perplexity"], loss_tokens=loss["tokens"], loss_problems=stats.encoded)
    columns: dict[str, list] = {
        "id": [str(r["id"]) for r in rows],
        "question": [r["question"] for r in rows],
        "gold_equation": [r["equation"] for r in rows],
        "answer": [r["answer"] for r in rows],
    }
    for k in settings.beams:
        preds, seconds = decode_equations(model, codec, columns["question"], num_beams=k, settings=settings)
        checks = [check_prediction(p, r["answer_value"]) for p, r in zip(preds, rows)]
        n = max(len(rows), 1)
        metrics[f"accuracy_beam{k}"] = sum(c for c, _ in checks) / n
        metrics[f"invalid_rate_beam{k}"] = sum(not v for _, v in checks) / n
        metrics[f"problems_per_second_beam{k}"] = len(rows) / seconds if seconds > 0 else 0.0
        columns[f"pred_beam{k}"] = preds
        columns[f"correct_beam{k}"] = [c for c, _ in checks]
    return metrics, columns


def load_backbone(backbone_dir: str | Path, seed: int, device=None):
    """The backbone as a UniLM-ready ``(model, codec)``: two token types, equation pieces in the vocab.

    Seeded, so that rows added to the embeddings are the same every time it is loaded.
    """
    from transformers import set_seed

    set_seed(seed)
    codec = TextCodec.load(backbone_dir)
    model = load_model(backbone_dir, device or default_device(), head="unilm")
    ensure_token_types(model, 2)
    codec.ensure_tokens(EQUATION_PIECES, model)
    return model, codec


@dataclass
class ApeResult:
    model: Any
    codec: TextCodec
    train: TrainResult
    metrics: dict
    predictions: dict[str, dict[str, list]]  # split -> columns
    timings: dict = field(default_factory=dict)  # seconds and speeds, like metrics: for MLflow only


def finetune(
    settings: ApeSettings,
    backbone_dir: str | Path,
    train_rows: Sequence[Mapping[str, Any]],
    eval_splits: Mapping[str, Sequence[Mapping[str, Any]]],
    checkpoints_dir: str | Path,
    *,
    on_log: Callable[[dict], None] | None = None,
) -> ApeResult | None:
    """Train on ``train_rows``, then evaluate trained and untrained models on every split of ``eval_splits``.

    Checkpoints go to ``checkpoints_dir`` and are resumed from there when the run signature
    matches (:func:`zhnlp.train.heads.train_head`). Returns None on non-main processes under
    torchrun (only rank 0 evaluates and writes outputs). Decoding speeds go to ``timings``, not ``metrics``.
    """
    model, codec = load_backbone(backbone_dir, settings.seed)
    examples, stats = encode_problems(codec, train_rows, settings)
    if not examples:
        raise ValueError("no training problems left after encoding (all equations longer than max_target_len?)")
    lengths = {"max_source_len": settings.max_source_len, "max_target_len": settings.max_target_len}
    components = training_components("ape210k", settings, lengths, backbone_dir, examples, code=[Path(__file__)])
    result = train_head(
        model.train(),
        examples,
        mask_kind="unilm",
        pad_id=codec.pad_id,
        config=settings,
        checkpoints_dir=checkpoints_dir,
        components=components,
        on_log=on_log,
    )
    if not result.is_main_process:
        return None
    device = next(model.parameters()).device
    metrics, outputs, timings = compare_with_untrained(
        model, lambda: load_backbone(backbone_dir, settings.seed, device=device)[0], eval_splits,
        lambda m, rows: evaluate_split(m, codec, rows, settings),
    )
    metrics["train"], timings["train"] = stats.as_dict() | result.summary(), result.timings()
    predictions = outputs["trained"]
    metrics["improvement"] = {
        f"{split}.{key}": metrics["trained"][split][key] - metrics["untrained"][split][key]
        for split in eval_splits
        for key in ["loss", *(f"accuracy_beam{k}" for k in settings.beams)]
    }
    return ApeResult(model, codec, result, metrics, predictions, timings)
