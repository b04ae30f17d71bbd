"""Beam search, greedy decoding and sampling over a :class:`zhnlp.models.decoding.Decoder`.

Hand-written rather than transformers' ``generate()`` (which the :mod:`zhnlp.models.unilm`
heads support, with the same outputs: tests/test_generation.py) because it is faster at beam
search. ``python -m benchmarks bench_generation`` measures both in turns on the same prompts
(pretrain-sized random BERT, 3 beams, 24 new tokens, ``generate()`` at its best: each prompt
encoded once, not once per beam, ``zhnlp.models.decoding.transformers_generate``). This
code's speed over ``generate()``'s, three runs on the project's shared 2-core CPU machine:

* beam search, batch 1: 1.36x, 1.65x, 1.65x (generate()'s per-call set-up and per-step
  bookkeeping weigh on small batches);
* beam search, batch 32: 1.02x, 1.06x, 1.25x; with outputs of varied length, as a trained
  model's (end token's logit raised; 12 new tokens on average): 1.11x, 1.08x (one outlier
  run left out). generate() keeps a finished prompt's beams in the batch until every prompt
  is done; this search drops them at once;
* top-k sampling: batch 1 0.98x, 0.91x; batch 32 0.93x, 0.93x, 0.89x (slightly slower; kept
  for one search owner and for its own seeded generator, which draws the same tokens on any
  device).

Semantics are transformers' own where both have the knob (tests/test_generation.py checks
that ``model.generate()`` of the :mod:`zhnlp.models.unilm` heads gives the same outputs):
beam search as ``generate(num_beams=k, early_stopping="never", length_penalty=...)``;
sampling as ``generate(do_sample=True, temperature, top_k, top_p)`` (temperature, then top-k,
then top-p), drawn from a seeded ``torch.Generator`` of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from zhnlp.models.decoding import Decoder, Generated, Prompt

__all__ = ["beam_search", "greedy", "sample", "filter_logits"]


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

    def argmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.log_softmax(logits, dim=-1)
        best = logp.argmax(dim=-1)
        return best, logp.gather(1, best[:, None]).squeeze(1)

    return _one_token_per_step(decoder, prompts, max_new_tokens, eos_id, argmax)


def _one_token_per_step(
    decoder: Decoder, prompts: Sequence[Prompt], max_new_tokens: int, eos_id: int, choose: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
) -> list[Generated]:
    """Greedy and sampling: ``choose(logits) -> (a token per row, its log-prob)``; a prompt leaves the batch at ``eos_id``."""
    if not prompts:
        return []
    logits = decoder.start(prompts)
    out = [Generated([], 0.0, False) for _ in prompts]
    active = list(range(len(prompts)))
    for _ in range(max_new_tokens):
        chosen, logp = choose(logits)
        keep, tokens = [], []
        for row, item in enumerate(active):
            tok = int(chosen[row])
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
    gen_device = generator.device if generator is not None else torch.device("cpu")

    def draw(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        filtered = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
        probs = torch.softmax(filtered, dim=-1).to(gen_device)
        drawn = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return drawn, torch.log(probs.gather(1, drawn[:, None]).squeeze(1))

    return _one_token_per_step(decoder, prompts, max_new_tokens, eos_id, draw)
