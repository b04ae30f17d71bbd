"""Text for the BERT generation heads (:class:`TextCodec`), and the heads' training examples and loss.

The heads themselves (UniLM seq2seq and causal LM on a BERT MLM, their attention masks) are
:mod:`zhnlp.models.unilm`; decoding (prompts, the KV-cached decoder, beam search, sampling)
is :mod:`zhnlp.models.decoding` and :mod:`zhnlp.models.search`.

The loss of the two BERT heads (:func:`bert_lm_loss`) is at the end; training them is
:func:`zhnlp.train.heads.train_head`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zhnlp.models.unilm import IGNORE, additive_mask, build_mask
from zhnlp.progress import counter

__all__ = [
    "TextCodec",
    "Example",
    "Collator",
    "bert_lm_loss",
    "evaluate_loss",
    "ensure_token_types",
    "default_device",
    "save_random_backbone",
    "save_head",
    "read_head",
    "IGNORE",
]


def _model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------------
# text <-> ids


class TextCodec:
    """Encoding and decoding text for the generation heads, on top of ``zhnlp.text.tokenization``.

    Encoding goes through :class:`zhnlp.text.tokenization.ZhTokenizer` (word mode pre-segments with
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
        """The tokenizer of a model folder: ours (``zhnlp_tokenizer.json``) or a local checkpoint's own."""
        from zhnlp.models.checkpoint import inspect_checkpoint

        return cls(inspect_checkpoint(path).load_tokenizer())

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
            from zhnlp.text.tokenization import ZhTokenizer

            self.hf.add_tokens(missing)
            self.zh = ZhTokenizer(self.hf, self.zh.mode, self.zh.meta)
            self.special_ids = set(self.hf.all_special_ids)
            if model is not None:
                model.resize_token_embeddings(len(self.hf), mean_resizing=False)
        return missing

    def save(self, out_dir: str | Path) -> None:
        self.zh.save(out_dir)


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
    with counter("evaluation loss", total=len(order), unit="examples") as bar:
        for start in range(0, len(order), batch_size):
            batch = collate([examples[i] for i in order[start : start + batch_size]])
            s, n = bert_lm_loss(model, {k: v.to(device) for k, v in batch.items()}, mask_kind)
            total, count = total + float(s), count + int(n)
            bar.update(len(batch["input_ids"]))
    model.train(was_training)
    loss = total / count if count else float("nan")
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}


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

    from zhnlp.text.tokenization import save_tokenizer
    from zhnlp.text.tokenizer_training import train_char_tokenizer

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
