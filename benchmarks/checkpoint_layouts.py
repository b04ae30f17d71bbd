"""Tiny test checkpoints in the layouts researchers download, for tests and parity checks.

``build_checkpoint(out_dir, layout, *, source_dir, ...)`` writes ``out_dir/<name>`` (a hub-like
folder name per layout, see :data:`FOLDER_NAMES`) and returns that path. Weights are random
(seeded), tiny (``hidden_size`` etc.), always safetensors except ``bin-only``; the vocab and
configs are the REAL ones from ``source_dir`` (``/work/shared/data/bert-chinese-layout``:
``vocab.txt``, ``bert-base-chinese.config.json``, ``chinese-roberta-wwm-ext-large.config.json``),
with only the size keys shrunk and no ``model_type`` added.

Layouts (:data:`LAYOUTS`):

- ``bert-base-chinese``: original config (no model_type), vocab.txt, BertForMaskedLM weights
  (``bert.``/``cls.`` keys) with a trained-looking MLM head; no tokenizer.json.
- ``roberta-wwm-ext-large``: the same from HIT's large config, in a folder named
  ``chinese-roberta-wwm-ext-large`` (transformers' AutoConfig guesses RoBERTa from that name) and,
  as HIT released it, an MLM head at its initial values.
- ``tokenizer-json``: ``save_pretrained`` of the model and a BertTokenizerFast (model_type, tokenizer.json).
- ``bin-only``: config.json + vocab.txt + a ``torch.save``'d ``pytorch_model.bin`` (for the refusal test).
- ``no-mlm-head``: BertModel weights only (unprefixed ``embeddings.*`` keys).
- ``untrained-mlm-head``: bert-base-chinese layout with the MLM head at its initial values.
- ``wobert``: vocab = the real vocab plus :data:`WOBERT_WORDS` frequent multi-character jieba words; no model_type.

"Trained" heads are the initial head with its LayerNorm and vocab bias moved off their init
values (what any training step does), so :func:`zhnlp.models.checkpoint.inspect_checkpoint` sees ``trained``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

LAYOUTS = ("bert-base-chinese", "roberta-wwm-ext-large", "tokenizer-json", "bin-only", "no-mlm-head", "untrained-mlm-head", "wobert")
FOLDER_NAMES = {
    "bert-base-chinese": "bert-base-chinese",
    "roberta-wwm-ext-large": "chinese-roberta-wwm-ext-large",
    "tokenizer-json": "tokenizer-json-bert",
    "bin-only": "bin-only-bert",
    "no-mlm-head": "no-mlm-head-bert",
    "untrained-mlm-head": "untrained-mlm-head-bert",
    "wobert": "chinese-wobert",
}
SOURCE_FILES = {"vocab": "vocab.txt", "bert": "bert-base-chinese.config.json", "large": "chinese-roberta-wwm-ext-large.config.json"}
WOBERT_WORDS = 1500


def _source(source_dir: str | Path, key: str) -> Path:
    path = Path(source_dir) / SOURCE_FILES[key]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build_checkpoint needs the bert-chinese-layout folder ({', '.join(SOURCE_FILES.values())})")
    return path


def _vocab(source_dir, words: int = 0) -> list[str]:
    vocab = _source(source_dir, "vocab").read_text(encoding="utf-8").split("\n")
    vocab = vocab[:-1] if vocab and vocab[-1] == "" else vocab
    if words:
        vocab += _jieba_words(set(vocab), words)
    return vocab


def _jieba_words(known: set[str], count: int) -> list[str]:
    """The ``count`` most frequent multi-character CJK words of jieba's own dictionary, not in ``known``."""
    import jieba

    from zhnlp.text.tokenization import is_cjk_word

    entries = []
    with open(Path(jieba.__file__).parent / "dict.txt", encoding="utf-8") as f:
        for line in f:
            word, freq = line.split()[:2]
            if is_cjk_word(word) and word not in known:
                entries.append((-int(freq), word))
    return [w for _, w in sorted(entries)[:count]]


def _config(source_dir, key: str, vocab_size: int, sizes: dict) -> dict:
    raw = json.loads(_source(source_dir, key).read_text(encoding="utf-8"))
    return raw | sizes | {"vocab_size": vocab_size}


def _bert_config(raw: dict):
    from transformers import BertConfig

    return BertConfig(**{k: v for k, v in raw.items() if k != "model_type"})


def _set_head(model, trained: bool, seed: int) -> None:
    import torch

    head = model.cls.predictions
    with torch.no_grad():
        if trained:
            gen = torch.Generator().manual_seed(seed + 1)
            head.transform.LayerNorm.weight.add_(0.05 * torch.randn(head.transform.LayerNorm.weight.shape, generator=gen))
            head.transform.LayerNorm.bias.add_(0.05 * torch.randn(head.transform.LayerNorm.bias.shape, generator=gen))
            head.bias.add_(0.05 * torch.randn(head.bias.shape, generator=gen))
        else:  # exactly transformers' / Google's initial values
            head.transform.LayerNorm.weight.fill_(1.0)
            head.transform.LayerNorm.bias.zero_()
            head.bias.zero_()


def _write_weights(model, out: Path) -> None:
    """``save_pretrained`` for the safetensors file only (config.json is written separately, as downloaded)."""
    tmp = out / ".save"
    model.save_pretrained(str(tmp))
    for f in tmp.glob("model.safetensors*"):
        shutil.move(str(f), out / f.name)
    shutil.rmtree(tmp)


def build_checkpoint(
    out_dir,
    layout: str,
    *,
    source_dir,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 128,
    seed: int = 0,
) -> Path:
    """Write a tiny checkpoint of ``layout`` to ``out_dir/FOLDER_NAMES[layout]`` and return that folder."""
    import torch
    from transformers import BertForMaskedLM, BertModel

    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    out = Path(out_dir) / FOLDER_NAMES[layout]
    out.mkdir(parents=True, exist_ok=True)
    sizes = dict(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads, intermediate_size=intermediate_size)
    vocab = _vocab(source_dir, WOBERT_WORDS if layout == "wobert" else 0)
    raw = _config(source_dir, "large" if layout == "roberta-wwm-ext-large" else "bert", len(vocab), sizes)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(seed)
    if layout == "no-mlm-head":
        model = BertModel(_bert_config(raw), add_pooling_layer=True)
    else:
        model = BertForMaskedLM(_bert_config(raw))
        _set_head(model, trained=layout not in ("roberta-wwm-ext-large", "untrained-mlm-head"), seed=seed)
    if layout == "tokenizer-json":
        from transformers import BertTokenizerFast

        BertTokenizerFast(vocab=str(out / "vocab.txt"), do_lower_case=True).save_pretrained(str(out))
        model.save_pretrained(str(out))  # config.json with model_type and architectures
        return out
    (out / "config.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    if layout == "bin-only":
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(state, out / "pytorch_model.bin")
    else:
        _write_weights(model, out)
    return out
