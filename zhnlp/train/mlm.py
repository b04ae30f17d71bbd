"""Masked-LM training data and metrics: encoded shards in, masked batches out (pure: torch, transformers, pyarrow).

* :class:`ShardedTokenDataset` - a map-style dataset over the encoded Parquet shards
  (``input_ids``, optional ``word_ids``; written by :class:`zhnlp.text.encoding.ShardWriter`). Only a
  few shards are held in memory at a time, so memory does not grow with the corpus;
  :class:`ShardWindowSampler` shuffles within windows of shards, deterministically from
  (seed, epoch), which is what lets the Trainer skip the already-seen batches exactly when it resumes.
* :class:`WholeWordMaskCollator` - dynamic padding plus transformers'
  ``DataCollatorForLanguageModeling(whole_word_mask=True)``, fed synthetic offsets built from
  the jieba ``word_ids`` so that the tokens of one word are masked together. The masking RNG is
  seeded per batch from (seed, epoch, row ids), never from the global RNG, so a resumed run
  masks exactly what the uninterrupted run masked.
* :func:`masked_lm_loss`, :class:`MaskedTokenAccuracy` / :func:`argmax_logits` - the loss, and
  held-out masked-token accuracy computed batch by batch (``batch_eval_metrics``) so evaluation
  memory stays flat.

Encoded shard schema (``data/encoded/<tokenizer>/{train,heldout}-NNNNN.parquet``, see
:func:`zhnlp.text.encoding.shard_schema`): ``input_ids: list<int32>`` with [CLS] ... [SEP];
``word_ids: list<int32>`` (same length, -1 for special tokens, one id per jieba word; optional);
``source: string``.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


class _Shard:
    __slots__ = ("ids", "ids_offsets", "wids", "wids_offsets", "wids_null")

    def __init__(self, table: pa.Table, with_word_ids: bool):
        col = table.column("input_ids").combine_chunks()
        if col.null_count:
            raise ValueError("input_ids has null rows")
        self.ids = col.values.to_numpy(zero_copy_only=False)
        self.ids_offsets = col.offsets.to_numpy()
        self.wids = self.wids_offsets = self.wids_null = None
        if with_word_ids:
            wcol = table.column("word_ids").combine_chunks()
            self.wids = wcol.values.to_numpy(zero_copy_only=False)
            self.wids_offsets = wcol.offsets.to_numpy()
            if wcol.null_count:  # rows without word ids fall back to WordPiece continuations
                self.wids_null = wcol.is_null().to_numpy(zero_copy_only=False)


# Kept over Hugging Face `datasets` because it measured faster (benchmarks/bench_token_dataset.py,
# datasets 5.2.0, 20 shards x 50k rows x 128 ids + word_ids, 200k rows in ShardWindowSampler order):
# ours 860-955k rows/s; Dataset.from_parquet(...).with_format("numpy") 14-15k rows/s one row at a
# time (60-64x slower), 103-111k rows/s in batches of 32 (7.7-9x slower). Its Arrow cache costs a one-time
# 2.4 s conversion and 985 MiB on disk next to 236 MiB of Parquet; peak RSS above imports was
# ours 440 MiB vs its 290 MiB (same windowed order) / 1012 MiB (global shuffle, mmapped pages).
class ShardedTokenDataset(torch.utils.data.Dataset):
    """Map-style dataset over encoded Parquet shards, reading a shard only when a row of it is asked for.

    Construction reads only the Parquet footers (row counts, columns). At most ``cache_shards``
    shards are held in memory (least recently used is dropped), as flat int32 arrays plus offsets.

    Index ``k`` may exceed ``len(self)``: ``k = epoch * len(self) + i`` names row ``i`` in epoch
    ``epoch`` (the :class:`ShardWindowSampler` yields such keys), so the collator can seed its
    masking from the key and a row is masked differently in every epoch yet identically when a run
    is resumed.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        use_word_ids: bool = True,
        cache_shards: int = 4,
        max_rows: int | None = None,
    ):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise FileNotFoundError("no encoded shards given")
        sizes, has_wids = [], []
        for path in self.paths:
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            if "input_ids" not in names:
                raise ValueError(f"{path}: no input_ids column (columns: {names})")
            sizes.append(pf.metadata.num_rows)
            has_wids.append("word_ids" in names)
        self.has_word_ids = bool(use_word_ids and all(has_wids))
        self.shard_sizes = sizes
        self.starts = [0]
        for n in sizes:
            self.starts.append(self.starts[-1] + n)
        total = self.starts[-1]
        self.num_rows = total if max_rows is None else min(int(max_rows), total)
        self.cache_shards = max(1, int(cache_shards))
        self._cache: OrderedDict[int, _Shard] = OrderedDict()
        self.shard_loads = 0  # how many times a shard was read from disk (for tests and diagnostics)
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_rows

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def loaded_shards(self) -> list[int]:
        return list(self._cache)

    def locate(self, i: int) -> tuple[int, int]:
        shard = bisect.bisect_right(self.starts, i) - 1
        return shard, i - self.starts[shard]

    def _shard(self, index: int) -> _Shard:
        shard = self._cache.get(index)
        if shard is not None:
            self._cache.move_to_end(index)
            return shard
        columns = ["input_ids", "word_ids"] if self.has_word_ids else ["input_ids"]
        shard = _Shard(pq.read_table(self.paths[index], columns=columns), self.has_word_ids)
        self.shard_loads += 1
        self._cache[index] = shard
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return shard

    def __getitem__(self, key: int) -> dict[str, Any]:
        key = int(key)
        i = key % self.num_rows
        s, r = self.locate(i)
        shard = self._shard(s)
        ids = shard.ids[shard.ids_offsets[r] : shard.ids_offsets[r + 1]]
        item: dict[str, Any] = {"input_ids": ids, "key": key}
        if shard.wids is not None and (shard.wids_null is None or not shard.wids_null[r]):
            item["word_ids"] = shard.wids[shard.wids_offsets[r] : shard.wids_offsets[r + 1]]
        return item

    def mean_length(self, max_rows: int = 20_000) -> float:
        """Mean tokens per row over the first shard (or its first ``max_rows`` rows)."""
        offsets = self._shard(0).ids_offsets[: max_rows + 1]
        return float(np.diff(offsets).mean()) if len(offsets) > 1 else 0.0

    def __getstate__(self) -> dict:  # DataLoader workers start with an empty cache
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state


