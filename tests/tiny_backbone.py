"""A tiny local BERT checkpoint for head tests: a WordPiece fast tokenizer and a random BertForMaskedLM,
saved in the layout ``zhnlp.models.checkpoint.inspect_checkpoint`` reads (safetensors, zhnlp_tokenizer.json)."""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_backbone(
    out_dir: Path,
    texts: list[str],
    mode: str = "char",
    words: tuple[str, ...] = (),
    *,
    hidden: int = 32,
    layers: int = 1,
    positions: int = 128,
    vocab_size: int = 3000,
    char_vocab: bool = False,
    special: list[str] = SPECIAL,
) -> Path:
    """Tokenizer over ``texts`` and a random model (``hidden`` wide, ``layers`` deep).

    ``char_vocab``: the vocab is the sorted characters of ``texts`` (ASCII ones also as ``##`` pieces)
    instead of a trained WordPiece, whose trainer orders tied tokens differently from one process to the
    next; use it where a test compares two processes. ``words``: WoBERT words added as tokens matched on
    the raw pieces, as :mod:`zhnlp.text.tokenization` does.
    """
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    if char_vocab:
        chars = sorted({ch for t in texts for ch in normalizer.normalize_str(t) if not ch.isspace()})
        vocab = [*special, *chars, *(f"##{ch}" for ch in chars if ch.isascii() and ch.isalnum())]
        tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    if not char_vocab:
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=special, show_progress=False))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    hf = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
    if words:
        hf.add_tokens([AddedToken(w, normalized=False, single_word=False, lstrip=False, rstrip=False) for w in words])
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out_dir))
    config = BertConfig(
        vocab_size=len(hf), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden,
        max_position_embeddings=positions,
    )
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(str(out_dir))
    (out_dir / "zhnlp_tokenizer.json").write_text(json.dumps({"mode": mode, "lowercase": True}), encoding="utf-8")
    return out_dir
