"""BERT masked-LM pretraining with jieba whole-word masking: params, model, Trainer, the stage's outputs.

* :class:`ModelSettings`, :class:`PretrainTraining`, :class:`BackboneSpec` - the strict
  ``pretrain.model`` / ``pretrain.training`` / ``pretrain.backbones.<name>`` params.
* :func:`build_model` - a ``MaskedOnlyBertForMaskedLM`` (a ``BertForMaskedLM`` whose training forward scores only the masked positions) sized to the tokenizer from ``pretrain.model``
  params, or loaded from a local safetensors checkpoint (``init_from``), with
  :func:`check_capacity` (the n > 8.33 ln N embedding-width rule, techniques.md section 7).
* :class:`PretrainTrainer`, :func:`build_trainer` - the Trainer over the encoded shards with
  whole-word masking (the data, collator, loss and accuracy are :mod:`zhnlp.train.mlm`'s).
* :func:`run_components` (what a resumed run must agree with), :func:`final_evaluation`,
  :func:`final_metrics` and :func:`save_backbone` - the stage's outputs.

Training arguments, throughput, resume and checkpoint checks are :mod:`zhnlp.train`'s, shared
with every fine-tuning head.
"""
from __future__ import annotations

import math
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerBase, Trainer

from zhnlp.config import ConfigError, check_name, from_params, in_range
from zhnlp.models.checkpoint import CheckpointError, load_config
from zhnlp.text.tokenization import load_tokenizer
from zhnlp.train.arguments import TrainingSettings, training_arguments
from zhnlp.train.callbacks import ThroughputCallback
from zhnlp.models.masked_lm import MaskedOnlyBertForMaskedLM
from zhnlp.train.mlm import MaskedTokenAccuracy, ShardedTokenDataset, ShardWindowSampler, WholeWordMaskCollator, argmax_logits, masked_lm_loss
from zhnlp.train.resume import code_identity, files_identity

CAPACITY_FACTOR = 8.33  # n > 8.33 ln N (techniques.md section 7)
MLM_TOKENS = ("mask_token", "pad_token", "cls_token", "sep_token")

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


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """``pretrain.model``: the ``BertConfig`` of a fresh backbone (defaults: BERT-base's)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12

    def validate(self, where: str) -> None:
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{where}.{key}: {getattr(self, key)!r} is not allowed; use a number >= 1")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"{where}.hidden_size: {self.hidden_size} is not allowed; use a multiple of num_attention_heads ({self.num_attention_heads})")
        in_range(f"{where}.hidden_dropout_prob", self.hidden_dropout_prob, 0.0, 1.0, high_open=True)
        in_range(f"{where}.attention_probs_dropout_prob", self.attention_probs_dropout_prob, 0.0, 1.0, high_open=True)


@dataclass(frozen=True, kw_only=True)
class PretrainTraining(TrainingSettings):
    """``pretrain.training``: the shared Trainer keys (``max_steps`` required) plus masking and evaluation."""

    max_steps: int = field()  # field(): required (a bare annotation would inherit the base default)
    per_device_train_batch_size: int = field()
    learning_rate: float = field()
    save_steps: int = field()
    logging_steps: int = field()
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    dataloader_num_workers: int = 2  # CUDA only
    mlm_probability: float = 0.15
    whole_word_mask: bool = True
    eval_steps: int | None = None  # None: save_steps
    max_eval_samples: int | None = None

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.max_steps < 1:
            raise ConfigError(f"{where}.max_steps: {self.max_steps!r} is not allowed; use a number >= 1")
        in_range(f"{where}.mlm_probability", self.mlm_probability, 0.0, 1.0)
        for key in ("eval_steps", "max_eval_samples"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{where}.{key}: {getattr(self, key)!r} is not allowed; use a number >= 1 or null")


@dataclass(frozen=True)
class BackboneSpec:
    """``pretrain.backbones.<name>``: the tokenizer it is trained with, and optionally a local checkpoint to continue."""

    tokenizer: str
    init_from: str | None = None

    def validate(self, where: str) -> None:
        check_name(f"{where}.tokenizer", self.tokenizer)


def pretrain_training(training: PretrainTraining | Mapping[str, Any]) -> PretrainTraining:
    return training if isinstance(training, PretrainTraining) else from_params(PretrainTraining, training, "pretrain.training")


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


def mlm_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The Hugging Face tokenizer of :func:`zhnlp.text.tokenization.load_tokenizer`; it must have [PAD] [CLS] [SEP] [MASK]."""
    tok = load_tokenizer(path).hf
    missing = [name for name in MLM_TOKENS if getattr(tok, name) is None]
    if missing:
        raise ConfigError(f"tokenizer {path} lacks {missing}; masked-LM pretraining needs [PAD] [CLS] [SEP] [MASK]")
    return tok


