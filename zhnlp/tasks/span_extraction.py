"""CMRC2018 span extraction: a start/end head over a BERT encoder, trained on passage windows.

The published recipe (techniques §5), with ``AutoModelForQuestionAnswering`` as the head:

**Inputs** are ``[CLS] question [SEP] passage window [SEP]`` from
:func:`zhnlp.text.char_offsets.encode_windows`: the question whole (capped, see
:func:`question_cap`), the passage cut into windows of ``max_seq_len`` tokens that overlap by
``doc_stride`` tokens (``cfg.doc_stride``; ``None`` means ``max_seq_len // 4``, i.e. 512 / 128 as
published). Segment ids are all 0, as in the CLUE baselines.

**Labels** (:func:`window_labels`): per window, the token start and end of the first gold answer
when the whole answer lies among the window's passage tokens, else ``(0, 0)``: the [CLS] token,
the null span. With overlapping windows a share of null windows is normal; they teach the model
to score [CLS] high where the answer is elsewhere.

**Decoding** (:func:`best_span`): in every window of a question, the ``TOP_K`` best start and end
tokens among the passage tokens are paired; a pair is valid when ``start <= end`` and it spans
at most :data:`MAX_ANSWER_TOKENS` tokens; its score is ``start_logit + end_logit``. The best
valid pair over all windows wins and is mapped back to characters through the window's offsets,
``context[offsets[start][0]:offsets[end][1]]``. The null span never wins: every CMRC2018
question has an answer in its passage. ``""`` only when no window has a passage token.

**Training** is :func:`zhnlp.train.epochs.fit_by_epoch` with an ``evaluate_fn`` that decodes the
dev questions and scores them with the caller's ``score_fn`` (the stage passes CMRC2018 EM/F1);
the best dev epoch's weights are kept.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zhnlp.text.char_offsets import Window, encode_windows
from zhnlp.train.epochs import FitSummary

# Longest answer decoded, in tokens (a valid span has end - start < MAX_ANSWER_TOKENS). SQuAD-style
# baselines use 30; 64 leaves room for longer CMRC2018 answers. The CMRC2018 trial sample has long
# answers (median 19 characters; 11% longer than 64): those can only be found in part. A head's
# ``max_answer_tokens`` attribute overrides it.
MAX_ANSWER_TOKENS = 64
# Start and end candidates kept per window: k*k pairs are scored instead of n*n.
TOP_K = 20


def question_cap(max_len: int, stride: int) -> int:
    """Characters of a question kept: half of what a window leaves after [CLS]/[SEP]s and the stride.

    A question must leave room for the passage (the tokenizer refuses a stride that does not fit
    beside the question); a token covers at least one character, so a character cap bounds the
    question's tokens. With 512 / 128 that is 190 characters, far above any CMRC2018 question.
    """
    return max(1, (max_len - 3 - stride) // 2)


def context_tokens(window: Window) -> list[int]:
    """Indices of the window's passage tokens (second sequence, with a character span)."""
    return [i for i, (seq, off) in enumerate(zip(window.sequence_ids, window.offsets)) if seq == 1 and off is not None]


def window_labels(window: Window, answer_start: int | None, answer_text: str | None) -> tuple[int, int]:
    """Token (start, end) of the answer in ``window``, or ``(0, 0)`` when it is not wholly inside."""
    if answer_start is None or answer_start < 0 or not answer_text:
        return 0, 0
    ctx = context_tokens(window)
    answer_end = answer_start + len(answer_text)  # exclusive
    if not ctx or window.offsets[ctx[0]][0] > answer_start or window.offsets[ctx[-1]][1] < answer_end:
        return 0, 0
    start = max(i for i in ctx if window.offsets[i][0] <= answer_start)
    end = min(i for i in ctx if window.offsets[i][1] >= answer_end)
    return (start, end) if start <= end else (0, 0)


