"""LCCC multi-turn dialogue as a DialoGPT-style LM on a BERT backbone (techniques.md section 4).

Input ``[CLS] u1 [SEP] u2 [SEP] ... un [SEP]``: each utterance and its ``[SEP]`` get token
type ``i mod 2`` (``i`` = the turn's index in the dialogue, so a left-truncated dialogue
keeps its speakers' types), ``[CLS]`` gets 0; causal mask. The loss is on every turn
(``loss_on: all_turns``, DialoGPT / Su's recipe: one pass trains every reply) or on the
last response only (``last_response``, CDial-GPT). Dialogues longer than ``max_seq_len``
are truncated from the left: the latest turns are kept, whole turns where at least one
fits (:func:`truncate_left`).

Evaluation (each dialogue: context = all turns but the last, reference = the last):
response perplexity over the reference tokens and its ``[SEP]``; character-level corpus
BLEU-2/4 (:func:`zhnlp.metrics.corpus_bleu`: sacrebleu, NLTK's "method1" smoothing, in 0-100) and
distinct-1/2 (:func:`zhnlp.metrics.distinct_n`, in 0-1) of replies sampled with the ``sampling`` params from a seeded
generator. :class:`ChatSession` is the interactive use of a trained model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zhnlp.tasks.generation import (
    IGNORE,
    Example,
    TextCodec,
    default_device,
    ensure_token_types,
    evaluate_loss,
    read_head,
)
from zhnlp.config import ConfigError, choice, from_params, in_range
from zhnlp.metrics import corpus_bleu, distinct_n
from zhnlp.models.decoding import BertDecoder, Prompt, load_model
from zhnlp.models.search import sample
from zhnlp.progress import counter
from zhnlp.train.arguments import TrainingSettings
from zhnlp.train.heads import TrainResult, compare_with_untrained, train_head, training_components

__all__ = [
    "LOSS_ON",
    "SamplingSettings",
    "DialogueSettings",
    "truncate_left",
    "dialogue_example",
    "reply_prompt",
    "encode_dialogues",
    "corpus_bleu",
    "distinct_n",
    "generate_replies",
    "evaluate_split",
    "load_backbone",
    "finetune",
    "LcccResult",
    "samples_markdown",
    "ChatSession",
    "load_chat_model",
]

LOSS_ON = ("all_turns", "last_response")


@dataclass(frozen=True, kw_only=True)
class SamplingSettings:
    """``finetune_lccc.sampling``: how replies are sampled (seeded), and how many go to samples.md."""

    top_k: int = 5  # 0: no top-k cut
    top_p: float = 1.0
    temperature: float = 1.0
    max_new_tokens: int = 32
    samples: int = 20  # sample replies written to samples.md

    def __post_init__(self):
        self.validate("finetune_lccc.sampling")

    def validate(self, where: str) -> None:
        if self.top_k < 0 or self.samples < 0 or self.max_new_tokens < 1:
            raise ConfigError(f"{where}: top_k and samples must be >= 0 and max_new_tokens >= 1 (got {self.top_k}, {self.samples}, {self.max_new_tokens})")
        in_range(f"{where}.top_p", self.top_p, 0.0, 1.0)
        if not self.temperature > 0 or not self.top_p > 0:
            raise ConfigError(f"{where}: temperature and top_p must be > 0 (got {self.temperature}, {self.top_p})")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, where: str = "finetune_lccc.sampling") -> SamplingSettings:
        return from_params(cls, params or {}, where)


@dataclass(frozen=True, kw_only=True)
class DialogueSettings(TrainingSettings):
    """The ``finetune_lccc`` params (strict, :func:`zhnlp.config.from_params`): the shared Trainer keys plus these."""

    backbone: str = "char"  # a name under models/pretrain/, or a path (runs by hand, tests)
    max_seq_len: int = 128
    loss_on: str = "all_turns"  # one of LOSS_ON
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    eval_batch_size: int = 32

    def __post_init__(self):
        self.validate("finetune_lccc")

    def validate(self, where: str) -> None:
        super().validate(where)
        choice(f"{where}.loss_on", self.loss_on, LOSS_ON)
        if self.eval_batch_size < 1:
            raise ConfigError(f"{where}.eval_batch_size: {self.eval_batch_size!r} is not allowed; use a number >= 1")
        if self.sampling.max_new_tokens >= self.max_seq_len - 2:
            raise ConfigError(f"{where}.sampling.max_new_tokens: {self.sampling.max_new_tokens} must leave room for a context within max_seq_len ({self.max_seq_len})")

    @classmethod
    def from_params(cls, params: Mapping[str, Any], where: str = "finetune_lccc") -> DialogueSettings:
        return from_params(cls, params, where)


# ---------------------------------------------------------------------------------------------
# sequences


def truncate_left(turns: Sequence[Sequence[int]], budget: int) -> tuple[list[list[int]], int]:
    """The latest turns that fit ``budget`` tokens (each turn costs its tokens + one ``[SEP]``).

    Returns ``(kept turns, index of the first kept turn)``. Whole turns are kept while at
    least one fits; if even the last turn does not, its last ``budget - 1`` tokens are kept
    (the sequence is cut on the left, inside that turn).
    """
    if budget < 2:
        raise ValueError("budget must allow at least one token and its [SEP]")
    kept: list[list[int]] = []
    used = 0
    for index in range(len(turns) - 1, -1, -1):
        cost = len(turns[index]) + 1
        if used + cost > budget:
            break
        kept.insert(0, list(turns[index]))
        used += cost
    if not kept and turns:
        return [list(turns[-1])[-(budget - 1) :]], len(turns) - 1
    return kept, len(turns) - len(kept)


def _layout(turns: Sequence[Sequence[int]], first: int, cls_id: int, sep_id: int) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """ids and token types of ``[CLS] t [SEP] ...``, and each turn's (start, end) span including its [SEP]."""
    ids, types, spans = [cls_id], [0], []
    for j, turn in enumerate(turns):
        start = len(ids)
        ids += [*turn, sep_id]
        types += [(first + j) % 2] * (len(turn) + 1)
        spans.append((start, len(ids)))
    return ids, types, spans


