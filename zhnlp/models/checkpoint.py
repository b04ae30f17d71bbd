"""A local Hugging Face checkpoint folder (bert-base-chinese, hfl RoBERTa-wwm-ext, MacBERT, WoBERT...), read safely.

API (no weights are loaded; only safetensors headers and, for the MLM head check, four small tensors):

- :func:`inspect_checkpoint(path) -> Checkpoint` - everything below in one frozen record.
- :func:`load_config(path) -> PretrainedConfig` - the resolved config alone (what the loaders pass as
  ``config=`` to ``from_pretrained``).
- ``Checkpoint.load_tokenizer() -> ZhTokenizer``; ``Checkpoint.summary() -> dict`` (JSON-able, for MLflow).
- :class:`CheckpointError` (a :class:`zhnlp.errors.UserError`, one line naming the file and the fix);
  :class:`CheckpointNotFound` is also a ``FileNotFoundError``.

**Model type.** Original Chinese BERT configs (bert-base-chinese, chinese-roberta-wwm-ext-large,
WoBERT) have no ``model_type``; transformers' ``AutoConfig`` then guesses it from the folder NAME,
so ``chinese-roberta-wwm-ext-large`` (BERT weights under ``bert.``) becomes a RoBERTa config and
loads as random weights. A declared ``model_type`` is used as is (and checked against the weights);
otherwise it is inferred from the weight names' prefix (``bert.``, ``roberta.``, ``electra.``, ...;
unprefixed ``embeddings.word_embeddings.weight`` is a bare BERT), then from ``architectures``.
The config is built with ``CONFIG_MAPPING[model_type]``, never by name guessing.

**Weights** must be ``model.safetensors`` or a sharded ``model.safetensors.index.json``; a folder
with only pickle/TF/Flax weights is refused with how to convert it (nothing here unpickles).

**Tokenizer** (``tokenizer_source``): ``zhnlp_tokenizer.json`` (our own folders, any mode), else
``tokenizer.json``, else ``vocab.txt`` (WordPiece; always fast, no remote code, no network). A
``vocab.txt`` with at least :data:`WORD_VOCAB_MIN` multi-character CJK entries is a WoBERT word
vocab: mode ``word`` (jieba pre-segmentation, vocab words kept whole). The real 21,128-entry BERT
Chinese vocab has none (measured: 0 of 21,128); WoBERT adds about 20,000 jieba words.

**MLM head** (``mlm_head``), for the generation heads that reuse ``cls.predictions.*``:
``missing``, ``untrained`` (as released for HIT RoBERTa-wwm-ext-large) or ``trained``; see
:func:`_head_status`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhnlp.errors import UserError
from zhnlp.text.tokenization import META_FILE, ZhTokenizer, is_cjk_word, load_tokenizer

WORD_VOCAB_MIN = 1000  # multi-character CJK vocab.txt entries that make a WoBERT (word) vocab
SAFE_WEIGHTS, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
UNSAFE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "model.ckpt.index", "flax_model.msgpack")
# base_model_prefix of the encoder families a Chinese checkpoint comes in -> transformers model_type
PREFIX_TYPES = {
    "bert": "bert",
    "roberta": "roberta",
    "electra": "electra",
    "albert": "albert",
    "ernie": "ernie",
    "deberta": "deberta-v2",
    "megatron_bert": "megatron-bert",
    "nezha": "nezha",
}
BARE_BERT_KEY = "embeddings.word_embeddings.weight"  # a BertModel saved without its "bert." prefix
# (dense weight, LayerNorm weight, LayerNorm bias, vocab bias) of a BERT and a RoBERTa MLM head; old TF names gamma/beta
HEAD_KEYS = (
    ("cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.", "cls.predictions."),
    ("lm_head.dense.weight", "lm_head.layer_norm.", "lm_head."),
)


class CheckpointError(UserError):
    """A local checkpoint folder that cannot be used; the message names the folder or file and the fix."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No folder, or no config.json in it."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    model_type: str
    config: Any  # transformers.PretrainedConfig
    weights: tuple[str, ...]  # safetensors file names, relative to path
    tokenizer_source: str | None  # 'zhnlp' | 'tokenizer.json' | 'vocab.txt' | None (no tokenizer files)
    tokenizer_mode: str | None  # 'char' | 'word' | 'pretrained' (zhnlp.text.tokenization.MODES)
    mlm_head: str  # 'trained' | 'untrained' | 'missing'
    inferred_model_type: bool  # config.json had no model_type

    def load_tokenizer(self) -> ZhTokenizer:
        """The checkpoint's own tokenizer as a :class:`ZhTokenizer` (fast, local files only, no remote code)."""
        if self.tokenizer_source is None:
            raise CheckpointError(f"{self.path}: no tokenizer (none of {META_FILE}, tokenizer.json, vocab.txt); add the checkpoint's vocab.txt")
        if self.tokenizer_source == "zhnlp":
            return load_tokenizer(self.path)
        from transformers import AutoTokenizer

        # WoBERT: vocab words are ordinary WordPiece entries, so the normaliser must not split CJK characters
        # apart (ZhTokenizer.pieces hands it jieba words or single characters); the setting is saved with it.
        word = {"tokenize_chinese_chars": False} if self.tokenizer_mode == "word" else {}
        hf = AutoTokenizer.from_pretrained(
            str(self.path), config=self.config, use_fast=True, trust_remote_code=False, local_files_only=True, **word
        )
        if not getattr(hf, "is_fast", False):
            raise CheckpointError(f"{self.path}: {self.tokenizer_source} gives no fast tokenizer; add a tokenizer.json")
        meta: dict[str, Any] = {"mode": self.tokenizer_mode, "source": self.tokenizer_source}
        if word:
            meta["lowercase"] = bool(getattr(hf, "do_lower_case", True))
        return ZhTokenizer(hf, self.tokenizer_mode, meta)

    def summary(self) -> dict[str, Any]:
        """What was resolved, JSON-able (for MLflow params / run metadata)."""
        return {
            "path": str(self.path),
            "model_type": self.model_type,
            "inferred_model_type": self.inferred_model_type,
            "architectures": list(getattr(self.config, "architectures", None) or []),
            "weights": list(self.weights),
            "tokenizer_source": self.tokenizer_source,
            "tokenizer_mode": self.tokenizer_mode,
            "mlm_head": self.mlm_head,
            "vocab_size": getattr(self.config, "vocab_size", None),
            "hidden_size": getattr(self.config, "hidden_size", None),
            "num_hidden_layers": getattr(self.config, "num_hidden_layers", None),
        }


