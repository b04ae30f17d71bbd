"""Strict training params -> ``transformers.TrainingArguments``: one dataclass of shared keys, one function.

Every params section that trains (``pretrain.training``, ``finetune.recipes.<name>``, ``finetune_ape210k``,
``finetune_lccc``) is a dataclass that extends :class:`TrainingSettings` with its own keys, and is
built with :func:`zhnlp.config.from_params`: an unknown key (``lerning_rate``), a wrong type or an
out-of-range value is a one-line :class:`zhnlp.config.ConfigError`. :func:`training_arguments` is
the only place those settings become ``TrainingArguments``; callers add only what is not a param
(where to log, how often to evaluate, which checkpoint to keep).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from zhnlp.config import ConfigError, in_range
from zhnlp.progress import enabled as progress_enabled

if TYPE_CHECKING:
    from transformers import TrainingArguments

# Keys that change how often the run logs or saves, or how fast it goes, but not the weights it ends with.
NOT_IDENTITY = frozenset({"save_steps", "logging_steps", "dataloader_num_workers", "per_device_eval_batch_size"})


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """The Trainer keys every training params section shares (subclasses add their own, or change defaults).

    AdamW (torch, decoupled weight decay), ``warmup_ratio`` of the steps warming up then linear
    decay; ``max_steps > 0`` overrides ``num_train_epochs``.
    """

    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int | None = None  # None: the train batch size
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 42
    save_steps: int = 100
    logging_steps: int = 10
    dataloader_num_workers: int = 0  # used on CUDA only (CPU runs load in the main process)

    def validate(self, where: str) -> None:
        in_range(f"{where}.warmup_ratio", self.warmup_ratio, 0.0, 1.0, high_open=True)
        in_range(f"{where}.adam_beta1", self.adam_beta1, 0.0, 1.0, high_open=True)
        in_range(f"{where}.adam_beta2", self.adam_beta2, 0.0, 1.0, high_open=True)
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "save_steps", "logging_steps"):
            _positive(where, key, getattr(self, key))
        if self.per_device_eval_batch_size is not None:
            _positive(where, "per_device_eval_batch_size", self.per_device_eval_batch_size)
        for key in ("learning_rate", "num_train_epochs", "adam_epsilon", "max_grad_norm"):
            _positive(where, key, getattr(self, key))
        for key in ("weight_decay", "dataloader_num_workers"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{where}.{key}: {getattr(self, key)!r} is not allowed; use a number >= 0")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"{where}.max_steps: {self.max_steps!r} is not allowed; use a positive number, or -1 for num_train_epochs")

    def identity(self) -> dict[str, Any]:
        """The shared keys that decide the trained weights (not how often the run logs or saves)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainingSettings) if f.name not in NOT_IDENTITY}


def _positive(where: str, key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{where}.{key}: {value!r} is not allowed; use a number > 0")


def cuda_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def training_arguments(
    settings: TrainingSettings,
    output_dir: str | Path,
    *,
    report_to: Sequence[str] = (),
    run_name: str | None = None,
    schedule: Literal["steps", "epoch"] = "steps",
    evaluate: bool = False,
    **extra: Any,
) -> TrainingArguments:
    """``TrainingArguments`` from training settings: the one params -> Trainer path.

    bf16 only where CUDA supports it (else fp32), CPU when there is no CUDA (gloo for several
    processes under torchrun), checkpoints every ``save_steps`` (or every epoch with
    ``schedule="epoch"``, where logging and evaluation follow the epochs too), two kept.
    ``extra`` is for what does not come from params (``eval_steps``, ``load_best_model_at_end``...).
    torch and transformers are imported here, so that the settings classes stay light to import.
    """
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    workers = settings.dataloader_num_workers if cuda else 0
    strategy = "epoch" if schedule == "epoch" else "steps"
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=settings.max_steps,
        num_train_epochs=settings.num_train_epochs,
        per_device_train_batch_size=settings.per_device_train_batch_size,
        per_device_eval_batch_size=settings.per_device_eval_batch_size or settings.per_device_train_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        lr_scheduler_type="linear",
        optim="adamw_torch",
        adam_beta1=settings.adam_beta1,
        adam_beta2=settings.adam_beta2,
        adam_epsilon=settings.adam_epsilon,
        max_grad_norm=settings.max_grad_norm,
        bf16=cuda_bf16(),
        seed=settings.seed,
        data_seed=settings.seed,
        save_strategy=strategy,
        save_steps=settings.save_steps,
        save_total_limit=2,
        logging_strategy=strategy,
        logging_steps=settings.logging_steps,
        eval_strategy=strategy if evaluate else "no",
        report_to=list(report_to),
        run_name=run_name,
        use_cpu=not cuda,
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,
        dataloader_pin_memory=cuda,
        remove_unused_columns=False,  # collators may need columns the model does not take (word_ids, key)
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=not progress_enabled(),  # the Trainer's bar (and its log lines written above it) or its plain log prints
        ddp_backend=None if cuda or world_size <= 1 else "gloo",
        ddp_find_unused_parameters=False,  # our models give every parameter a gradient
    )
    kwargs.update(extra)
    return TrainingArguments(**kwargs)


def bar_without_log_lines(trainer) -> None:
    """Keep the Trainer's progress bar but not the log dicts it writes above it.

    With the bar on (:func:`zhnlp.progress.enabled`) the Trainer adds ``ProgressCallback``, which
    writes every log as a dict; with it off, ``PrinterCallback``, which prints them. A caller that
    prints its own log lines removes ``PrinterCallback`` and calls this, so no log is shown twice.
    """
    from transformers import ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnly)