def best_span(
    windows: Sequence[Window],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    *,
    top_k: int = TOP_K,
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
) -> tuple[int, int] | None:
    """The character span ``(start, end)`` (end exclusive) of the best-scoring valid span over the
    windows of one question, or ``None`` when no window has a passage token.

    ``start_logits[w]`` / ``end_logits[w]`` are window ``w``'s logits (at least as long as its tokens;
    padding beyond is ignored). Valid: both tokens in the passage, ``start <= end``,
    ``end - start < max_answer_tokens``. Score: ``start_logit + end_logit``; ties go to the earlier window.
    """
    best: tuple[float, int, int, int] | None = None  # score, window, start token, end token
    for w, window in enumerate(windows):
        ctx = np.asarray(context_tokens(window), dtype=np.int64)
        if ctx.size == 0:
            continue
        s_all = np.asarray(start_logits[w], dtype=np.float64)
        e_all = np.asarray(end_logits[w], dtype=np.float64)
        k = min(top_k, ctx.size)
        starts = ctx[np.argsort(-s_all[ctx], kind="stable")[:k]]
        ends = ctx[np.argsort(-e_all[ctx], kind="stable")[:k]]
        scores = s_all[starts][:, None] + e_all[ends][None, :]
        length = ends[None, :] - starts[:, None]
        scores = np.where((length >= 0) & (length < max_answer_tokens), scores, -np.inf)
        flat = int(np.argmax(scores))
        score = float(scores.flat[flat])
        if score == -np.inf:
            continue
        if best is None or score > best[0]:
            i, j = divmod(flat, scores.shape[1])
            best = (score, w, int(starts[i]), int(ends[j]))
    if best is None:
        return None
    _, w, s, e = best
    return windows[w].offsets[s][0], windows[w].offsets[e][1]


