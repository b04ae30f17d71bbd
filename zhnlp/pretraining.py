"""BERT masked-LM pretraining with jieba whole-word masking (pure: torch, transformers, pyarrow).

Pieces, each usable on its own:

* :func:`build_model` - a ``BertForMaskedLM`` sized to the tokenizer from ``pretrain.model``
  params, or loaded from a local safetensors checkpoint (``init_from``), with
  :func:`check_capacity` (the n > 8.33 ln N embedding-width rule, techniques.md section 7).
* :class:`ShardedTokenDataset` - a map-style dataset over the encoded Parquet shards
  (``input_ids``, optional ``word_ids``). Only a few shards are held in memory at a time, so
  memory does not grow with the corpus; :class:`ShardWindowSampler` shuffles within windows of
  shards, deterministically from (seed, epoch), which is what lets the Trainer skip the
  already-seen batches exactly when it resumes.
* :class:`WholeWordMaskCollator` - dynamic padding plus transformers'
  ``DataCollatorForLanguageModeling(whole_word_mask=True)``, fed synthetic offsets built from
  the jieba ``word_ids`` so that the tokens of one word are masked together. The masking RNG is
  seeded per batch from (seed, epoch, row ids), never from the global RNG, so a resumed run
  masks exactly what the uninterrupted run masked.
* :class:`MaskedTokenAccuracy` / :func:`argmax_logits` - held-out masked-token accuracy, computed
  batch by batch (``batch_eval_metrics``) so evaluation memory stays flat.
* :class:`ThroughputCallback` - non-pad tokens per second of training (evaluation and
  checkpointing excluded) and, on CUDA, estimated MFU against the GPU's peak bf16 FLOP/s.
* :func:`training_arguments`, :class:`PretrainTrainer`, :func:`build_trainer`.
* Resume support: :func:`run_signature`, :func:`prepare_checkpoint_dir`,
  :func:`last_complete_checkpoint`.

Encoded shard schema (``data/encoded/<tokenizer>/{train,heldout}-NNNNN.parquet``):
``input_ids: list<int32>`` with [CLS] ... [SEP]; ``word_ids: list<int32>`` (same length, -1 for
special tokens, one id per jieba word; optional); ``source: string``.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

SHARD_SCHEMA = pa.schema(
    [("input_ids", pa.list_(pa.int32())), ("word_ids", pa.list_(pa.int32())), ("source", pa.string())]
)
CAPACITY_FACTOR = 8.33  # n > 8.33 ln N (techniques.md section 7)
SIGNATURE_FILE = "signature.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

# Dense (no sparsity) peak bf16 tensor-core FLOP/s per GPU, from NVIDIA's data sheets.
# Matched in order against torch.cuda.get_device_name(); anything else is "unknown".
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200 NVL", 835e12),
    ("H200", 989.4e12),  # H200 SXM
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),  # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    ("A100", 312e12),  # SXM4 and PCIe alike
)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityCheck:
    hidden_size: int
    vocab_size: int
    floor: float  # 8.33 ln(vocab_size)

    @property
    def ok(self) -> bool:
        return self.hidden_size >= self.floor


def capacity_floor(vocab_size: int) -> float:
    return CAPACITY_FACTOR * math.log(vocab_size)


def check_capacity(hidden_size: int, vocab_size: int) -> CapacityCheck:
    """Warn when the embedding width is below 8.33 ln(vocab); the result's ``ok`` is the flag."""
    check = CapacityCheck(int(hidden_size), int(vocab_size), capacity_floor(vocab_size))
    if not check.ok:
        warnings.warn(
            f"hidden_size {hidden_size} is below the embedding-capacity floor 8.33*ln({vocab_size}) = "
            f"{check.floor:.1f}: token embeddings this narrow cannot separate a vocabulary this large "
            "(techniques.md section 7)",
            UserWarning,
            stacklevel=2,
        )
    return check


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A local fast tokenizer directory (never the Hub); it must have [MASK] and [PAD]."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    missing = [name for name in ("mask_token", "pad_token", "cls_token", "sep_token") if getattr(tok, name) is None]
    if missing:
        raise ValueError(f"tokenizer {path} lacks {missing}; masked-LM pretraining needs [PAD] [CLS] [SEP] [MASK]")
    return tok