def dialogue_example(turns: Sequence[Sequence[int]], *, cls_id: int, sep_id: int, max_len: int, loss_on: str) -> Example:
    """One training sequence: left-truncated to ``max_len``; labels on every turn or on the last one."""
    kept, first = truncate_left(turns, max_len - 1)
    ids, types, spans = _layout(kept, first, cls_id, sep_id)
    labels = [IGNORE] * len(ids)
    targets = spans if loss_on == "all_turns" else spans[-1:]
    for start, end in targets:
        labels[start:end] = ids[start:end]
    return Example(ids, types, labels)


def reply_prompt(context: Sequence[Sequence[int]], *, cls_id: int, sep_id: int, budget: int) -> Prompt:
    """``[CLS] context...`` within ``budget`` tokens; the reply gets the next speaker's token type."""
    kept, first = truncate_left(context, budget - 1)
    ids, types, _ = _layout(kept, first, cls_id, sep_id)
    return Prompt(ids, types, next_segment=len(context) % 2)


def encode_dialogues(codec: TextCodec, dialogues: Sequence[Mapping[str, Any]]) -> list[list[list[int]]]:
    """Token ids of every turn of every dialogue (one batched tokenizer call)."""
    flat = [t for d in dialogues for t in d["turns"]]
    ids = codec.encode_many(flat)
    out, i = [], 0
    for d in dialogues:
        out.append(ids[i : i + len(d["turns"])])
        i += len(d["turns"])
    return out


# ---------------------------------------------------------------------------------------------
# metrics


def _chars(text: str) -> list[str]:
    return [ch for ch in text if not ch.isspace()]


# ---------------------------------------------------------------------------------------------
# generation and evaluation