class SpanExtractionHead:
    """Start/end span extraction over a local backbone directory. Build with :meth:`from_pretrained`."""

    def __init__(self, model, tokenizer, *, max_seq_len: int = 128, doc_stride: int | None = None):
        self.model = model
        self.tokenizer = tokenizer  # a zhnlp.text.tokenization.ZhTokenizer
        self.max_seq_len = max_seq_len
        self.doc_stride = doc_stride  # None: max_seq_len // 4
        self.eval_batch_size = 64
        self.max_answer_tokens = MAX_ANSWER_TOKENS
        self.source_dir: Path | None = None

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, *, labels: Sequence[str] = (), seed: int = 42, max_seq_len: int = 128
    ) -> "SpanExtractionHead":
        """Any local BERT-style checkpoint with a (new or saved) start/end head; ``labels`` is unused.

        The folder is resolved by :func:`zhnlp.models.checkpoint.inspect_checkpoint`; the seed is set
        first, so a freshly initialised head is reproducible.
        """
        from transformers import AutoModelForQuestionAnswering, set_seed

        from zhnlp.models.checkpoint import inspect_checkpoint

        model_dir = Path(model_dir)
        checkpoint = inspect_checkpoint(model_dir)
        tokenizer = checkpoint.load_tokenizer()
        set_seed(seed)
        config = copy.deepcopy(checkpoint.config)
        config.num_labels = 2  # start and end logits
        model = AutoModelForQuestionAnswering.from_pretrained(
            str(model_dir), config=config, use_safetensors=True, trust_remote_code=False, local_files_only=True
        )
        head = cls(model, tokenizer, max_seq_len=max_seq_len)
        head.source_dir = model_dir
        return head

    # -- encoding

    @property
    def max_len(self) -> int:
        """Tokens per window: ``max_seq_len``, at most the backbone's position embeddings."""
        return min(self.max_seq_len, getattr(self.model.config, "max_position_embeddings", None) or self.max_seq_len)

    @property
    def stride(self) -> int:
        stride = self.max_len // 4 if self.doc_stride is None else self.doc_stride
        return min(stride, max(0, self.max_len // 2 - 1))

    def windows(self, rows: Sequence[Mapping[str, Any]]) -> list[Window]:
        """All windows of ``rows`` (``Window.example`` is the row index), passages windowed with the stride."""
        cap = question_cap(self.max_len, self.stride)
        questions = [str(r["question"] or "")[:cap] for r in rows]
        contexts = [str(r["context"] or "") for r in rows]
        return encode_windows(self.tokenizer, questions, contexts, max_length=self.max_len, stride=self.stride, overflow=True)

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Window], list[dict]]:
        """The windows of ``rows`` and their training features (inputs plus start/end positions of the first answer)."""
        windows = self.windows(rows)
        items = []
        for window in windows:
            row = rows[window.example]
            answers, starts = list(row.get("answers") or []), list(row.get("answer_starts") or [])
            text = answers[0] if answers else None
            start = starts[0] if starts else (str(row["context"]).find(text) if text else None)
            s, e = window_labels(window, start, text)
            items.append(window.features(zero_segments=True) | {"start_positions": s, "end_positions": e})
        return windows, items

    def _collator(self):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer.hf)

    # -- training

    def fit(
        self,
        train_rows: Sequence[Mapping[str, Any]],
        dev_rows: Sequence[Mapping[str, Any]],
        cfg,
        *,
        score_fn: Callable[[Sequence[Mapping[str, Any]], list[str]], Mapping[str, float]],
        metric: str,
        log_fn: Callable[[dict[str, float], int], None] | None = None,
        work_dir: str | Path | None = None,
    ) -> FitSummary:
        """Train on the windows of ``train_rows``; after each epoch decode ``dev_rows`` and score them
        with ``score_fn(dev_rows, answers)``; keep the epoch with the best ``metric``.

        ``cfg`` is a :class:`zhnlp.tasks.classification.ClassifierTraining` (``max_seq_len``,
        ``doc_stride``, the Trainer keys, ``early_stopping_patience``, ``full_determinism``).
        """
        from zhnlp.train.epochs import fit_by_epoch

        self.max_seq_len = cfg.max_seq_len
        self.doc_stride = cfg.doc_stride
        self.eval_batch_size = cfg.per_device_eval_batch_size or cfg.per_device_train_batch_size
        _, features = self.encode(train_rows)
        self.model, summary = fit_by_epoch(
            self.model,
            train_dataset=features,
            collator=self._collator(),
            tokenizer=self.tokenizer.hf,
            cfg=cfg,
            metric=metric,
            evaluate_fn=lambda model: score_fn(dev_rows, self.predict(dev_rows)),
            early_stopping_patience=cfg.early_stopping_patience,
            full_determinism=cfg.full_determinism,
            log_fn=log_fn,
            work_dir=work_dir,
        )
        return summary

    # -- inference

    def window_logits(self, windows: Sequence[Window], batch_size: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(start, end) float32 logits of each window, unpadded."""
        import torch

        batch_size = batch_size or self.eval_batch_size
        collate = self._collator()
        device = next(self.model.parameters()).device
        self.model.eval()
        out: list[tuple[np.ndarray, np.ndarray]] = []
        with torch.no_grad():
            for first in range(0, len(windows), batch_size):
                chunk = windows[first : first + batch_size]
                batch = collate([w.features(zero_segments=True) for w in chunk])
                result = self.model(**{k: v.to(device) for k, v in batch.items()})
                starts = result.start_logits.float().cpu().numpy()
                ends = result.end_logits.float().cpu().numpy()
                out.extend((starts[i, : len(w.input_ids)], ends[i, : len(w.input_ids)]) for i, w in enumerate(chunk))
        return out

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        """The answer string of each row: the best span over its windows (``""`` when the passage is empty)."""
        if not rows:
            return []
        windows = self.windows(rows)
        logits = self.window_logits(windows)
        by_row: dict[int, list[int]] = defaultdict(list)
        for i, window in enumerate(windows):
            by_row[window.example].append(i)
        answers = []
        for r, row in enumerate(rows):
            idx = by_row.get(r, [])
            span = best_span(
                [windows[i] for i in idx], [logits[i][0] for i in idx], [logits[i][1] for i in idx], max_answer_tokens=self.max_answer_tokens
            )
            answers.append("" if span is None else str(row["context"])[span[0] : span[1]])
        return answers

    def save(self, out_dir: str | Path) -> Path:
        """``save_pretrained`` (safetensors) of the model, and the tokenizer with ``zhnlp_tokenizer.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out))
        self.tokenizer.save(out)
        return out