class ShardWindowSampler(torch.utils.data.Sampler[int]):
    """Shuffles shard order, then rows within windows of ``window`` shards; deterministic per (seed, epoch).

    Yields keys ``epoch * len(dataset) + row`` (see :class:`ShardedTokenDataset`). Memory is one
    window's worth of row indices. The epoch lives on the dataset, so it is right whichever of
    ``sampler.set_epoch`` / ``dataset.set_epoch`` accelerate's wrappers happen to reach.
    """

    def __init__(self, dataset: ShardedTokenDataset, seed: int, window: int | None = None):
        self.dataset = dataset
        self.seed = int(seed)
        self.window = max(1, int(window or dataset.cache_shards))

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        ds, epoch = self.dataset, self.dataset.epoch
        n = len(ds)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(ds.shard_sizes))
        base = epoch * n
        for w in range(0, len(order), self.window):
            parts = [np.arange(ds.starts[s], ds.starts[s + 1]) for s in order[w : w + self.window]]
            rows = np.concatenate(parts)
            rows = rows[rows < n]
            rng.shuffle(rows)
            for row in rows.tolist():
                yield base + row


def synthetic_offsets(word_ids: np.ndarray, special: np.ndarray) -> np.ndarray:
    """Offsets that make DataCollatorForLanguageModeling see our word boundaries.

    The collator starts a new word where a token's start differs from the previous token's end.
    Token ``i`` of word group ``g`` gets ``(i + g, i + g + 1)``: consecutive tokens of one group
    touch, and each new group leaves a gap of one. A group is a run of equal word ids; a
    non-special token with id -1 is a group of its own.
    """
    word_ids = np.asarray(word_ids)
    special = np.asarray(special, dtype=bool)
    n = len(word_ids)
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = (word_ids[1:] != word_ids[:-1]) | special[:-1] | (word_ids[1:] < 0)
    groups = np.cumsum(new)
    starts = np.arange(n) + groups
    return np.stack([starts, starts + 1], axis=-1)