def build_model(
    tokenizer: PreTrainedTokenizerBase, model_params: Mapping[str, Any] | None = None, init_from: str | Path | None = None
) -> tuple[BertForMaskedLM, dict[str, Any]]:
    """A BertForMaskedLM for ``tokenizer``: fresh from ``model_params`` or loaded from ``init_from``.

    Returns the model and an info dict (source, vocab sizes, parameter count, capacity check).
    """
    vocab = len(tokenizer)
    info: dict[str, Any] = {"vocab_size": vocab}
    if init_from:
        path = Path(init_from)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"init_from {path} is not a local checkpoint directory (no config.json)")
        model = BertForMaskedLM.from_pretrained(
            str(path), use_safetensors=True, trust_remote_code=False, local_files_only=True
        )
        info["init_from"] = str(path)
        old = model.get_input_embeddings().num_embeddings
        if old != vocab:
            warnings.warn(
                f"checkpoint {path} has {old} token embeddings but the tokenizer has {vocab} tokens: resizing the "
                f"embeddings to {vocab} (new rows start from the mean embedding; ids beyond {old} are untrained)",
                UserWarning,
                stacklevel=2,
            )
            model.resize_token_embeddings(vocab, mean_resizing=True)
            info["resized_embeddings_from"] = old
        if model_params:
            info["ignored_model_params"] = sorted(model_params)  # the checkpoint's architecture wins
    else:
        params = dict(model_params or {})
        config = BertConfig(
            vocab_size=vocab,
            pad_token_id=tokenizer.pad_token_id,
            type_vocab_size=params.pop("type_vocab_size", 2),
            **params,
        )
        model = BertForMaskedLM(config)
    model.config.pad_token_id = tokenizer.pad_token_id
    info["capacity"] = check_capacity(model.config.hidden_size, vocab)
    info["parameters"] = sum(p.numel() for p in model.parameters())
    return model, info


def flops_per_token(model: torch.nn.Module, seq_len: float) -> float:
    """Training FLOPs per token: 6*N plus attention 12*layers*hidden*seq_len (fwd + bwd).

    N counts the matmul weights a token passes through: all parameters except the position and
    token-type embedding tables (lookups); the word embeddings count once, as the tied LM head
    that BertForMaskedLM applies at every position.
    """
    config = model.config
    n = sum(p.numel() for p in model.parameters())
    for name, p in model.named_parameters():
        if name.endswith(("position_embeddings.weight", "token_type_embeddings.weight")):
            n -= p.numel()
    return 6.0 * n + 12.0 * config.num_hidden_layers * config.hidden_size * float(seq_len)


def peak_bf16_flops(device_name: str | None = None) -> tuple[str, float | None]:
    """(device name, peak dense bf16 FLOP/s or None when unknown) of the current CUDA device."""
    if device_name is None:
        if not torch.cuda.is_available():
            return "cpu", None
        device_name = torch.cuda.get_device_name()
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return device_name, flops
    return device_name, None


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def shard_paths(folder: str | Path, split: str) -> list[Path]:
    """``<folder>/<split>-*.parquet`` in name order."""
    return sorted(Path(folder).glob(f"{split}-*.parquet"))


