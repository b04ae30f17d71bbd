"""UniLM: a BERT masked LM that writes left to right; the attention mask says which task.

UniLM (Dong et al. 2019; Su's bert4keras recipe, techniques.md sections 3-4) reuses one BERT
for generation: the MLM head (``cls``, tied to the word embeddings) at position ``t`` predicts
token ``t + 1``, and the self-attention mask decides what each position sees:

- ``"unilm"`` (:class:`BertUniLM`, Ape210K question -> equation): segment 0 (the source) is
  bidirectional; segment 1 (the target) is causal and sees the whole source; the source never
  sees the target (:func:`unilm_mask`);
- ``"causal"`` (:class:`BertCausalLM`, LCCC dialogue, DialoGPT-style): every position sees
  itself and the positions before it (:func:`causal_mask`).

Both classes are ``BertForMaskedLM`` (same modules, same weights: a checkpoint stays a
standard BERT MLM one that ``AutoModelForMaskedLM`` loads; which head it was trained for is
kept in ``zhnlp_generation.json``, not in its config) with transformers' ``GenerationMixin``,
so ``model.generate()`` gives greedy, beam and sampled decoding (``zhnlp.models.decoding``).

How this fits transformers 5.23's BERT (``models/bert/modeling_bert.py``):

* ``BertModel`` hands a 4-D ``[batch, 1, query, key]`` mask through unchanged
  (``create_bidirectional_mask`` returns 4-D masks as they are; a 3-D one is not supported);
  eager and SDPA attention both *add* it to the scores (eager would add a boolean one as 0/1),
  so :func:`additive_mask` makes it 0 / dtype-min in the model's dtype.
* KV cache: ``BertModel`` only *creates* a cache when ``config.is_decoder``, but
  ``BertSelfAttention`` appends to any ``Cache`` passed as ``past_key_values``. Under both
  masks no position depends on a later one, so caching the keys/values of decoded positions
  is exact; ``generate()`` makes the ``DynamicCache`` and reorders it for beam search.
* :meth:`BertGenerator.prepare_inputs_for_generation`: prompts are left-padded; ``generate()``
  grows the 2-D padding mask and the position ids (padding-aware, so a generated token takes
  position ``len(prompt) + t`` as in training); the prompt's token types come in as
  ``segment_ids`` and every generated token gets ``next_segment``; from those the 4-D mask of
  the new positions over all keys is built at every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BertForMaskedLM, GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

__all__ = ["MASK_KINDS", "IGNORE", "unilm_mask", "causal_mask", "build_mask", "additive_mask", "BertGenerator", "BertUniLM", "BertCausalLM", "HEADS"]

MASK_KINDS = ("unilm", "causal")
IGNORE = -100  # label value that carries no loss


# ---------------------------------------------------------------------------------------------
# masks (boolean [batch, query, key]: True where the query may attend to the key)


def unilm_mask(token_type_ids: torch.Tensor, attention_mask: torch.Tensor, queries: int | None = None) -> torch.Tensor:
    """The UniLM mask of the last ``queries`` positions (default: all) over every key.

    Key ``j`` is visible from query ``i`` iff ``j`` is not padding and ``c[j] <= c[i]``, where
    ``c`` is the running count of segment-1 tokens (bert4keras' construction). Source tokens
    (segment 0, before any target) have ``c = 0``: they see the whole source and no target;
    the t-th target token has ``c = t``: it sees the source and targets up to itself.
    Padding queries see every real source token (their outputs are never used).
    """
    valid = attention_mask.bool()
    counts = torch.cumsum(token_type_ids.long() * valid.long(), dim=1)
    q = counts.shape[1] if queries is None else queries
    return (counts[:, None, :] <= counts[:, -q:, None]) & valid[:, None, :]


def causal_mask(attention_mask: torch.Tensor, queries: int | None = None) -> torch.Tensor:
    """The causal mask of the last ``queries`` positions (default: all): key ``j <= i`` and not padding."""
    valid = attention_mask.bool()
    n = valid.shape[1]
    q = n if queries is None else queries
    idx = torch.arange(n, device=valid.device)
    return (idx[None, :] <= idx[n - q :, None])[None] & valid[:, None, :]


def build_mask(kind: str, token_type_ids: torch.Tensor, attention_mask: torch.Tensor, queries: int | None = None) -> torch.Tensor:
    if kind == "unilm":
        return unilm_mask(token_type_ids, attention_mask, queries)
    if kind == "causal":
        return causal_mask(attention_mask, queries)
    raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean ``[batch, query, key]`` -> float ``[batch, 1, query, key]``: 0 where allowed, dtype-min elsewhere."""
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None, :, :]