def inspect_checkpoint(path: str | Path) -> Checkpoint:
    """Resolve a local checkpoint folder: config, weights, tokenizer and MLM head status (no weights loaded)."""
    folder = Path(path)
    config, model_type, inferred, weights, keys = _resolve(folder)
    source, mode = _tokenizer_kind(folder)
    return Checkpoint(folder, model_type, config, weights, source, mode, _head_status(folder, weights, keys), inferred)


def load_config(path: str | Path):
    """The checkpoint's ``PretrainedConfig``, its ``model_type`` inferred from the weights when config.json has none."""
    return _resolve(Path(path))[0]


# ---------------------------------------------------------------------------------------------
# config and weights


def _resolve(folder: Path):
    config_file = folder / "config.json"
    if not folder.is_dir() or not config_file.is_file():
        raise CheckpointNotFound(f"{folder} is not a model directory (no config.json); point to a folder with config.json and model.safetensors")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config_file}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object")
    weights = _weight_files(folder)
    keys = _weight_keys(folder, weights)
    declared = raw.get("model_type")
    from_weights = _type_from_keys(keys)
    model_type = declared or from_weights or _type_from_architectures(raw.get("architectures"))
    from transformers import CONFIG_MAPPING

    if not model_type:
        raise CheckpointError(f'{config_file}: cannot tell the model type from the weights or "architectures"; add "model_type": "bert" (or the right one)')
    if model_type not in CONFIG_MAPPING:
        raise CheckpointError(f"{config_file}: model_type {model_type!r} is not a transformers architecture (remote code is off); use one of bert, roberta, electra, ...")
    if declared and from_weights and _prefix_of(declared) not in (None, _prefix_of(from_weights)) and not _has_prefix(keys, _prefix_of(declared)):
        raise CheckpointError(f"{config_file}: model_type {declared!r} but the weights are {from_weights!r} ones; set \"model_type\": \"{from_weights}\"")
    config = CONFIG_MAPPING[model_type].from_pretrained(str(folder), local_files_only=True)
    return config, model_type, not declared, weights, keys


def _weight_files(folder: Path) -> tuple[str, ...]:
    if (folder / SAFE_WEIGHTS).is_file():
        return (SAFE_WEIGHTS,)
    index = folder / SAFE_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = tuple(sorted(set(weight_map.values())))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise CheckpointError(f"{index}: not a safetensors index (a JSON object with a weight_map)") from None
        absent = [f for f in files if "/" in f or not (folder / f).is_file()]
        if absent:
            raise CheckpointError(f"{index}: shard {absent[0]} is missing from {folder}")
        return files
    unsafe = [name for name in UNSAFE_WEIGHTS if (folder / name).is_file()]
    if unsafe:
        raise CheckpointError(
            f"{folder / unsafe[0]}: only safetensors weights are loaded (pickle/TF/Flax files are never read here); convert it once, "
            f"where you trust the file, with transformers: AutoModel.from_pretrained(dir).save_pretrained(dir) writes {SAFE_WEIGHTS}"
        )
    raise CheckpointError(f"{folder}: no {SAFE_WEIGHTS} or {SAFE_INDEX}; add the checkpoint's safetensors weights")