def generate_replies(
    model,
    codec: TextCodec,
    contexts: Sequence[Sequence[Sequence[int]]],
    settings: DialogueSettings,
    generator: torch.Generator,
    sampling: SamplingSettings | None = None,
    *,
    show_progress: bool = True,
) -> list[str]:
    """One sampled reply per context (token ids per turn), in order; batches of ``eval_batch_size``.

    ``show_progress``: a bar over the contexts (:mod:`zhnlp.progress`); the chat turns it off.
    """
    s = sampling or settings.sampling
    budget = min(settings.max_seq_len, model.config.max_position_embeddings) - s.max_new_tokens
    decoder = BertDecoder(model, kind="causal")
    replies: list[str] = []
    with counter("sampling replies", total=len(contexts), unit="dialogues", show=show_progress) as bar:
        for start in range(0, len(contexts), settings.eval_batch_size):
            prompts = [reply_prompt(c, cls_id=codec.cls_id, sep_id=codec.sep_id, budget=budget) for c in contexts[start : start + settings.eval_batch_size]]
            gens = sample(
                decoder,
                prompts,
                max_new_tokens=s.max_new_tokens,
                eos_id=codec.sep_id,
                top_k=s.top_k,
                top_p=s.top_p,
                temperature=s.temperature,
                generator=generator,
            )
            replies += [codec.decode(g.tokens) for g in gens]
            bar.update(len(prompts))
    return replies


def evaluate_split(model, codec: TextCodec, dialogues: Sequence[Mapping[str, Any]], settings: DialogueSettings, seed: int) -> tuple[dict, list[dict]]:
    """Response perplexity, BLEU-2/4, distinct-1/2 and replies per second; and one row per dialogue."""
    turns = encode_dialogues(codec, dialogues)
    examples = [dialogue_example(t, cls_id=codec.cls_id, sep_id=codec.sep_id, max_len=settings.max_seq_len, loss_on="last_response") for t in turns]
    loss = evaluate_loss(model, examples, "causal", pad_id=codec.pad_id, batch_size=settings.eval_batch_size)
    generator = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    replies = generate_replies(model, codec, [t[:-1] for t in turns], settings, generator)
    seconds = time.perf_counter() - t0
    references = [d["turns"][-1] for d in dialogues]
    hyps, refs = [_chars(r) for r in replies], [_chars(r) for r in references]
    metrics = {
        "dialogues": len(dialogues),
        "loss": loss["loss"],
        "perplexity": loss["perplexity"],
        "response_tokens": loss["tokens"],
        "bleu2": corpus_bleu(hyps, refs, max_n=2),
        "bleu4": corpus_bleu(hyps, refs, max_n=4),
        "distinct1": distinct_n(hyps, 1),
        "distinct2": distinct_n(hyps, 2),
        "reply_chars_mean": sum(map(len, hyps)) / max(len(hyps), 1),
        "replies_per_second": len(replies) / seconds if seconds > 0 else 0.0,
    }
    rows = [
        {"dialogue_id": str(d.get("dialogue_id", i)), "context": list(d["turns"][:-1]), "reference": ref, "reply": reply}
        for i, (d, ref, reply) in enumerate(zip(dialogues, references, replies))
    ]
    return metrics, rows


def load_backbone(backbone_dir: str | Path, seed: int, device=None):
    """``(model, codec)`` of the backbone with two token types (seeded: any new rows are reproducible)."""
    from transformers import set_seed

    set_seed(seed)
    codec = TextCodec.load(backbone_dir)
    model = load_model(backbone_dir, device or default_device(), head="causal")
    ensure_token_types(model, 2)
    return model, codec


@dataclass
class LcccResult:
    model: Any
    codec: TextCodec
    train: TrainResult
    metrics: dict
    replies: dict[str, list[dict]]  # split -> rows of the trained model
    untrained_replies: dict[str, list[dict]]
    timings: dict = field(default_factory=dict)  # seconds and speeds, like metrics: for MLflow only


