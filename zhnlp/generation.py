"""Text generation over three kinds of local checkpoints, with one beam search and one sampler.

Backbones
---------
* **BERT (``BertForMaskedLM``) as a generator** — UniLM (Dong et al. 2019; Su's bert4keras
  recipe, techniques.md sections 3-4). The MLM head (``model.cls``, tied to the word
  embeddings) predicts the next token; the attention mask decides what each position sees:

  - ``unilm_mask``: segment 0 (source) is bidirectional, segment 1 (target) is causal and
    sees the whole source; source positions never see the target (Ape210K seq2seq);
  - ``causal_mask``: every position sees itself and the positions before it (DialoGPT-style
    LM over a dialogue).

  transformers 5.23's ``BertModel`` passes a 4-D ``[batch, 1, query, key]`` mask through
  unchanged (a 3-D one is not supported: a non-trivial one fails in its mask expansion), and
  both its eager and SDPA attention *add* it to the scores (a boolean mask would be added as
  0/1 by eager), so :func:`additive_mask` turns our boolean ``[batch, query, key]`` masks into
  float ones (0 / dtype-min) in the model's dtype.

  **KV cache.** BERT has no cache of its own in the encoder, but ``BertSelfAttention`` appends
  to any ``Cache`` passed as ``past_key_values`` (``BertModel`` only *creates* one when
  ``is_decoder``). Under both masks a position's hidden states never depend on later
  positions, so caching each layer's keys/values of decoded positions is exact: the prefix
  is encoded once, then one position per step. :class:`BertDecoder` checks that the cache
  really filled after the prefix pass and falls back to recomputing the whole sequence
  every step if it did not (``use_cache=False`` forces that path; tests assert both agree).

* **causal LM** (``AutoModelForCausalLM``, e.g. GPT-2) and **encoder-decoder**
  (``AutoModelForSeq2SeqLM``, e.g. mT5/BART): HF's native ``past_key_values`` cache.

Decoding
--------
A *decoder* is a small stateful adapter with three calls: ``start(prompts) -> logits``
for the first new token of each prompt, ``step(tokens) -> logits`` after appending one token
per row, and ``select(rows)`` to reorder / repeat / drop rows (beam search, finished rows).
:func:`beam_search` (greedy = ``num_beams=1``), :func:`greedy` (an independent argmax loop,
for tests) and :func:`sample` (temperature, top-k, top-p, seeded ``torch.Generator``) work
on any decoder.

Training for the two BERT heads is at the end: :class:`GenerationTrainer` computes the
masked next-token loss on the target positions only; :func:`train_head` reuses the
pretraining stage's TrainingArguments, throughput callback and resume rule
(``zhnlp.pretraining``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

__all__ = [
    "Prompt",
    "Generated",
    "unilm_mask",
    "causal_mask",
    "additive_mask",
    "BertDecoder",
    "CausalLMDecoder",
    "Seq2SeqLMDecoder",
    "make_decoder",
    "load_model",
    "beam_search",
    "greedy",
    "sample",
    "filter_logits",
    "TextCodec",
    "Example",
    "Collator",
    "bert_lm_loss",
    "evaluate_loss",
    "ensure_token_types",
    "GenerationTrainer",
    "LossHistory",
    "TrainConfig",
    "TrainResult",
    "training_components",
    "train_head",
    "default_device",
    "save_random_backbone",
    "save_head",
    "read_head",
    "IGNORE",
]

MASK_KINDS = ("unilm", "causal")
IGNORE = -100  # label value that carries no loss


# ---------------------------------------------------------------------------------------------
# masks


def unilm_mask(token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Boolean ``[batch, query, key]`` UniLM mask: True where the query may attend to the key.

    Key ``j`` is visible from query ``i`` iff ``j`` is not padding and ``c[j] <= c[i]``, where
    ``c`` is the running count of segment-1 tokens (bert4keras' construction). Source tokens
    (segment 0, before any target) have ``c = 0``: they see the whole source and no target;
    the t-th target token has ``c = t``: it sees the source and targets up to itself.
    Padding queries see every real token (their outputs are never used).
    """
    valid = attention_mask.bool()
    counts = torch.cumsum(token_type_ids.long() * valid.long(), dim=1)
    return (counts[:, None, :] <= counts[:, :, None]) & valid[:, None, :]


def causal_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Boolean ``[batch, query, key]`` causal mask: key ``j <= i`` and not padding."""
    valid = attention_mask.bool()
    n = valid.shape[1]
    lower = torch.ones(n, n, dtype=torch.bool, device=valid.device).tril()
    return lower[None, :, :] & valid[:, None, :]


def build_mask(kind: str, token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    if kind == "unilm":
        return unilm_mask(token_type_ids, attention_mask)
    if kind == "causal":
        return causal_mask(attention_mask)
    raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean ``[batch, query, key]`` -> float ``[batch, 1, query, key]``: 0 where allowed, dtype-min elsewhere."""
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None, :, :]