def _weight_keys(folder: Path, weights: tuple[str, ...]) -> dict[str, str]:
    """Every tensor name -> the file holding it (headers only)."""
    from safetensors import SafetensorError, safe_open

    keys: dict[str, str] = {}
    for name in weights:
        try:
            with safe_open(str(folder / name), framework="pt") as f:
                keys.update(dict.fromkeys(f.keys(), name))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{folder / name}: not a readable safetensors file ({err})") from None
    return keys


def _has_prefix(keys, prefix: str | None) -> bool:
    return prefix is not None and any(k.startswith(prefix + ".") for k in keys)


def _prefix_of(model_type: str) -> str | None:
    return next((p for p, t in PREFIX_TYPES.items() if t == model_type), None)


def _type_from_keys(keys) -> str | None:
    found = {k.split(".", 1)[0] for k in keys} & PREFIX_TYPES.keys()
    if len(found) == 1:
        return PREFIX_TYPES[found.pop()]
    if not found and BARE_BERT_KEY in keys and not any(k.startswith("encoder.albert_layer_groups") for k in keys):
        return "bert"
    return None


def _type_from_architectures(architectures) -> str | None:
    """The model_type whose transformers classes include ``architectures[0]`` (e.g. BertForMaskedLM -> bert)."""
    if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
        return None
    from transformers.models.auto import modeling_auto

    for name in dir(modeling_auto):
        mapping = getattr(modeling_auto, name)
        if name.endswith("_MAPPING_NAMES") and isinstance(mapping, dict):
            for model_type, classes in mapping.items():
                if architectures[0] in ((classes,) if isinstance(classes, str) else tuple(classes)):
                    return model_type
    return None


# ---------------------------------------------------------------------------------------------
# tokenizer and MLM head


def _tokenizer_kind(folder: Path) -> tuple[str | None, str | None]:
    if (folder / META_FILE).is_file():
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{folder / META_FILE}: not valid JSON ({err})") from None
        return "zhnlp", str(meta.get("mode", "pretrained")) if isinstance(meta, dict) else "pretrained"
    if (folder / "tokenizer.json").is_file():
        return "tokenizer.json", "pretrained"
    vocab = folder / "vocab.txt"
    if vocab.is_file():
        try:
            entries = vocab.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as err:
            raise CheckpointError(f"{vocab}: not UTF-8 text ({err})") from None
        words = sum(1 for entry in entries if is_cjk_word(entry.strip()))
        return "vocab.txt", "word" if words >= WORD_VOCAB_MIN else "pretrained"
    return None, None


def _head_status(folder: Path, weights: tuple[str, ...], keys: dict[str, str]) -> str:
    """``missing``, ``untrained`` or ``trained`` MLM head, from at most four tensors read lazily.

    A freshly initialised head (transformers' ``_init_weights``, Google's TF BERT, HIT's
    conversion alike) always has its transform LayerNorm at exactly weight 1 / bias 0 and its
    vocab bias at exactly 0. Any optimiser step moves every element of them (every token gets a
    non-zero softmax gradient on the vocab bias; the LayerNorm affine gets a gradient at every
    position), so a head that was trained at all never shows either exact init value. Either
    signal therefore marks the head as untrained; the random dense/decoder matrices carry no
    comparable exact signal and are not read.
    """
    from safetensors import safe_open

    for dense, norm, bias_prefix in HEAD_KEYS:
        ln_w = next((k for k in (norm + "weight", norm + "gamma") if k in keys), None)
        ln_b = next((k for k in (norm + "bias", norm + "beta") if k in keys), None)
        if dense not in keys or ln_w is None or ln_b is None:
            continue
        bias = next((k for k in (bias_prefix + "bias", bias_prefix + "decoder.bias") if k in keys), None)

        def tensor(name):
            with safe_open(str(folder / keys[name]), framework="pt") as f:
                return f.get_tensor(name)

        at_init = bool((tensor(ln_w) == 1).all() and (tensor(ln_b) == 0).all())
        if at_init or (bias is not None and bool((tensor(bias) == 0).all())):
            return "untrained"
        return "trained"
    return "missing"


def mlm_head_warning(checkpoint: Checkpoint, head: str) -> str | None:
    """A one-line warning when a generation head (UniLM seq2seq, causal LM) would start from an MLM head
    that is missing or was never trained: its output layer is then random, and the head must learn it."""
    if checkpoint.mlm_head == "trained":
        return None
    state = "has no MLM head" if checkpoint.mlm_head == "missing" else "has an untrained (randomly initialised) MLM head"
    return (f"{checkpoint.path} {state}: the {head} head starts from a random output layer and needs far more training; "
            "prefer a checkpoint with a trained MLM head, or continue pretraining it first (pretrain.backbones.<name>.init_from)")