def continuation_word_ids(input_ids: np.ndarray, is_continuation: np.ndarray, special: np.ndarray) -> np.ndarray:
    """Word ids from WordPiece ``##`` continuation pieces (used when shards carry no word_ids)."""
    starts = ~is_continuation[input_ids] & ~special
    wid = np.cumsum(starts) - 1
    wid[special] = -1
    return wid


class WholeWordMaskCollator:
    """Pads a batch (dynamic padding) and masks it for MLM, whole words together.

    Selection is transformers' ``DataCollatorForLanguageModeling`` (``whole_word_mask=True``
    selects word starts with ``mlm_probability`` and extends to the whole word). As that collator
    turns every selected token into [MASK] under whole-word masking, the BERT 80/10/10 split is
    applied here afterwards, per token: ``mask_replace_prob`` [MASK], ``random_replace_prob`` a
    random non-special token, the rest unchanged.

    Randomness comes from a generator seeded per batch with (seed, the rows' keys), never from the
    global RNG, so masks are reproducible across processes and resumptions.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        mlm_probability: float = 0.15,
        whole_word_mask: bool = True,
        seed: int = 0,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        pad_to_multiple_of: int | None = None,
        max_length: int | None = None,
    ):
        if mask_replace_prob + random_replace_prob > 1:
            raise ValueError("mask_replace_prob + random_replace_prob must not exceed 1")
        self.tokenizer = tokenizer
        self.whole_word_mask = bool(whole_word_mask)
        self.seed = int(seed)
        self.mask_replace_prob = float(mask_replace_prob)
        self.random_replace_prob = float(random_replace_prob)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length
        self.pad_id = int(tokenizer.pad_token_id)
        self.mask_id = int(tokenizer.mask_token_id)
        vocab = len(tokenizer)
        special_ids = sorted({int(i) for i in tokenizer.all_special_ids if i is not None and 0 <= i < vocab})
        self._is_special = np.zeros(vocab, dtype=bool)
        self._is_special[special_ids] = True
        self._random_pool = torch.from_numpy(np.flatnonzero(~self._is_special))
        self._is_continuation = np.zeros(vocab, dtype=bool)
        for token, idx in tokenizer.get_vocab().items():
            if token.startswith("##") and idx < vocab:
                self._is_continuation[idx] = True
        self._hf = DataCollatorForLanguageModeling(
            tokenizer,
            mlm=True,
            whole_word_mask=self.whole_word_mask,
            mlm_probability=mlm_probability,
            mask_replace_prob=1.0,  # we apply 80/10/10 ourselves (see the class docstring)
            random_replace_prob=0.0,
        )

    def _seed_for(self, keys: Sequence[int]) -> int:
        digest = hashlib.blake2b(np.asarray([self.seed, *keys], dtype=np.int64).tobytes(), digest_size=8).digest()
        return int.from_bytes(digest, "little") & ((1 << 63) - 1)

    def pad(self, examples: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        """(input_ids, attention_mask, special_tokens_mask, offsets), padded to the longest row."""
        lengths = [len(e["input_ids"]) for e in examples]
        length = max(lengths)
        if self.max_length is not None and length > self.max_length:
            raise ValueError(f"a sequence has {length} tokens, more than max_position_embeddings={self.max_length}")
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
            if self.max_length is not None:
                length = min(length, self.max_length)
        batch = len(examples)
        ids = np.full((batch, length), self.pad_id, dtype=np.int64)
        attention = np.zeros((batch, length), dtype=np.int64)
        special = np.ones((batch, length), dtype=bool)
        offsets = np.zeros((batch, length, 2), dtype=np.int64)
        for row, (example, n) in enumerate(zip(examples, lengths)):
            row_ids = np.asarray(example["input_ids"], dtype=np.int64)
            ids[row, :n] = row_ids
            attention[row, :n] = 1
            row_special = self._is_special[row_ids]
            wids = example.get("word_ids")
            if wids is not None and self.whole_word_mask:
                wids = np.asarray(wids, dtype=np.int64)
                if len(wids) != n:
                    raise ValueError(f"row {example.get('key')}: word_ids has {len(wids)} ids for {n} tokens")
            elif self.whole_word_mask:
                wids = continuation_word_ids(row_ids, self._is_continuation, row_special)
            else:
                wids = np.arange(n)
            special[row, :n] = row_special
            offsets[row, :n] = synthetic_offsets(wids, row_special)
        return torch.from_numpy(ids), torch.from_numpy(attention), special, offsets

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        ids, attention, special, offsets = self.pad(examples)
        keys = [int(e.get("key", i)) for i, e in enumerate(examples)]
        generator = torch.Generator().manual_seed(self._seed_for(keys))
        self._hf.generator = generator
        try:
            inputs, labels = self._hf.torch_mask_tokens(
                ids.clone(),
                special_tokens_mask=torch.from_numpy(special.astype(np.int64)),
                offset_mapping=torch.from_numpy(offsets),
            )
        finally:
            self._hf.generator = None  # no state carried from batch to batch (or into workers)
        selected = labels != -100
        # torch_mask_tokens turned every selected token into [MASK]; redo the 80/10/10 split per token.
        u = torch.rand(labels.shape, generator=generator)
        keep = selected & (u >= self.mask_replace_prob + self.random_replace_prob)
        rand = selected & (u >= self.mask_replace_prob) & ~keep
        inputs[keep] = labels[keep]
        if rand.any():
            pick = torch.randint(len(self._random_pool), (int(rand.sum()),), generator=generator)
            inputs[rand] = self._random_pool[pick]
        return {"input_ids": inputs, "attention_mask": attention, "labels": labels}


# ---------------------------------------------------------------------------
# Loss and metrics
# ---------------------------------------------------------------------------


def masked_lm_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """Trainer ``compute_loss_func``: cross-entropy summed over masked tokens / their count in the whole step.

    The Trainer passes ``num_items_in_batch`` = masked tokens over all gradient-accumulation
    micro-batches and all processes (and multiplies the loss by the process count, which DDP's
    gradient averaging undoes), so every masked token weighs the same however the tokens fall
    across micro-batches and ranks. BertForMaskedLM's own loss is a per-batch mean that the
    Trainer would still multiply by the process count (doubling the loss under 2-process DDP).
    """
    logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
    if logits.dim() == labels.dim():  # masked positions only (zhnlp.models.masked_lm): (n_masked, V)
        labels = labels[labels != -100]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).to(logits.device), ignore_index=-100, reduction="sum"
    )
    if num_items_in_batch is None:
        return loss / (labels != -100).sum().clamp(min=1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def argmax_logits(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """``preprocess_logits_for_metrics``: keep only the predicted ids, not the vocab-wide logits.

    Logits of the masked positions only (``(n_masked, V)``) come back laid out like ``labels``."""
    if isinstance(logits, tuple):
        logits = logits[0]
    if labels is not None and logits.dim() == labels.dim():
        predicted = torch.full_like(labels, -100)
        predicted[labels != -100] = logits.argmax(dim=-1).to(labels.device)
        return predicted
    return logits.argmax(dim=-1)


class MaskedTokenAccuracy:
    """``compute_metrics`` for ``batch_eval_metrics=True``: accuracy over positions with labels != -100."""

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, predictions: Any, labels: Any) -> None:
        predictions, labels = torch.as_tensor(predictions), torch.as_tensor(labels)
        mask = labels != -100
        self.correct += int((predictions[mask] == labels[mask]).sum())
        self.total += int(mask.sum())

    def __call__(self, eval_pred, compute_result: bool = True) -> dict[str, float]:
        self.update(eval_pred.predictions, eval_pred.label_ids)
        if not compute_result:
            return {}
        result = {"masked_token_accuracy": self.correct / self.total if self.total else float("nan"), "masked_tokens": float(self.total)}
        self.correct = self.total = 0
        return result