def build_model(
    tokenizer: PreTrainedTokenizerBase, model_params: Mapping[str, Any] | None = None, init_from: str | Path | None = None
) -> tuple[BertForMaskedLM, dict[str, Any]]:
    """A BertForMaskedLM for ``tokenizer``: fresh from ``model_params`` (``pretrain.model``, strict) or loaded from ``init_from``.

    Returns the model and an info dict (source, vocab sizes, parameter count, capacity check).
    """
    settings = from_params(ModelSettings, model_params or {}, "pretrain.model")
    vocab = len(tokenizer)
    info: dict[str, Any] = {"vocab_size": vocab}
    if init_from:
        path = Path(init_from)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"init_from {path} is not a local checkpoint directory (no config.json)")
        config = load_config(path)  # model_type inferred from the weights when config.json has none (original Chinese BERTs)
        if config.model_type != "bert":
            raise CheckpointError(f"init_from {path}: a {config.model_type!r} checkpoint; pretraining continues BERT (BertForMaskedLM) ones")
        model = MaskedOnlyBertForMaskedLM.from_pretrained(
            str(path), config=config, use_safetensors=True, trust_remote_code=False, local_files_only=True
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
        model = MaskedOnlyBertForMaskedLM(BertConfig(vocab_size=vocab, pad_token_id=tokenizer.pad_token_id, **asdict(settings)))
    model.config.pad_token_id = tokenizer.pad_token_id
    info["capacity"] = check_capacity(model.config.hidden_size, vocab)
    info["parameters"] = sum(p.numel() for p in model.parameters())
    return model, info


def flops_per_token(model: torch.nn.Module, seq_len: float, head_fraction: float = 1.0) -> float:
    """Training FLOPs per token: 6*N plus attention 12*layers*hidden*seq_len (fwd + bwd).

    N counts the matmul weights a token passes through: all parameters except the position and
    token-type embedding tables (lookups); the word embeddings count once, as the tied LM head.
    ``head_fraction`` is the share of positions the LM head (vocabulary projection and its
    transform) scores: 1 for BertForMaskedLM, about ``mlm_probability`` for
    :class:`~zhnlp.models.masked_lm.MaskedOnlyBertForMaskedLM`.
    """
    config = model.config
    n = sum(p.numel() for p in model.parameters())
    n -= (1.0 - head_fraction) * (config.vocab_size * config.hidden_size + config.hidden_size**2)
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
# Trainer
# ---------------------------------------------------------------------------


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

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model scores the vocabulary at the labelled positions only (Trainer pops ``labels``)."""
        if "labels" in inputs:
            inputs = {**inputs, "mlm_positions": inputs["labels"] != -100}
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

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
    training: PretrainTraining | Mapping[str, Any],
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
    """Everything ``trainer.train()`` needs, from params (strict) and shard paths."""
    from transformers import set_seed

    training = pretrain_training(training)
    notes: list[str] = []
    evaluate = bool(eval_paths)
    args = training_arguments(
        training, output_dir, report_to=report_to, run_name=run_name, evaluate=evaluate,
        eval_steps=(training.eval_steps or training.save_steps) if evaluate else None, batch_eval_metrics=True, **arg_overrides,
    )
    set_seed(training.seed)  # model initialisation
    model, info = build_model(tokenizer, model_params, init_from)
    wwm = training.whole_word_mask
    train_ds = ShardedTokenDataset(train_paths, use_word_ids=wwm)
    eval_ds = ShardedTokenDataset(eval_paths, use_word_ids=wwm, max_rows=training.max_eval_samples) if evaluate else None
    if wwm and not train_ds.has_word_ids:
        notes.append("shards carry no word_ids: whole-word masking falls back to WordPiece ## continuation pieces")
    if not evaluate:
        notes.append("no held-out shards: no masked-token accuracy")
    collator = WholeWordMaskCollator(
        tokenizer,
        mlm_probability=training.mlm_probability,
        whole_word_mask=wwm,
        seed=training.seed,
        pad_to_multiple_of=8 if torch.cuda.is_available() else None,
        max_length=model.config.max_position_embeddings,
    )
    device_name, peak = peak_bf16_flops()
    info["device"] = device_name
    info["peak_bf16_flops"] = peak
    head_fraction = training.mlm_probability if isinstance(model, MaskedOnlyBertForMaskedLM) else 1.0
    fpt = flops_per_token(model, train_ds.mean_length(), head_fraction)
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


# ---------------------------------------------------------------------------
# The stage's run: what a resumed run must agree with, and its outputs
# ---------------------------------------------------------------------------


def run_components(params: Mapping[str, Any], tok_dir: Path, data_dir: Path, shards: Sequence[Path], init_from: Path | None, world_size: int) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed: params, tokenizer and shard contents, world size, versions, code."""
    import transformers

    return {
        "params": dict(params),
        "tokenizer": files_identity(tok_dir),
        "shards": files_identity(data_dir, shards),
        "init_from": files_identity(init_from) if init_from else None,
        "world_size": world_size,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "code": code_identity(__file__),
    }


def final_evaluation(setup: PretrainSetup) -> dict[str, float]:
    """The held-out figures at the last step: the Trainer's own when it evaluated there, else a new evaluation (all ranks)."""
    if setup.eval_dataset is None:
        return {}
    state = setup.trainer.state
    done = [e for e in state.log_history if "eval_masked_token_accuracy" in e and e.get("step") == state.global_step]
    return done[-1] if done else setup.trainer.evaluate()


def final_metrics(setup: PretrainSetup, final_eval: Mapping[str, float]) -> dict[str, Any]:
    """The DVC metrics: what the run computed, never how it went (tokens/s, MFU, seconds and whether it
    resumed go to MLflow only, so a resumed or redone run leaves dvc.lock unchanged)."""
    state, info = setup.trainer.state, setup.model_info
    train_losses = [e["loss"] for e in state.log_history if "loss" in e]
    metrics = {
        "global_step": state.global_step,
        "train_loss_last": train_losses[-1] if train_losses else None,
        "tokens_seen": state.num_input_tokens_seen,
        "parameters": info["parameters"],
        "vocab_size": info["vocab_size"],
        "capacity_ok": int(info["capacity"].ok),
        "capacity_floor": round(info["capacity"].floor, 2),
        "train_rows": len(setup.train_dataset),
    }
    if final_eval:
        metrics["masked_token_accuracy"] = final_eval["eval_masked_token_accuracy"]
        metrics["eval_loss"] = final_eval["eval_loss"]
        metrics["heldout_rows"] = len(setup.eval_dataset)
    return {k: v for k, v in metrics.items() if v is not None}


def save_backbone(setup: PretrainSetup, out_dir: Path, tok_dir: Path) -> None:
    """Weights (safetensors), config and tokenizer, with the tokenizer's ``zhnlp_tokenizer.json`` (its mode).

    No training_args.bin, whose absolute paths would make the output differ from one checkout to the next.
    """
    if out_dir.exists():
        shutil.rmtree(out_dir)
    setup.trainer.model.save_pretrained(str(out_dir))
    load_tokenizer(tok_dir).save(out_dir)  # the tokenizer files and zhnlp_tokenizer.json, through their one writer