def write_shards(rows: Iterable[Mapping[str, Any]], folder: str | Path, split: str, shard_rows: int = 50_000) -> list[Path]:
    """Write rows ({input_ids, word_ids, source}) as ``<split>-NNNNN.parquet`` shards in :data:`SHARD_SCHEMA`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    batch: list[Mapping[str, Any]] = []

    def flush() -> None:
        path = folder / f"{split}-{len(paths):05d}.parquet"
        table = pa.Table.from_pylist([dict(r) for r in batch], schema=SHARD_SCHEMA)
        if table.column("word_ids").null_count == table.num_rows:  # word boundaries off: no column
            table = table.drop_columns(["word_ids"])
        pq.write_table(table, path)
        paths.append(path)
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) >= shard_rows:
            flush()
    if batch or not paths:
        flush()
    return paths


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
# Metrics and throughput
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
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).to(logits.device), ignore_index=-100, reduction="sum"
    )
    if num_items_in_batch is None:
        return loss / (labels != -100).sum().clamp(min=1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def argmax_logits(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """``preprocess_logits_for_metrics``: keep only the predicted ids, not the vocab-wide logits."""
    if isinstance(logits, tuple):
        logits = logits[0]
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


class ThroughputCallback(TrainerCallback):
    """Non-pad tokens per second of training, and estimated MFU on CUDA.

    Time is measured between consecutive optimizer steps (data loading, forward, backward, update,
    logging), leaving out evaluation and checkpoint saving. Tokens come from the Trainer's own
    count (``include_num_input_tokens_seen="non_padding"``, summed over all processes). Each
    training log gets ``tokens_per_second`` (and ``mfu``) for the window since the previous log;
    :meth:`summary` gives the whole run. The first ``skip_steps`` steps (warm-up) are not counted.
    """

    def __init__(self, flops_per_token: float | None = None, peak_flops: float | None = None, world_size: int = 1, skip_steps: int = 0):
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.world_size = max(1, int(world_size))
        self.skip_steps = int(skip_steps)
        self.total_tokens = 0
        self.total_seconds = 0.0
        self._window_tokens = 0
        self._window_seconds = 0.0
        self._steps = 0
        self._t: float | None = None
        self._tokens_seen = 0

    def _sync(self) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def on_train_begin(self, args, state, control, **kwargs):
        self._sync()
        self._t = time.perf_counter()
        self._tokens_seen = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        tokens = state.num_input_tokens_seen - self._tokens_seen
        self._steps += 1
        if self._t is not None and self._steps > self.skip_steps:
            self.total_tokens += tokens
            self.total_seconds += now - self._t
            self._window_tokens += tokens
            self._window_seconds += now - self._t
        self._t = now
        self._tokens_seen = state.num_input_tokens_seen

    def _restart_clock(self, *args, **kwargs):
        self._t = time.perf_counter()

    on_evaluate = _restart_clock
    on_save = _restart_clock

    def mfu(self, tokens_per_second: float) -> float | None:
        if not self.flops_per_token or not self.peak_flops:
            return None
        return tokens_per_second * self.flops_per_token / (self.world_size * self.peak_flops)

    def add_to(self, logs: dict) -> None:
        """Put the window's ``tokens_per_second`` (and ``mfu``) into a training log, once."""
        if "loss" not in logs or "tokens_per_second" in logs or self._window_seconds <= 0:
            return
        tps = self._window_tokens / self._window_seconds
        logs["tokens_per_second"] = tps
        mfu = self.mfu(tps)
        if mfu is not None:
            logs["mfu"] = mfu
        self._window_tokens, self._window_seconds = 0, 0.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        # PretrainTrainer.log adds the figures before any callback (and the log history) sees the
        # log; with a stock Trainer this reaches the callbacks after this one.
        if logs is not None:
            self.add_to(logs)

    def summary(self) -> dict[str, float | None]:
        tps = self.total_tokens / self.total_seconds if self.total_seconds > 0 else None
        return {
            "tokens_per_second": tps,
            "mfu": self.mfu(tps) if tps else None,
            "train_tokens": float(self.total_tokens),
            "train_seconds": self.total_seconds,
        }


# ---------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------


def cuda_bf16() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def training_arguments(
    training: Mapping[str, Any],
    output_dir: str | Path,
    *,
    report_to: Sequence[str] = ("mlflow",),
    run_name: str | None = None,
    do_eval: bool = True,
    world_size: int | None = None,
    **overrides: Any,
) -> TrainingArguments:
    """TrainingArguments from ``pretrain.training`` params.

    AdamW (torch, decoupled weight decay), ``warmup_ratio`` of the steps warming up then linear
    decay, bf16 only where CUDA supports it (else fp32), CPU when there is no CUDA (gloo for
    several processes), checkpoints every ``save_steps`` (two kept), evaluation every
    ``eval_steps``, ``report_to`` as given (the stage passes ``["mlflow"]``).
    """
    cuda = torch.cuda.is_available()
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    warmup = float(training.get("warmup_ratio", 0.0))
    if not 0 <= warmup < 1:
        raise ValueError(f"pretrain.training.warmup_ratio must be in [0, 1), got {warmup}")
    batch = int(training["per_device_train_batch_size"])
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=int(training["max_steps"]),
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=int(training.get("per_device_eval_batch_size", batch)),
        gradient_accumulation_steps=int(training.get("gradient_accumulation_steps", 1)),
        learning_rate=float(training["learning_rate"]),
        weight_decay=float(training.get("weight_decay", 0.0)),
        warmup_steps=warmup,  # transformers 5: a float < 1 is a ratio of the total steps
        lr_scheduler_type="linear",
        optim="adamw_torch",
        adam_beta1=float(training.get("adam_beta1", 0.9)),
        adam_beta2=float(training.get("adam_beta2", 0.999)),
        adam_epsilon=float(training.get("adam_epsilon", 1e-8)),
        max_grad_norm=float(training.get("max_grad_norm", 1.0)),
        bf16=cuda_bf16(),
        seed=int(training.get("seed", 42)),
        data_seed=int(training.get("seed", 42)),
        save_strategy="steps",
        save_steps=int(training["save_steps"]),
        save_total_limit=2,
        logging_strategy="steps",
        logging_steps=int(training["logging_steps"]),
        eval_strategy="steps" if do_eval else "no",
        eval_steps=int(training.get("eval_steps", training["save_steps"])) if do_eval else None,
        batch_eval_metrics=True,
        report_to=list(report_to),
        run_name=run_name,
        use_cpu=not cuda,
        dataloader_num_workers=int(training.get("dataloader_num_workers", 2)) if cuda else 0,
        dataloader_persistent_workers=cuda and int(training.get("dataloader_num_workers", 2)) > 0,
        remove_unused_columns=False,  # the collator needs word_ids and key
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        ddp_backend=None if cuda or world_size <= 1 else "gloo",
        ddp_find_unused_parameters=False,  # BertForMaskedLM has no pooler: every parameter gets a gradient
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