def finetune(
    settings: DialogueSettings,
    backbone_dir: str | Path,
    train_dialogues: Sequence[Mapping[str, Any]],
    eval_splits: Mapping[str, Sequence[Mapping[str, Any]]],
    checkpoints_dir: str | Path,
    *,
    on_log: Callable[[dict], None] | None = None,
) -> LcccResult | None:
    """Train on ``train_dialogues``, then evaluate trained and untrained models on ``eval_splits``.

    Checkpoints go to ``checkpoints_dir`` and are resumed from there when the run signature
    matches (:func:`zhnlp.train.heads.train_head`). Returns None on non-main processes under torchrun.
    Generation speeds go to ``timings``, not ``metrics``.
    """
    model, codec = load_backbone(backbone_dir, settings.seed)
    turns = encode_dialogues(codec, train_dialogues)
    examples = [dialogue_example(t, cls_id=codec.cls_id, sep_id=codec.sep_id, max_len=settings.max_seq_len, loss_on=settings.loss_on) for t in turns]
    if not examples:
        raise ValueError("no training dialogues")
    shape = {"max_seq_len": settings.max_seq_len, "loss_on": settings.loss_on}
    components = training_components("lccc", settings, shape, backbone_dir, examples, code=[Path(__file__)])
    result = train_head(
        model.train(),
        examples,
        mask_kind="causal",
        pad_id=codec.pad_id,
        config=settings,
        checkpoints_dir=checkpoints_dir,
        components=components,
        on_log=on_log,
    )
    if not result.is_main_process:
        return None
    train_metrics = {
        "dialogues": len(examples),
        "target_tokens": sum(sum(l != IGNORE for l in e.labels) for e in examples),
        "truncated_dialogues": sum(len(e.input_ids) < 1 + sum(len(t) + 1 for t in ts) for e, ts in zip(examples, turns)),
    } | result.summary()
    device = next(model.parameters()).device
    metrics, replies, timings = compare_with_untrained(
        model, lambda: load_backbone(backbone_dir, settings.seed, device=device)[0], eval_splits,
        lambda m, dialogues: evaluate_split(m, codec, dialogues, settings, settings.seed),
    )
    metrics["train"], timings["train"] = train_metrics, result.timings()
    metrics["improvement"] = {
        f"{split}.{key}": metrics["trained"][split][key] - metrics["untrained"][split][key]
        for split in eval_splits
        for key in ("perplexity", "bleu2", "bleu4", "distinct1", "distinct2")
    }
    return LcccResult(model, codec, result, metrics, replies["trained"], replies["untrained"], timings)


def samples_markdown(replies: Sequence[Mapping[str, Any]], untrained: Sequence[Mapping[str, Any]], n: int, sampling: SamplingSettings, title: str) -> str:
    """The first ``n`` dialogues: context, reference, the trained and the untrained model's reply."""
    lines = [
        f"# {title}",
        "",
        f"Sampling: top_k={sampling.top_k}, top_p={sampling.top_p}, temperature={sampling.temperature}, "
        f"max_new_tokens={sampling.max_new_tokens} (seeded).",
        "",
    ]
    for i, (row, base) in enumerate(zip(replies[:n], untrained[:n]), start=1):
        lines.append(f"## {i}. `{row['dialogue_id']}`")
        lines.append("")
        for j, turn in enumerate(row["context"]):
            lines.append(f"- {'AB'[j % 2]}: {turn}")
        lines += [
            "",
            f"- reference: {row['reference']}",
            f"- **trained**: {row['reply']}",
            f"- untrained: {base['reply']}",
            "",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# chat


def load_chat_model(model_dir: str | Path, device=None):
    """``(model, codec, settings)`` of a saved dialogue head (``models/finetune_lccc``)."""
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no model in {folder} (expected config.json; run `dvc repro finetune_lccc`)")
    meta = read_head(folder)
    settings = DialogueSettings(
        max_seq_len=int(meta.get("max_seq_len", 128)),
        sampling=SamplingSettings.from_params(meta.get("sampling")),
    )
    return load_model(folder, device or default_device(), head="causal"), TextCodec.load(folder), settings


class ChatSession:
    """A dialogue with a trained model: the history grows by the user's turn and the model's reply.

    Replies are sampled from one generator seeded at the start (or at :meth:`reset`), so the
    same inputs give the same replies.
    """

    def __init__(self, model, codec: TextCodec, settings: DialogueSettings, *, seed: int = 0, sampling: SamplingSettings | None = None):
        self.model, self.codec, self.settings = model, codec, settings
        self.sampling = sampling or settings.sampling
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self.history: list[str] = []
        self.generator = torch.Generator().manual_seed(self.seed)

    def reply(self, text: str) -> str:
        text = text.strip()
        if not text:
            raise ValueError("empty input")
        self.history.append(text)
        context = self.codec.encode_many(self.history)
        answer = generate_replies(self.model, self.codec, [context], self.settings, self.generator, self.sampling, show_progress=False)[0]
        self.history.append(answer)
        return answer
