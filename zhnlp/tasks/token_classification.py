"""CLUENER named entities with a transformer encoder: BIO tags per token, decoded back to character spans.

Rows are the prepared ``ner`` rows (:mod:`zhnlp.data.cluener`): ``id``, ``text`` and ``entities``
(``{type, start, end, text}``, ``end`` INCLUSIVE as in CLUENER). The head is
``AutoModelForTokenClassification`` over a local backbone, with the tags ``O, B-<type>, I-<type>, ...``
built from the task's entity types, as the CLUENER2020 BERT baselines (softmax over BIO, no CRF).

**Alignment.** Each token's character span comes from :func:`zhnlp.text.char_offsets.encode_windows`,
so char, word (WoBERT, jieba pieces) and pretrained tokenizers all align the same way. A token is
labelled by its FIRST character: ``B-t`` if that character starts an entity of type ``t``, ``I-t``
if it lies inside one, else ``O``; special tokens get -100 (ignored by the loss). A token covering
several characters (a Latin word piece, a WoBERT word) that straddles an entity boundary therefore
takes the label of its first character: the entity it cuts cannot be recovered exactly (such
entities are rare in CLUENER, whose entities are whole words). A text longer than the window is
truncated: its tail is never labelled in training and is predicted as no entity.

**Overlapping gold entities** (CLUENER has a few nested ones) cannot all be BIO-tagged: per row,
entities are taken in ``(start, -length)`` order and one overlapping an already kept entity is
dropped; :attr:`NerHead.dropped_overlaps` counts them (for the last encoded training set).

**Decoding** (:func:`decode_tags`) is the usual lenient BIO reading: ``B-t`` opens an entity, ``I-t``
continues an open entity of type ``t``, and an ``I-t`` after ``O``, after another type, or at the
start opens a new entity of type ``t``; ``O`` closes. A token span becomes the character span from
the first token's start to the last token's end (``end`` = that end - 1, inclusive), and the entity
text is ``text[start:end + 1]`` of the original (un-normalised) text.

**Training** is :func:`zhnlp.train.epochs.fit_by_epoch` with ``DataCollatorForTokenClassification``
(labels padded with -100); the dev score each epoch is ``score_fn(dev_rows, self.predict(dev_rows))``
on the decoded entities (e.g. :func:`zhnlp.metrics.entity_scores`), and ``metric`` (``"f1"``) picks
the epoch kept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from zhnlp.train.epochs import FitSummary

IGNORE = -100  # label of special tokens, skipped by the loss


# ---------------------------------------------------------------------------------------------
# tags, alignment and decoding (no torch)


def bio_tags(types: Sequence[str]) -> list[str]:
    """``["address", "book"]`` -> ``["O", "B-address", "I-address", "B-book", "I-book"]``."""
    types = [str(t) for t in types]
    if len(set(types)) != len(types) or any(not t or t == "O" for t in types):
        raise ValueError(f"entity types must be distinct, non-empty and not 'O': {types!r}")
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def types_of(tags: Sequence[str]) -> list[str]:
    """The entity types of a BIO tag list (inverse of :func:`bio_tags`)."""
    return [t[2:] for t in tags if t.startswith("B-")]


def drop_overlaps(entities: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], int]:
    """Entities in ``(start, -length)`` order with every one that overlaps an earlier kept one removed,
    and how many were removed (nested or crossing gold entities cannot share one BIO sequence)."""
    kept: list[Mapping[str, Any]] = []
    taken: set[int] = set()
    dropped = 0
    for e in sorted(entities, key=lambda e: (int(e["start"]), -(int(e["end"]) - int(e["start"])))):
        span = range(int(e["start"]), int(e["end"]) + 1)
        if taken.intersection(span):
            dropped += 1
            continue
        taken.update(span)
        kept.append(e)
    return kept, dropped


def token_tags(offsets: Sequence[tuple[int, int] | None], entities: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """The BIO tag of each token (None for special tokens), by the token's first character.

    ``offsets`` are the tokens' ``(start, end)`` character spans (end exclusive, None: special);
    ``entities`` must not overlap (see :func:`drop_overlaps`).
    """
    char_tag: dict[int, str] = {}
    for e in entities:
        start, end, kind = int(e["start"]), int(e["end"]), str(e["type"])
        char_tag[start] = f"B-{kind}"
        for c in range(start + 1, end + 1):
            char_tag[c] = f"I-{kind}"
    return [None if span is None else char_tag.get(span[0], "O") for span in offsets]


def decode_tags(tags: Sequence[str | None], offsets: Sequence[tuple[int, int] | None], text: str) -> list[dict[str, Any]]:
    """Entities ``{type, start, end (inclusive), text}`` from per-token BIO tags (lenient: an ``I-t``
    that does not continue an open ``t`` entity opens one). Tokens without offsets are skipped."""
    out: list[dict[str, Any]] = []
    current: list[Any] | None = None  # [type, start char, end char exclusive]

    def close() -> None:
        if current is not None:
            kind, start, end = current
            out.append({"type": kind, "start": start, "end": end - 1, "text": text[start:end]})

    for tag, span in zip(tags, offsets):
        if span is None:
            continue
        if tag is None or tag == "O" or tag[:2] not in ("B-", "I-"):
            close()
            current = None
        elif tag.startswith("I-") and current is not None and current[0] == tag[2:]:
            current[2] = span[1]
        else:  # B-t, or an I-t that opens an entity
            close()
            current = [tag[2:], span[0], span[1]]
    close()
    return out


# ---------------------------------------------------------------------------------------------
# the head


class NerHead:
    """A BIO token classifier over a local backbone directory. Build with :meth:`from_pretrained`."""

    def __init__(self, model, tokenizer, tags: Sequence[str], max_seq_len: int = 128, zero_segments: bool = True):
        self.model = model
        self.tokenizer = tokenizer  # a zhnlp.text.tokenization.ZhTokenizer
        self.tags = list(tags)
        self.tag2id = {t: i for i, t in enumerate(self.tags)}
        self.max_seq_len = max_seq_len
        self.zero_segments = zero_segments
        self.dropped_overlaps = 0  # gold entities dropped as overlapping, in the last encode() with labels

    @property
    def labels(self) -> list[str]:
        """The entity types."""
        return types_of(self.tags)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, *, labels: Sequence[str] = (), seed: int = 42, max_seq_len: int = 128) -> "NerHead":
        """Any local BERT-style checkpoint with a (new or saved) token classification head.

        ``labels`` are the entity types; empty: those of a saved NER head (its config's ``id2label``).
        The seed is set before the head is created, so a fresh head is reproducible.
        """
        from transformers import AutoModelForTokenClassification, set_seed

        from zhnlp.models.checkpoint import inspect_checkpoint

        model_dir = Path(model_dir)
        checkpoint = inspect_checkpoint(model_dir)
        tokenizer = checkpoint.load_tokenizer()
        config = copy.deepcopy(checkpoint.config)
        if labels:
            tags = bio_tags(labels)
        else:
            saved = [str(config.id2label[i]) for i in sorted(config.id2label, key=int)] if getattr(config, "id2label", None) else []
            if not saved or saved[0] != "O" or bio_tags(types_of(saved)) != saved:
                raise ValueError(f"{model_dir}: no NER tags in config.json (id2label {saved!r}); pass the entity types as labels")
            tags = saved
        config.num_labels = len(tags)
        config.id2label = dict(enumerate(tags))
        config.label2id = {t: i for i, t in enumerate(tags)}
        set_seed(seed)
        model = AutoModelForTokenClassification.from_pretrained(
            str(model_dir), config=config, use_safetensors=True, trust_remote_code=False, local_files_only=True
        )
        return cls(model, tokenizer, tags, max_seq_len=max_seq_len)

    # -- encoding

    def _limit(self) -> int:
        return min(self.max_seq_len, getattr(self.model.config, "max_position_embeddings", None) or self.max_seq_len)

    def encode(self, rows: Sequence[Mapping[str, Any]], with_labels: bool = True):
        """(features, windows): one window per row (truncated to ``max_seq_len``), with BIO label ids
        when ``with_labels`` and the row has entities (a null ``entities`` means unlabelled)."""
        from zhnlp.text.char_offsets import encode_windows

        windows = encode_windows(self.tokenizer, [str(r["text"]) for r in rows], max_length=self._limit())
        items = []
        dropped = 0
        for window, row in zip(windows, rows):
            item = window.features(zero_segments=self.zero_segments)
            if with_labels and row.get("entities") is not None:
                entities, n = drop_overlaps(row["entities"])
                dropped += n
                for e in entities:
                    if f"B-{e['type']}" not in self.tag2id:
                        raise ValueError(f"row {row.get('id')!r}: entity type {e['type']!r} is not one of {self.labels}")
                item["labels"] = [IGNORE if t is None else self.tag2id[t] for t in token_tags(window.offsets, entities)]
            items.append(item)
        if with_labels:
            self.dropped_overlaps = dropped
        return items, windows

    def _collator(self):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(self.tokenizer.hf, label_pad_token_id=IGNORE)

    # -- training

    def fit(
        self,
        train_rows: Sequence[Mapping[str, Any]],
        dev_rows: Sequence[Mapping[str, Any]],
        cfg,
        *,
        score_fn: Callable[[Sequence[Mapping[str, Any]], list], Mapping[str, float]],
        metric: str,
        log_fn: Callable[[dict[str, float], int], None] | None = None,
    ) -> FitSummary:
        """Train on ``train_rows``; after each epoch score ``predict(dev_rows)`` with ``score_fn`` and keep
        the epoch with the best ``metric``. ``cfg`` is a :class:`zhnlp.tasks.classification.ClassifierTraining`."""
        from zhnlp.train.epochs import fit_by_epoch

        self.max_seq_len = cfg.max_seq_len
        train, _ = self.encode(train_rows)
        self.model, summary = fit_by_epoch(
            self.model,
            train_dataset=train,
            collator=self._collator(),
            tokenizer=self.tokenizer.hf,
            cfg=cfg,
            metric=metric,
            evaluate_fn=lambda model: score_fn(dev_rows, self._predict(model, dev_rows, cfg.per_device_eval_batch_size or 64)),
            early_stopping_patience=cfg.early_stopping_patience,
            full_determinism=cfg.full_determinism,
            log_fn=log_fn,
        )
        return summary

    # -- inference

    def predict(self, rows: Sequence[Mapping[str, Any]], batch_size: int = 64) -> list[list[dict[str, Any]]]:
        """Per row, its entities ``{type, start, end (inclusive), text}`` in text order."""
        return self._predict(self.model, rows, batch_size)

    def _predict(self, model, rows: Sequence[Mapping[str, Any]], batch_size: int) -> list[list[dict[str, Any]]]:
        import torch

        if not rows:
            return []
        features, windows = self.encode(rows, with_labels=False)
        collate = self._collator()
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        out: list[list[dict[str, Any]]] = []
        with torch.no_grad():
            for start in range(0, len(features), batch_size):
                idx = range(start, min(start + batch_size, len(features)))
                batch = {k: v.to(device) for k, v in collate([features[i] for i in idx]).items()}
                best = model(**batch).logits.argmax(dim=-1).cpu().tolist()
                for i, ids in zip(idx, best):
                    window = windows[i]
                    tags = [self.tags[t] for t in ids[: len(window.offsets)]]
                    out.append(decode_tags(tags, window.offsets, str(rows[window.example]["text"])))
        model.train(was_training)
        return out

    def save(self, out_dir: str | Path) -> Path:
        """``save_pretrained`` (safetensors, tags in config ``id2label``) and the tokenizer with ``zhnlp_tokenizer.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out))
        self.tokenizer.save(out)
        return out