class PretrainTrainer(Trainer):
    """Trainer with the shard-window sampler; training logs carry the throughput figures.

    :meth:`log` lets each :class:`ThroughputCallback` add ``tokens_per_second`` / ``mfu`` before
    the log reaches the log history, the MLflow callback and the printer.
    """

    def __init__(self, *args: Any, shard_window: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.shard_window = shard_window

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, ThroughputCallback):
                callback.add_to(logs)
        super().log(logs, start_time)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(dataset, ShardedTokenDataset):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return ShardWindowSampler(dataset, seed=seed, window=self.shard_window)
        return super()._get_train_sampler(train_dataset)


@dataclass
class PretrainSetup:
    trainer: PretrainTrainer
    model: BertForMaskedLM
    model_info: dict[str, Any]
    train_dataset: ShardedTokenDataset
    eval_dataset: ShardedTokenDataset | None
    collator: WholeWordMaskCollator
    throughput: ThroughputCallback
    notes: list[str] = field(default_factory=list)


def build_trainer(
    tokenizer: PreTrainedTokenizerBase,
    model_params: Mapping[str, Any],
    training: Mapping[str, Any],
    train_paths: Sequence[Path],
    eval_paths: Sequence[Path],
    output_dir: str | Path,
    *,
    init_from: str | Path | None = None,
    report_to: Sequence[str] = ("mlflow",),
    run_name: str | None = None,
    throughput_skip_steps: int = 0,
    **arg_overrides: Any,
) -> PretrainSetup:
    """Everything ``trainer.train()`` needs, from params and shard paths."""
    from transformers import set_seed

    notes: list[str] = []
    seed = int(training.get("seed", 42))
    args = training_arguments(
        training, output_dir, report_to=report_to, run_name=run_name, do_eval=bool(eval_paths), **arg_overrides
    )
    set_seed(seed)  # model initialisation
    model, info = build_model(tokenizer, model_params, init_from)
    wwm = bool(training.get("whole_word_mask", True))
    train_ds = ShardedTokenDataset(train_paths, use_word_ids=wwm)
    eval_max = training.get("max_eval_samples")
    eval_ds = ShardedTokenDataset(eval_paths, use_word_ids=wwm, max_rows=eval_max) if eval_paths else None
    if wwm and not train_ds.has_word_ids:
        notes.append("shards carry no word_ids: whole-word masking falls back to WordPiece ## continuation pieces")
    if not eval_paths:
        notes.append("no held-out shards: no masked-token accuracy")
    collator = WholeWordMaskCollator(
        tokenizer,
        mlm_probability=float(training.get("mlm_probability", 0.15)),
        whole_word_mask=wwm,
        seed=seed,
        pad_to_multiple_of=8 if torch.cuda.is_available() else None,
        max_length=model.config.max_position_embeddings,
    )
    device_name, peak = peak_bf16_flops()
    info["device"] = device_name
    info["peak_bf16_flops"] = peak
    fpt = flops_per_token(model, train_ds.mean_length())
    info["flops_per_token"] = fpt
    throughput = ThroughputCallback(fpt, peak if args.bf16 else None, args.world_size, skip_steps=throughput_skip_steps)
    trainer = PretrainTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        compute_loss_func=masked_lm_loss,
        compute_metrics=MaskedTokenAccuracy() if eval_ds is not None else None,
        preprocess_logits_for_metrics=argmax_logits if eval_ds is not None else None,
        callbacks=[throughput],
    )
    return PretrainSetup(trainer, model, info, train_ds, eval_ds, collator, throughput, notes)