# ---------------------------------------------------------------------------------------------
# the heads


class BertGenerator(BertForMaskedLM, GenerationMixin):
    """``BertForMaskedLM`` + ``generate()`` under the mask ``mask_kind`` (set by the subclasses)."""

    mask_kind = "unilm"

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **kwargs,
    ):
        """Logits of the next token at every position (the last ``logits_to_keep`` ones if > 0).

        ``attention_mask``: a 2-D padding mask over the whole sequence (the head's mask is
        built from it and ``token_type_ids``), or a ready 4-D one (boolean or additive).
        ``labels`` are aligned with ``input_ids`` (the token there, or -100): position ``t``
        is scored on label ``t + 1``; the loss is the mean over scored tokens.
        ``past_key_values`` is filled in place (``use_cache`` is implied by passing one).
        """
        mask = attention_mask
        if mask is None or mask.dim() == 2:
            if past_key_values is not None and past_key_values.get_seq_length() > 0:
                raise ValueError("with a non-empty cache, pass the 4-D mask of the new positions (prepare_inputs_for_generation does)")
            shape = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
            device = self.device
            valid = mask if mask is not None else torch.ones(shape, dtype=torch.long, device=device)
            types = token_type_ids if token_type_ids is not None else torch.zeros(shape, dtype=torch.long, device=device)
            mask = build_mask(self.mask_kind, types, valid)
        if mask.dim() == 3:
            mask = mask[:, None]
        if mask.dtype == torch.bool:
            mask = additive_mask(mask[:, 0], self.dtype)
        out = self.bert(
            input_ids,
            attention_mask=mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            past_key_values=past_key_values,
            return_dict=True,
            **kwargs,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.cls(hidden)
        loss = None
        if labels is not None:
            if logits_to_keep:
                raise ValueError("labels need the logits of every position (logits_to_keep=0)")
            scored = logits[:, :-1].float()
            loss = F.cross_entropy(scored.reshape(-1, scored.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE)
        result = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=past_key_values, hidden_states=out.hidden_states, attentions=out.attentions)
        return result if return_dict is not False else result.to_tuple()

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        past_key_values=None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        next_segment: torch.Tensor | None = None,
        use_cache: bool = True,
        logits_to_keep: int | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict:
        """One step's forward inputs: the new tokens, their token types, positions and 4-D mask over every key.

        ``segment_ids`` (``[batch, prompt width]``, the prompt's token types) and ``next_segment``
        (``[batch]``, the type of every generated token) are ``generate()`` keyword arguments.
        """
        if segment_ids is None or next_segment is None:
            raise ValueError("generate() needs segment_ids (the prompts' token types) and next_segment (the generated tokens' type)")
        batch, width = input_ids.shape
        new = width if next_sequence_length is None else next_sequence_length
        valid = attention_mask.bool() if attention_mask is not None else torch.ones((batch, width), dtype=torch.bool, device=input_ids.device)
        gen = width - segment_ids.shape[1]
        types = torch.cat([segment_ids, next_segment[:, None].expand(-1, gen)], dim=1) if gen else segment_ids
        if position_ids is None:
            position_ids = (valid.long().cumsum(1) - 1).clamp(min=0)
        # One new position is the last one, and under both masks the last position sees every real key.
        allowed = valid[:, None, :] if new == 1 else build_mask(self.mask_kind, types, valid, queries=new)
        inputs = {
            "input_ids": input_ids[:, -new:],
            "token_type_ids": types[:, -new:],
            "position_ids": position_ids[:, -new:],
            "attention_mask": additive_mask(allowed, self.dtype),
            "past_key_values": past_key_values if use_cache else None,
            "logits_to_keep": logits_to_keep or 0,
        }
        return inputs | {k: v for k, v in kwargs.items() if k in ("output_attentions", "output_hidden_states")}


class BertUniLM(BertGenerator):
    """Seq2seq UniLM head: bidirectional over the source (segment 0), causal over the target (segment 1)."""

    mask_kind = "unilm"


class BertCausalLM(BertGenerator):
    """Left-to-right LM head on a BERT backbone (DialoGPT-style): every position sees those before it."""

    mask_kind = "causal"


HEADS: dict[str, type[BertGenerator]] = {"unilm": BertUniLM, "causal": BertCausalLM}