# ---------------------------------------------------------------------------------------------
# prompts and decoders


@dataclass
class Prompt:
    """The tokens a generation starts from.

    ``segments`` and ``next_segment`` are BERT token types (ignored by other backbones):
    the prompt's own (default all 0) and the one every generated token gets.
    """

    ids: list[int]
    segments: list[int] | None = None
    next_segment: int = 1


@dataclass
class Generated:
    tokens: list[int]  # without the end token
    score: float  # sum of token log-probs (beam search: divided by length ** length_penalty)
    finished: bool  # ended with the end token (False: stopped at max_new_tokens)


class Decoder(Protocol):
    def start(self, prompts: Sequence[Prompt]) -> torch.Tensor: ...

    def step(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def select(self, rows: torch.Tensor) -> None: ...


def _model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _right_pad(seqs: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    valid = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        valid[i, : len(s)] = True
    return ids.to(device), valid.to(device)


class BertDecoder:
    """Incremental decoding with a ``BertForMaskedLM`` under a UniLM (``prefix="bidirectional"``) or causal mask.

    Prompts are right-padded; generated tokens take position ids ``len(prompt) + t`` and
    token type ``prompt.next_segment``, exactly as in training where the target follows its
    source without a gap.
    """

    def __init__(self, model, *, prefix: str = "bidirectional", use_cache: bool = True):
        if prefix not in ("bidirectional", "causal"):
            raise ValueError(f"prefix must be 'bidirectional' or 'causal', got {prefix!r}")
        self.model = model
        self.bidirectional = prefix == "bidirectional"
        self.use_cache = use_cache
        self.pad_id = model.config.pad_token_id or 0
        self.max_positions = model.config.max_position_embeddings
        self.cached = False  # whether the current generation runs on the KV cache

    # Every forward goes through here: the backbone with an explicit additive mask, then the MLM head.
    def _hidden(self, ids, segments, positions, allowed, cache=None) -> torch.Tensor:
        out = self.model.bert(
            input_ids=ids,
            token_type_ids=segments,
            position_ids=positions,
            attention_mask=additive_mask(allowed, _model_dtype(self.model)),
            past_key_values=cache,
        )
        return out.last_hidden_state

    def _prefix_allowed(self, valid: torch.Tensor) -> torch.Tensor:
        if self.bidirectional:
            n = valid.shape[1]
            return valid[:, None, :].expand(-1, n, -1)
        return causal_mask(valid)

    @torch.no_grad()
    def start(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        from transformers import DynamicCache

        device = _model_device(self.model)
        ids, valid = _right_pad([p.ids for p in prompts], self.pad_id, device)
        segments, _ = _right_pad([p.segments or [0] * len(p.ids) for p in prompts], 0, device)
        lengths = valid.sum(dim=1)
        if int(lengths.max()) > self.max_positions:
            raise ValueError(f"prompt of {int(lengths.max())} tokens exceeds max_position_embeddings={self.max_positions}")
        width = ids.shape[1]
        positions = torch.arange(width, device=device).expand(len(prompts), -1)
        cache = DynamicCache(config=self.model.config) if self.use_cache else None
        hidden = self._hidden(ids, segments, positions, self._prefix_allowed(valid), cache)
        self.cached = cache is not None and cache.get_seq_length() == width
        self.cache = cache if self.cached else None
        self.next_pos = lengths.clone()
        self.next_seg = torch.tensor([p.next_segment for p in prompts], dtype=torch.long, device=device)
        self.valid = valid
        self.prefix_width = width
        if not self.cached:  # keep the whole sequence to recompute it every step
            self.ids, self.segments, self.positions = ids, segments, positions
        last = hidden[torch.arange(len(prompts), device=device), lengths - 1]
        return self.model.cls(last).float()

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        if int(self.next_pos.max()) >= self.max_positions:
            raise ValueError(f"generation ran past max_position_embeddings={self.max_positions}")
        rows = tokens.shape[0]
        new_valid = torch.ones(rows, 1, dtype=torch.bool, device=tokens.device)
        self.valid = torch.cat([self.valid, new_valid], dim=1)
        if self.cached:
            allowed = self.valid[:, None, :]  # the new position sees every real key so far
            hidden = self._hidden(tokens[:, None], self.next_seg[:, None], self.next_pos[:, None], allowed, self.cache)
            last = hidden[:, -1]
        else:
            self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
            self.segments = torch.cat([self.segments, self.next_seg[:, None]], dim=1)
            self.positions = torch.cat([self.positions, self.next_pos[:, None]], dim=1)
            n = self.ids.shape[1]
            idx = torch.arange(n, device=tokens.device)
            # key j visible from query i: j real and (j <= i, or j in a bidirectional prefix seen from the prefix)
            see = idx[None, :] <= idx[:, None]
            if self.bidirectional:
                in_prefix = idx < self.prefix_width
                see = see | (in_prefix[None, :] & in_prefix[:, None])
            allowed = see[None] & self.valid[:, None, :]
            hidden = self._hidden(self.ids, self.segments, self.positions, allowed)
            last = hidden[:, -1]
        self.next_pos = self.next_pos + 1
        return self.model.cls(last).float()

    def select(self, rows: torch.Tensor) -> None:
        rows = rows.to(self.valid.device)
        self.valid = self.valid[rows]
        self.next_pos = self.next_pos[rows]
        self.next_seg = self.next_seg[rows]
        if self.cached:
            self.cache.reorder_cache(rows)
        else:
            self.ids, self.segments, self.positions = self.ids[rows], self.segments[rows], self.positions[rows]


class CausalLMDecoder:
    """``AutoModelForCausalLM`` (GPT-2, ...): left-padded prompts, HF's native ``past_key_values``."""

    def __init__(self, model, *, use_cache: bool = True, pad_id: int | None = None):
        self.model = model
        self.use_cache = use_cache
        self.pad_id = pad_id if pad_id is not None else (model.config.pad_token_id or 0)

    def _forward(self, ids, mask, positions, past):
        out = self.model(input_ids=ids, attention_mask=mask.long(), position_ids=positions, past_key_values=past, use_cache=self.use_cache)
        return out.logits[:, -1].float(), (out.past_key_values if self.use_cache else None)

    @torch.no_grad()
    def start(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        device = _model_device(self.model)
        width = max(len(p.ids) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, width - len(p.ids) :] = torch.tensor(p.ids, dtype=torch.long)
            mask[i, width - len(p.ids) :] = True
        self.ids, self.mask = ids.to(device), mask.to(device)
        self.positions = (self.mask.long().cumsum(1) - 1).clamp(min=0)
        logits, self.past = self._forward(self.ids, self.mask, self.positions, None)
        return logits

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        next_pos = self.positions[:, -1:] + 1
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(tokens[:, None], dtype=torch.bool)], dim=1)
        self.positions = torch.cat([self.positions, next_pos], dim=1)
        if self.use_cache:
            logits, self.past = self._forward(tokens[:, None], self.mask, next_pos, self.past)
        else:
            logits, _ = self._forward(self.ids, self.mask, self.positions, None)
        return logits

    def select(self, rows: torch.Tensor) -> None:
        rows = rows.to(self.ids.device)
        self.ids, self.mask, self.positions = self.ids[rows], self.mask[rows], self.positions[rows]
        if self.past is not None:
            self.past.reorder_cache(rows)


class Seq2SeqLMDecoder:
    """``AutoModelForSeq2SeqLM`` (T5/mT5, BART): the encoder runs once; the decoder uses the native cache."""

    def __init__(self, model, *, use_cache: bool = True, pad_id: int | None = None):
        self.model = model
        self.use_cache = use_cache
        self.pad_id = pad_id if pad_id is not None else (model.config.pad_token_id or 0)
        start = model.config.decoder_start_token_id
        self.start_id = start if start is not None else self.pad_id

    def _forward(self, dec_ids, past):
        out = self.model(
            encoder_outputs=self.encoded,
            attention_mask=self.src_mask.long(),
            decoder_input_ids=dec_ids,
            past_key_values=past,
            use_cache=self.use_cache,
        )
        return out.logits[:, -1].float(), (out.past_key_values if self.use_cache else None)

    @torch.no_grad()
    def start(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        from transformers.modeling_outputs import BaseModelOutput

        device = _model_device(self.model)
        ids, self.src_mask = _right_pad([p.ids for p in prompts], self.pad_id, device)
        hidden = self.model.get_encoder()(input_ids=ids, attention_mask=self.src_mask.long()).last_hidden_state
        self.encoded = BaseModelOutput(last_hidden_state=hidden)
        self.dec = torch.full((len(prompts), 1), self.start_id, dtype=torch.long, device=device)
        logits, self.past = self._forward(self.dec, None)
        return logits

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.dec = torch.cat([self.dec, tokens[:, None]], dim=1)
        logits, self.past = self._forward(tokens[:, None] if self.use_cache else self.dec, self.past)
        return logits

    def select(self, rows: torch.Tensor) -> None:
        from transformers.modeling_outputs import BaseModelOutput

        rows = rows.to(self.dec.device)
        self.dec, self.src_mask = self.dec[rows], self.src_mask[rows]
        self.encoded = BaseModelOutput(last_hidden_state=self.encoded.last_hidden_state[rows])
        if self.past is not None:
            self.past.reorder_cache(rows)


def is_bert_lm(model) -> bool:
    return hasattr(model, "bert") and hasattr(model, "cls")


def make_decoder(model, *, prefix: str = "bidirectional", use_cache: bool = True) -> Decoder:
    """The decoder for ``model``: BERT (UniLM/causal, by ``prefix``), encoder-decoder or causal LM."""
    if is_bert_lm(model):
        return BertDecoder(model, prefix=prefix, use_cache=use_cache)
    if getattr(model.config, "is_encoder_decoder", False):
        return Seq2SeqLMDecoder(model, use_cache=use_cache)
    return CausalLMDecoder(model, use_cache=use_cache)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(path: str | Path, device: torch.device | str | None = None):
    """A local checkpoint (safetensors, no remote code) as BertForMaskedLM, a seq2seq LM or a causal LM, in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, BertForMaskedLM

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no model at {folder} (config.json missing)")
    kwargs = {"local_files_only": True, "trust_remote_code": False, "use_safetensors": True}
    config = AutoConfig.from_pretrained(str(folder), **kwargs)
    if config.model_type == "bert":
        model = BertForMaskedLM.from_pretrained(str(folder), **kwargs)
    elif getattr(config, "is_encoder_decoder", False):
        model = AutoModelForSeq2SeqLM.from_pretrained(str(folder), **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    return model.to(device or default_device()).eval()


# ---------------------------------------------------------------------------------------------
# search


def _normalised(score: float, length: int, length_penalty: float) -> float:
    return score / (max(length, 1) ** length_penalty) if length_penalty else score


def beam_search(
    decoder: Decoder,
    prompts: Sequence[Prompt],
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_id: int,
    length_penalty: float = 0.0,
) -> list[Generated]:
    """Batched beam search; the best hypothesis per prompt.

    Hypotheses are scored by their summed log-probability divided by ``length ** length_penalty``
    (``length`` counts the end token; 0 = no normalisation). Each step keeps the ``2 * num_beams``
    best extensions of a prompt's beams: those ending in ``eos_id`` among the first ``num_beams``
    become finished hypotheses, the best ``num_beams`` others live on. A prompt is done once it
    has ``num_beams`` finished hypotheses and no live beam can still beat the worst of them
    (exact: the bound uses the best reachable length), or at ``max_new_tokens``, when the live
    beams are added as unfinished hypotheses. Finished prompts leave the batch.
    """
    if num_beams < 1:
        raise ValueError("num_beams must be >= 1")
    n, k = len(prompts), num_beams
    if n == 0:
        return []
    logp = torch.log_softmax(decoder.start(prompts), dim=-1)
    vocab = logp.shape[-1]
    decoder.select(torch.arange(n).repeat_interleave(k))
    logp = logp.repeat_interleave(k, dim=0)
    scores = torch.full((n, k), -math.inf, device=logp.device)
    scores[:, 0] = 0.0  # one live beam per prompt at the start: no duplicates
    seqs: list[list[list[int]]] = [[[] for _ in range(k)] for _ in range(n)]
    finished: list[list[tuple[float, list[int], bool]]] = [[] for _ in range(n)]
    active = list(range(n))  # prompt index of each group of k rows

    for step in range(max_new_tokens):
        m = len(active)
        cand = (scores.view(m * k, 1) + logp).view(m, k * vocab)
        top_scores, top_idx = cand.topk(min(2 * k, k * vocab), dim=1)
        top_scores, top_idx = top_scores.tolist(), top_idx.tolist()
        keep_groups, rows, tokens, new_scores, new_seqs = [], [], [], [], []
        for g, item in enumerate(active):
            live: list[tuple[int, int, float]] = []
            for rank, (s, idx) in enumerate(zip(top_scores[g], top_idx[g])):
                if s == -math.inf or len(live) == k:
                    break
                beam, tok = divmod(idx, vocab)
                if tok == eos_id:
                    if rank < k:
                        finished[item].append((_normalised(s, step + 1, length_penalty), seqs[item][beam], True))
                else:
                    live.append((beam, tok, s))
            fin = sorted(finished[item], key=lambda h: h[0], reverse=True)[:k]
            finished[item] = fin
            last_step = step == max_new_tokens - 1
            if live and len(fin) == k:
                best_live = max(s for _, _, s in live)
                reach = max_new_tokens if length_penalty > 0 else step + 2
                if _normalised(best_live, reach, length_penalty) <= fin[-1][0]:
                    continue  # done: no live beam can overtake the finished ones
            if not live:
                continue
            if last_step:
                finished[item].extend((_normalised(s, step + 1, length_penalty), seqs[item][b] + [t], False) for b, t, s in live)
                continue
            while len(live) < k:  # fewer real candidates than beams (tiny vocab): dead filler rows
                live.append((live[0][0], live[0][1], -math.inf))
            keep_groups.append(item)
            for beam, tok, s in live:
                rows.append(g * k + beam)
                tokens.append(tok)
                new_scores.append(s)
                new_seqs.append(seqs[item][beam] + [tok])
        for idx, item in enumerate(keep_groups):
            seqs[item] = new_seqs[idx * k : (idx + 1) * k]
        if not keep_groups:
            break
        active = keep_groups
        device = logp.device
        decoder.select(torch.tensor(rows, device=device))
        scores = torch.tensor(new_scores, device=device).view(len(active), k)
        logp = torch.log_softmax(decoder.step(torch.tensor(tokens, device=device)), dim=-1)

    out = []
    for item in range(n):
        if not finished[item]:  # max_new_tokens == 0
            out.append(Generated([], 0.0, False))
            continue
        score, toks, done = max(finished[item], key=lambda h: h[0])
        out.append(Generated(list(toks), float(score), done))
    return out


def greedy(decoder: Decoder, prompts: Sequence[Prompt], *, max_new_tokens: int, eos_id: int) -> list[Generated]:
    """Argmax decoding, written independently of :func:`beam_search` (whose ``num_beams=1`` must agree)."""
    if not prompts:
        return []
    logits = decoder.start(prompts)
    out = [Generated([], 0.0, False) for _ in prompts]
    active = list(range(len(prompts)))
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(logits, dim=-1)
        best = logp.argmax(dim=-1)
        keep, tokens = [], []
        for row, item in enumerate(active):
            tok = int(best[row])
            out[item].score += float(logp[row, tok])
            if tok == eos_id:
                out[item].finished = True
            else:
                out[item].tokens.append(tok)
                keep.append(row)
                tokens.append(tok)
        if not keep:
            break
        active = [active[r] for r in keep]
        decoder.select(torch.tensor(keep, device=logits.device))
        logits = decoder.step(torch.tensor(tokens, device=logits.device))
    return out


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the ``top_k`` best (0 = all) and outside the top-p nucleus (1.0 = all)."""
    logits = logits.clone()
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits[logits < kth] = -math.inf
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass strictly before each token
        drop_sorted = before >= top_p  # the first token is always kept (before == 0)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits[drop] = -math.inf
    return logits


def sample(
    decoder: Decoder,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    eos_id: int,
    top_k: int = 0,
    top_p: float = 1.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[Generated]:
    """Ancestral sampling with temperature, top-k and top-p; reproducible given a seeded ``generator``.

    Draws happen on the generator's device (CPU by default), so a CPU generator gives the same
    tokens whatever device the model runs on, up to numerical differences in the logits.
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0 (use beam_search / greedy for argmax decoding)")
    if not prompts:
        return []
    gen_device = generator.device if generator is not None else torch.device("cpu")
    logits = decoder.start(prompts)
    out = [Generated([], 0.0, False) for _ in prompts]
    active = list(range(len(prompts)))
    for _ in range(max_new_tokens):
        filtered = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
        probs = torch.softmax(filtered, dim=-1).to(gen_device)
        drawn = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        logp = torch.log(probs.gather(1, drawn[:, None]).squeeze(1))
        keep, tokens = [], []
        for row, item in enumerate(active):
            tok = int(drawn[row])
            out[item].score += float(logp[row])
            if tok == eos_id:
                out[item].finished = True
            else:
                out[item].tokens.append(tok)
                keep.append(row)
                tokens.append(tok)
        if not keep:
            break
        active = [active[r] for r in keep]
        decoder.select(torch.tensor(keep, device=logits.device))
        logits = decoder.step(torch.tensor(tokens, device=logits.device))
    return out


# ---------------------------------------------------------------------------------------------
# text <-> ids


class TextCodec:
    """Encoding and decoding text for the generation heads, on top of ``zhnlp.tokenization``.

    Encoding goes through :class:`zhnlp.tokenization.ZhTokenizer` (word mode pre-segments with
    jieba there). Decoding joins tokens without spaces — Chinese is written without them —
    except between two Latin letters / digits of separate words (``##`` pieces are glued on).
    """

    def __init__(self, zh):
        self.zh = zh
        self.hf = zh.hf
        self.cls_id, self.sep_id, self.pad_id = zh.cls_id, zh.sep_id, zh.pad_id
        self.special_ids = set(self.hf.all_special_ids)

    @classmethod
    def load(cls, path: str | Path) -> TextCodec:
        from zhnlp.tokenization import load_tokenizer

        return cls(load_tokenizer(path))

    def __len__(self) -> int:
        return len(self.hf)

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without [CLS]/[SEP]."""
        return self.zh.encode_batch(list(texts), add_special_tokens=False)

    def decode(self, ids: Iterable[int]) -> str:
        out = ""
        for tok in self.hf.convert_ids_to_tokens([i for i in ids if i not in self.special_ids or i == self.zh.unk_id]):
            if tok.startswith("##") and len(tok) > 2:
                out += tok[2:]
                continue
            if out and _wordish(out[-1]) and _wordish(tok[0]):
                out += " "
            out += tok
        return out

    def ensure_tokens(self, pieces: Iterable[str], model=None) -> list[str]:
        """Add every piece that encodes to [UNK] as a token (resizing ``model``'s embeddings); returns those added.

        Ape210K equations need ``+ - * / ( ) .`` and digits, and a tokenizer trained on
        questions alone may lack ``*``: without this, such equations could never be generated.
        """
        missing = [p for p in pieces if self.zh.unk_id in self.encode_many([p])[0]]
        if missing:
            from zhnlp.tokenization import ZhTokenizer

            self.hf.add_tokens(missing)
            self.zh = ZhTokenizer(self.hf, self.zh.mode, self.zh.meta)
            self.special_ids = set(self.hf.all_special_ids)
            if model is not None:
                model.resize_token_embeddings(len(self.hf), mean_resizing=False)
        return missing

    def save(self, out_dir: str | Path) -> None:
        from zhnlp.tokenization import save_tokenizer

        meta = {k: v for k, v in self.zh.meta.items() if k not in ("format_version", "mode", "vocab_size")}
        save_tokenizer(self.hf, out_dir, self.zh.mode, **meta)


def _wordish(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


# ---------------------------------------------------------------------------------------------
# training (both BERT heads)


def ensure_token_types(model, n: int = 2) -> None:
    """Give a BERT backbone at least ``n`` token types (new rows copy type 0), for segment ids 0/1."""
    emb = model.bert.embeddings.token_type_embeddings
    if emb.num_embeddings >= n:
        return
    new = torch.nn.Embedding(n, emb.embedding_dim).to(emb.weight.device, emb.weight.dtype)
    with torch.no_grad():
        new.weight[:] = emb.weight[0]
        new.weight[: emb.num_embeddings] = emb.weight
    model.bert.embeddings.token_type_embeddings = new
    model.config.type_vocab_size = n
    # the default all-zero token types buffer is only used when none are passed (we always pass them)


@dataclass
class Example:
    """One training sequence of a BERT head. ``labels`` is aligned with ``input_ids``: the token there, or -100."""

    input_ids: list[int]
    token_type_ids: list[int]
    labels: list[int]


class Collator:
    """Right-pads examples into ``input_ids, token_type_ids, attention_mask, labels``."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        width = max(len(e.input_ids) for e in examples)
        batch = {
            "input_ids": torch.full((len(examples), width), self.pad_id, dtype=torch.long),
            "token_type_ids": torch.zeros((len(examples), width), dtype=torch.long),
            "attention_mask": torch.zeros((len(examples), width), dtype=torch.long),
            "labels": torch.full((len(examples), width), IGNORE, dtype=torch.long),
        }
        for i, e in enumerate(examples):
            n = len(e.input_ids)
            batch["input_ids"][i, :n] = torch.tensor(e.input_ids)
            batch["token_type_ids"][i, :n] = torch.tensor(e.token_type_ids)
            batch["attention_mask"][i, :n] = 1
            batch["labels"][i, :n] = torch.tensor(e.labels)
        return batch


def bert_lm_loss(model, batch: Mapping[str, torch.Tensor], mask_kind: str, *, selected_only: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of token NLL, number of target tokens)`` of a BERT head under ``mask_kind``.

    ``batch["labels"]`` is aligned with ``input_ids`` (the token at that position, or -100):
    position ``t``'s output predicts label ``t + 1``. With ``selected_only`` the MLM head runs
    on the predicting positions only (the vocab projection dominates the cost); otherwise
    it goes through ``model.forward`` on every position — the path a DDP-wrapped model must
    take so that its gradient hooks fire. Both give the same value.
    """
    ids, types, valid, labels = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], batch["labels"]
    core = model.module if hasattr(model, "module") else model
    mask = additive_mask(build_mask(mask_kind, types, valid), _model_dtype(core))
    target = labels[:, 1:]
    chosen = target != IGNORE
    count = chosen.sum()
    if selected_only:
        hidden = core.bert(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
        logits = core.cls(hidden[:, :-1][chosen])
        total = F.cross_entropy(logits.float(), target[chosen], reduction="sum")
    else:
        logits = model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits[:, :-1]
        total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return total, count


@torch.no_grad()
def evaluate_loss(model, examples: Sequence[Example], mask_kind: str, *, pad_id: int, batch_size: int = 32) -> dict[str, float]:
    """Token-weighted mean NLL of ``examples``' target tokens, and its perplexity."""
    was_training = model.training
    model.eval()
    collate = Collator(pad_id)
    device = _model_device(model)
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))  # less padding
    for start in range(0, len(order), batch_size):
        batch = collate([examples[i] for i in order[start : start + batch_size]])
        s, n = bert_lm_loss(model, {k: v.to(device) for k, v in batch.items()}, mask_kind)
        total, count = total + float(s), count + int(n)
    model.train(was_training)
    loss = total / count if count else float("nan")
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}


class GenerationTrainer(Trainer):
    """The HF Trainer with the masked next-token loss of a BERT head (``mask_kind``: unilm | causal).

    The loss is the mean over the batch's target tokens; the Trainer divides it for gradient
    accumulation (``loss_is_scaled_for_ga = False``).
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args, mask_kind: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_kind = mask_kind

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        wrapped = self.accelerator.unwrap_model(model) is not model  # DDP: go through forward()
        total, count = bert_lm_loss(model, inputs, self.mask_kind, selected_only=not wrapped)
        loss = total / count.clamp(min=1)
        return (loss, {"loss": loss}) if return_outputs else loss


class LossHistory(TrainerCallback):
    """Keeps the Trainer's training log lines (step, epoch, loss, learning rate, grad norm) and forwards each to ``on_log``."""

    def __init__(self, on_log: Callable[[dict], None] | None = None):
        self.rows: list[dict] = []
        self.callback = on_log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        row = {"step": int(state.global_step), "epoch": round(float(state.epoch or 0.0), 4)}
        row.update({k: float(v) for k, v in logs.items() if k in ("loss", "learning_rate", "grad_norm")})
        self.rows.append(row)
        if self.callback is not None:
            self.callback(row)


@dataclass
class TrainConfig:
    """Trainer settings shared by the generation heads (the keys of their params sections)."""

    per_device_train_batch_size: int = 32
    num_train_epochs: float = 1.0
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 42
    save_steps: int = 100
    logging_steps: int = 10
    max_steps: int = -1  # > 0 overrides num_train_epochs
    gradient_accumulation_steps: int = 1

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def identity(self) -> dict[str, Any]:
        """What decides the trained weights (not how often they are logged or saved)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("save_steps", "logging_steps")}


@dataclass
class TrainResult:
    steps: int
    seconds: float  # wall time of trainer.train() in this process
    tokens: float  # non-pad training tokens of this process's steps, all ranks (pretraining.ThroughputCallback)
    tokens_per_second: float | None
    train_loss: float  # the Trainer's mean over this process's steps
    history: list[dict]  # [{step, loss}] over the whole run, resumed part included
    resumed_from: str | None
    resume_reason: str
    signature: str
    is_main_process: bool

    def summary(self) -> dict[str, Any]:
        """The figures for metrics.json."""
        return {
            "steps": self.steps,
            "seconds": self.seconds,
            "tokens": self.tokens,
            "tokens_per_second": self.tokens_per_second,
            "train_loss": self.train_loss if math.isfinite(self.train_loss) else None,
            "final_logged_loss": self.history[-1]["loss"] if self.history else None,
            "resumed": self.resumed_from is not None,
            "signature": self.signature[:16],
        }


def examples_digest(examples: Iterable[Example]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.input_ids, e.token_type_ids, e.labels]).encode())
    return digest.hexdigest()


def training_components(task: str, config: TrainConfig, settings: Mapping[str, Any], backbone_dir: str | Path, examples: Sequence[Example], code: Iterable[Path]) -> dict[str, Any]:
    """Everything a checkpoint must agree with to be resumed: params, backbone files, training data, code, versions."""
    import transformers

    from zhnlp import pretraining
    from zhnlp.pretraining import file_digest, files_identity

    return {
        "task": task,
        "train": config.identity(),
        "settings": dict(settings),
        "backbone": files_identity(backbone_dir),
        "examples": examples_digest(examples),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "code": {Path(p).name: file_digest(Path(p)) for p in [Path(__file__), Path(pretraining.__file__), *code]},
    }


def train_head(
    model,
    examples: Sequence[Example],
    *,
    mask_kind: str,
    pad_id: int,
    config: TrainConfig,
    checkpoints_dir: str | Path,
    components: Mapping[str, Any],
    on_log: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Fine-tune a BERT head with the HF Trainer: AdamW, linear warmup/decay, seeded, bf16 on a capable GPU.

    The pieces are the pretraining stage's (``zhnlp.pretraining``): its TrainingArguments
    (gloo DDP on CPU under torchrun, bf16 only where CUDA supports it), its throughput
    callback, and its resume rule — ``checkpoints_dir`` holds ``checkpoint-<step>`` folders
    (every ``save_steps``) and the run signature of ``components``; a complete checkpoint with
    the same signature is resumed (weights, optimizer, scheduler, RNG, data position), any
    other content is wiped. ``is_main_process`` tells the caller whether to write outputs.
    """
    from zhnlp.pretraining import ThroughputCallback, loss_curve, prepare_checkpoint_dir, run_signature, training_arguments

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    args = training_arguments(
        config.__dict__ | {"max_steps": config.max_steps},
        checkpoints_dir,
        report_to=[],
        do_eval=False,
        world_size=world_size,
        num_train_epochs=config.num_train_epochs,
        dataloader_num_workers=0,
        dataloader_persistent_workers=False,
    )
    signature = run_signature(components)
    is_main = args.process_index == 0
    with args.main_process_first(local=False, desc="checkpoint check"):
        decision = prepare_checkpoint_dir(checkpoints_dir, signature, components, world_size=world_size, is_main=is_main)
    resumed = str(decision.checkpoint) if decision.resumed else None
    if decision.resumed:
        state = json.loads((Path(decision.checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
        if state["global_step"] >= state["max_steps"]:
            # The run already finished (the Trainer would take one step too many when resumed there).
            _load_checkpoint_weights(model, Path(decision.checkpoint))
            return TrainResult(
                steps=int(state["global_step"]), seconds=0.0, tokens=0.0, tokens_per_second=None, train_loss=float("nan"),
                history=loss_curve(state["log_history"]), resumed_from=resumed,
                resume_reason=decision.reason + "; training was complete", signature=signature, is_main_process=is_main,
            )
    throughput = ThroughputCallback(world_size=world_size)
    trainer = GenerationTrainer(
        model=model,
        args=args,
        train_dataset=list(examples),
        data_collator=Collator(pad_id),
        callbacks=[throughput, LossHistory(on_log)],
        mask_kind=mask_kind,
    )
    trainer.remove_callback(PrinterCallback)  # logs reach on_log instead of being printed as dicts
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=resumed)
    seconds = time.perf_counter() - t0
    model.eval()
    summary = throughput.summary()
    return TrainResult(
        steps=int(trainer.state.global_step),
        seconds=seconds,
        tokens=summary["train_tokens"],
        tokens_per_second=summary["tokens_per_second"],
        train_loss=float(out.training_loss),
        history=loss_curve(trainer.state.log_history),
        resumed_from=resumed,
        resume_reason=decision.reason,
        signature=signature,
        is_main_process=is_main,
    )


def _load_checkpoint_weights(model, checkpoint: Path) -> None:
    """The weights of a Trainer checkpoint into ``model`` (tied weights are stored once)."""
    from safetensors.torch import load_file

    state = load_file(str(checkpoint / "model.safetensors"), device=str(_model_device(model)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"{checkpoint}: weights do not fit the model (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    model.eval()


def save_random_backbone(
    out_dir: str | Path,
    texts: Iterable[str],
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 192,
    vocab_size: int = 4000,
    seed: int = 0,
) -> Path:
    """A randomly initialised ``BertForMaskedLM`` with a char tokenizer trained on ``texts``, saved like a pretrain output.

    For tests and benchmarks: the same layout as ``models/pretrain/<name>`` (safetensors,
    fast tokenizer files, ``zhnlp_tokenizer.json``).
    """
    from transformers import BertConfig, BertForMaskedLM

    from zhnlp.tokenization import save_tokenizer, train_char_tokenizer

    out = Path(out_dir)
    tokenizer = train_char_tokenizer(texts, vocab_size=vocab_size, min_frequency=1)
    save_tokenizer(tokenizer, out, "char", lowercase=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertForMaskedLM(config).save_pretrained(str(out))
    return out


HEAD_FILE = "zhnlp_generation.json"


def save_head(out_dir: str | Path, model, codec: TextCodec, meta: Mapping[str, Any]) -> Path:
    """``save_pretrained`` (safetensors) + tokenizer + ``zhnlp_generation.json`` (how to decode with it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    codec.save(out)
    (out / HEAD_FILE).write_text(json.dumps(dict(meta), ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def read_head(model_dir: str | Path) -> dict[str, Any]:
    """The ``zhnlp_generation.json`` of a saved head ({} if absent)."""
    path = Path(model_dir) / HEAD_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