def restore_finished_run(trainer: Trainer, checkpoint: str | Path) -> None:
    """Take the weights and trainer state of a checkpoint that already reached ``max_steps``.

    ``Trainer.train(resume_from_checkpoint=...)`` on such a checkpoint would still run one more
    optimizer step; this loads it as is, so the outputs can be written (or evaluated) again.
    """
    from safetensors.torch import load_file
    from transformers import TrainerState

    checkpoint = Path(checkpoint)
    model = trainer.model
    missing, unexpected = model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    if unexpected or set(missing) - tied:
        raise ValueError(f"{checkpoint}: weights do not fit the model (missing {sorted(set(missing) - tied)}, unexpected {unexpected})")
    model.tie_weights()
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def loss_curve(log_history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """[{step, loss, eval_loss?}] from ``trainer.state.log_history``: one row per logged training loss."""
    evals = {int(e["step"]): float(e["eval_loss"]) for e in log_history if "eval_loss" in e}
    rows = []
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            row = {"step": int(entry["step"]), "loss": float(entry["loss"])}
            if row["step"] in evals:
                row["eval_loss"] = evals[row["step"]]
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# Resuming
# ---------------------------------------------------------------------------


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def files_identity(root: str | Path, paths: Iterable[Path] | None = None) -> str:
    """sha256 over (relative path, content sha256) of ``paths`` (default: every file under ``root``)."""
    root = Path(root)
    files = sorted(paths) if paths is not None else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for path in files:
        h.update(f"{Path(path).relative_to(root).as_posix()}\0{file_digest(Path(path))}\n".encode())
    return h.hexdigest()


def run_signature(components: Mapping[str, Any]) -> str:
    """sha256 of a JSON-able mapping (params, data identity, world size, versions...)."""
    return hashlib.sha256(json.dumps(components, sort_keys=True, default=str).encode()).hexdigest()


def code_identity() -> str:
    """sha256 of this module's source: a resumed run must continue with the same training code."""
    return file_digest(Path(__file__))


def _rng_files_present(path: Path, world_size: int) -> bool:
    if world_size <= 1:
        return (path / "rng_state.pth").is_file()
    return all((path / f"rng_state_{r}.pth").is_file() for r in range(world_size))


def checkpoint_is_complete(path: Path, world_size: int = 1) -> bool:
    """The Trainer writes trainer_state.json last; the model, optimizer and scheduler must be there too."""
    return (
        (path / "trainer_state.json").is_file()
        and (path / "model.safetensors").is_file()
        and (path / "optimizer.pt").is_file()
        and (path / "scheduler.pt").is_file()
        and _rng_files_present(path, world_size)
    )


def checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def last_complete_checkpoint(folder: str | Path, world_size: int = 1) -> Path | None:
    """Like transformers' ``get_last_checkpoint`` but skipping a checkpoint cut short by a kill."""
    for _, path in reversed(checkpoints(folder)):
        if checkpoint_is_complete(path, world_size):
            return path
    return None


@dataclass(frozen=True)
class ResumeDecision:
    checkpoint: Path | None  # resume from here, or None: fresh start
    step: int
    reason: str
    wiped: bool = False

    @property
    def resumed(self) -> bool:
        return self.checkpoint is not None


def prepare_checkpoint_dir(
    folder: str | Path, signature: str, components: Mapping[str, Any], *, world_size: int = 1, is_main: bool = True
) -> ResumeDecision:
    """Decide between resuming and a fresh start, and (main process only) tidy the folder.

    Resume when the folder's signature file matches ``signature`` and a complete checkpoint is
    there; incomplete newer checkpoints are removed. Otherwise the folder is emptied and the new
    signature written. Run it on the main process first and on the others afterwards (they then
    see the tidied folder and reach the same decision).
    """
    folder = Path(folder)
    sig_path = folder / SIGNATURE_FILE
    stored = None
    if sig_path.is_file():
        try:
            stored = json.loads(sig_path.read_text(encoding="utf-8")).get("signature")
        except (OSError, ValueError):
            stored = None
    latest = last_complete_checkpoint(folder, world_size)
    if stored == signature and latest is not None:
        step = int(_CHECKPOINT_RE.match(latest.name).group(1))
        if is_main:
            for n, path in checkpoints(folder):
                if n > step:
                    shutil.rmtree(path, ignore_errors=True)
        return ResumeDecision(latest, step, f"resuming from {latest.name} (signature matches)")
    existing = checkpoints(folder)
    if stored is None and not existing:
        reason = "fresh start (no checkpoint)"
    elif stored != signature:
        reason = f"fresh start: the {len(existing)} checkpoint(s) there were made with other params, data or code"
    else:
        reason = "fresh start: no complete checkpoint"
    if is_main:
        if folder.exists():
            for child in folder.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        sig_path.write_text(
            json.dumps({"signature": signature, "components": components}, sort_keys=True, indent=2, default=str) + "\n",
            encoding="utf-8",
        )
    return ResumeDecision(None, 0, reason, wiped=bool(existing))
