"""Decoding with the BERT generation heads: prompts, the incremental decoder, loading a head.

A *decoder* is a small stateful adapter with three calls: ``start(prompts) -> logits`` for the
first new token of each prompt, ``step(tokens) -> logits`` after appending one token per row,
and ``select(rows)`` to reorder / repeat / drop rows (beam search, finished rows).
:mod:`zhnlp.models.search` (beam search, greedy, sampling) works on any decoder; this module
has the one for BERT heads (:class:`BertDecoder`, with a KV cache) and
:func:`transformers_generate`, the same searches through transformers' ``generate()`` on the
:mod:`zhnlp.models.unilm` heads (the reference our search is tested and measured against; why
we keep our own is in :mod:`zhnlp.models.search`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from transformers import GenerationConfig

from zhnlp.models.unilm import HEADS, MASK_KINDS, BertGenerator, additive_mask, causal_mask

__all__ = ["Prompt", "Generated", "Decoder", "BertDecoder", "load_model", "transformers_generate"]


@dataclass
class Prompt:
    """The tokens a generation starts from, their token types (default all 0) and the type every generated token gets."""

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


def _right_pad(seqs: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    valid = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        valid[i, : len(s)] = True
    return ids.to(device), valid.to(device)


class BertDecoder:
    """Incremental decoding with a BERT MLM under the UniLM (``kind="unilm"``) or causal mask.

    ``kind`` defaults to the head's own (:class:`zhnlp.models.unilm.BertUniLM` /
    ``BertCausalLM``); a plain ``BertForMaskedLM`` needs it given. Under ``"unilm"`` the whole
    prompt is the bidirectional source. Prompts are right-padded; generated tokens take position
    ids ``len(prompt) + t`` and token type ``prompt.next_segment``, exactly as in training where
    the target follows its source without a gap.

    **KV cache.** Under both masks no position depends on a later one, so caching each layer's
    keys/values of decoded positions is exact: the prompt is encoded once, then one position
    per step (``BertModel`` only *creates* a cache when ``is_decoder``, but its self-attention
    appends to any ``Cache`` passed in). :meth:`start` checks that the cache really filled and
    falls back to recomputing the whole sequence every step if it did not (``use_cache=False``
    forces that path; tests assert both agree).
    """

    def __init__(self, model, *, kind: str | None = None, use_cache: bool = True):
        kind = kind or getattr(model, "mask_kind", None)
        if kind not in MASK_KINDS:
            raise ValueError(f"kind must be one of {MASK_KINDS} (or the model a zhnlp.models.unilm head), got {kind!r}")
        self.model = model
        self.bidirectional = kind == "unilm"
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
            attention_mask=additive_mask(allowed, self.model.dtype),
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

        device = self.model.device
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


def load_model(path: str | Path, device: torch.device | str, *, head: str) -> BertGenerator:
    """A local BERT MLM checkpoint (safetensors, no remote code) as the generation head ``head`` (unilm | causal), in eval mode."""
    from zhnlp.models.checkpoint import load_config

    if head not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}")
    folder = Path(path)
    config = load_config(folder)  # CheckpointNotFound (a FileNotFoundError) without config.json; model_type inferred if absent
    if config.model_type != "bert":
        raise ValueError(f"{folder}: a {config.model_type!r} checkpoint; the generation heads need a BERT (BertForMaskedLM) one")
    kwargs = {"local_files_only": True, "trust_remote_code": False, "use_safetensors": True}
    model = HEADS[head].from_pretrained(str(folder), config=config, **kwargs)
    return model.to(device).eval()


def _left_pad(rows: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    valid = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
            valid[i, width - len(r) :] = 1
    return ids.to(device), valid.to(device)


def _prompt_cache(model: BertGenerator, ids: torch.Tensor, valid: torch.Tensor, segments: torch.Tensor, copies: int):
    """The KV cache of all but the last prompt token, computed once per prompt and repeated ``copies`` times.

    ``generate()`` repeats each prompt once per beam before encoding it: ``num_beams`` times the
    prompt's cost, which dominates when prompts are longer than what is generated. Encoded once
    here instead, with the whole prompt in view (a UniLM source is bidirectional: its tokens see
    the last one too), the cache keeps every position but the last; ``generate()`` then starts
    by encoding the last prompt token alone, against that cache. Exact under both masks.
    """
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    positions = (valid.cumsum(1) - 1).clamp(min=0)  # as generate() numbers them
    model(input_ids=ids, attention_mask=valid, token_type_ids=segments, position_ids=positions, past_key_values=cache, logits_to_keep=1)
    cache.crop(-1)
    cache.batch_repeat_interleave(copies)
    return cache


@torch.inference_mode()
def transformers_generate(
    model: BertGenerator,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    eos_id: int,
    num_beams: int = 1,
    length_penalty: float = 0.0,
    do_sample: bool = False,
    top_k: int = 0,
    top_p: float = 1.0,
    temperature: float = 1.0,
    seed: int | None = None,
    use_cache: bool = True,
) -> list[Generated]:
    """What :func:`zhnlp.models.search.beam_search` / ``greedy`` / ``sample`` give, through ``model.generate()``: the reference they are tested and benchmarked against.

    Same arguments (``seed`` replaces the ``torch.Generator``: the draws use torch's global generator on the
    model's device, seeded inside ``torch.random.fork_rng``). Batched sampling draws for finished rows too,
    so only batch-1 sampling matches :func:`~zhnlp.models.search.sample` draw for draw.
    """
    if not isinstance(model, BertGenerator):
        raise TypeError(f"transformers_generate() needs a zhnlp.models.unilm head (load it with load_model(..., head=...)), got {type(model).__name__}")
    if num_beams < 1:
        raise ValueError("num_beams must be >= 1")
    if do_sample and temperature <= 0:
        raise ValueError("temperature must be > 0 (use num_beams / greedy decoding for argmax decoding)")
    if not prompts:
        return []
    longest = max(len(p.ids) for p in prompts)
    if longest + max_new_tokens > model.config.max_position_embeddings:
        raise ValueError(f"a prompt of {longest} tokens + {max_new_tokens} new ones exceeds max_position_embeddings={model.config.max_position_embeddings}")
    if max_new_tokens == 0:
        return [Generated([], 0.0, False) for _ in prompts]
    pad = model.config.pad_token_id or 0
    ids, valid = _left_pad([p.ids for p in prompts], pad, model.device)
    segments, _ = _left_pad([p.segments or [0] * len(p.ids) for p in prompts], 0, model.device)
    search = dict(num_beams=num_beams, length_penalty=length_penalty, early_stopping="never") if num_beams > 1 else {}
    if do_sample:  # top_k=0: no top-k cut (left unset, generate() would apply its default of 50)
        search |= dict(do_sample=True, top_k=top_k, top_p=top_p, temperature=temperature)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, eos_token_id=eos_id, pad_token_id=pad, use_cache=use_cache,
        return_dict_in_generate=True, output_scores=True, **search,
    )
    kwargs = dict(
        attention_mask=valid,
        segment_ids=segments,
        next_segment=torch.tensor([p.next_segment for p in prompts], dtype=torch.long, device=model.device),
        generation_config=config,
    )
    if use_cache and num_beams > 1 and ids.shape[1] > 1:
        kwargs["past_key_values"] = _prompt_cache(model, ids, valid, segments, num_beams)
    if seed is None:
        out = model.generate(ids, **kwargs)
    else:
        with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            torch.manual_seed(seed)
            out = model.generate(ids, **kwargs)
    new = out.sequences[:, ids.shape[1] :]
    if num_beams == 1:  # the log-probs of the chosen tokens under each step's (processed) distribution
        steps = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    results = []
    for row, toks in enumerate(new.tolist()):
        finished = eos_id in toks
        n = toks.index(eos_id) if finished else len(toks)
        score = out.sequences_scores[row] if num_beams > 1 else steps[row, : n + finished].sum()
        results.append(Generated(toks[:n], float(score), finished))
    return results
