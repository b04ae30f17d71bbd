"""Finetuning by epochs with the HF Trainer: evaluate on dev every epoch, keep the best epoch, stop early.

Every CLUE head (classification, span extraction, multiple choice, idiom cloze, NER) trains the same
way, as the published baselines do: AdamW, a dev evaluation after each epoch, the best dev epoch's
weights kept (``load_best_model_at_end``), optional ``EarlyStoppingCallback``. :func:`fit_by_epoch`
is that loop, once. A head supplies its model, datasets, collator and a ``compute_metrics`` whose
result holds ``metric`` (the dev score that picks the epoch); the ``TrainingArguments`` come from
:func:`zhnlp.train.arguments.training_arguments`, as for every other training stage.

A head whose dev score needs more than the Trainer's logits (span extraction decodes answers
across windows, idiom cloze assigns candidates per passage) passes ``evaluate_fn``: it is called
with the model after each epoch and returns the metrics, and the best epoch's weights are kept in
memory (a copy of the state dict), not through the Trainer's checkpoint metric.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhnlp.train.arguments import TrainingSettings, training_arguments

# What the Trainer's evaluation logs besides the head's own metrics.
_TRAINER_EVAL_KEYS = frozenset({"loss", "runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time"})


@dataclass
class FitSummary:
    """What a finetune did: one history entry per evaluated epoch, and the kept (best) epoch."""

    best_epoch: int
    epochs_run: int
    best_dev_score: float
    train_seconds: float
    metric: str = "accuracy"
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def best_dev_accuracy(self) -> float:  # the classification name of the dev score
        return self.best_dev_score

    def metrics(self) -> dict[str, float | int | str]:
        """What training found, for the DVC metrics (its wall time, ``train_seconds``, goes to MLflow only)."""
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            f"best_dev_{self.metric}": self.best_dev_score,
        }


def fit_by_epoch(
    model,
    *,
    train_dataset,
    dev_dataset=None,
    collator,
    tokenizer,
    cfg: TrainingSettings,
    metric: str,
    compute_metrics: Callable[[Any], Mapping[str, float]] | None = None,
    evaluate_fn: Callable[[Any], Mapping[str, float]] | None = None,
    early_stopping_patience: int | None = None,
    full_determinism: bool = False,
    log_fn: Callable[[dict[str, float], int], None] | None = None,
    work_dir: str | Path | None = None,
) -> tuple[Any, FitSummary]:
    """Train ``model`` for ``cfg.num_train_epochs`` epochs (or ``cfg.max_steps``); return (best model, summary).

    Exactly one of ``compute_metrics`` (Trainer evaluation on ``dev_dataset``) and ``evaluate_fn``
    (called with the model after each epoch) gives the dev metrics; ``metric`` names the one that picks
    the epoch (higher is better). ``log_fn(metrics, epoch)`` gets ``epoch.train.loss`` and ``epoch.dev.<name>``.
    """
    from transformers import EarlyStoppingCallback, Trainer, TrainerCallback

    if (compute_metrics is None) == (evaluate_fn is None):
        raise ValueError("pass exactly one of compute_metrics and evaluate_fn")
    history: dict[int, dict[str, float]] = {}
    best: dict[str, Any] = {"score": -math.inf, "state": None, "epoch": 0}

    def record(state, dev: Mapping[str, float]) -> dict[str, float]:
        epoch = int(math.ceil((state.epoch or 0) - 1e-9))
        entry = history.setdefault(epoch, {"epoch": epoch})
        entry.update({f"dev.{k}": float(v) for k, v in dev.items() if isinstance(v, (int, float))})
        entry["step"] = state.global_step
        if log_fn:
            log_fn({f"epoch.{k}": v for k, v in entry.items() if k not in ("epoch", "step")}, epoch)
        return entry

    own = evaluate_fn is not None
    bad_epochs = [0]

    def own_evaluation(state, model) -> None:
        """Dev metrics from ``evaluate_fn``; the best weights kept in memory; early stopping."""
        was_training = model.training
        model.eval()
        dev = dict(evaluate_fn(model))
        model.train(was_training)
        entry = record(state, dev)
        if dev[metric] > best["score"]:
            best.update(score=dev[metric], epoch=entry["epoch"], state=copy.deepcopy(model.state_dict()))
            bad_epochs[0] = 0
        else:
            bad_epochs[0] += 1

    class _EpochLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, model=None, **kwargs):
            if not logs or state.epoch is None or "loss" not in logs:
                return
            epoch = int(math.ceil(state.epoch - 1e-9))
            history.setdefault(epoch, {"epoch": epoch})["train.loss"] = float(logs["loss"])
            if own:  # the epoch-end log: evaluate now, so the epoch's loss is logged with its dev scores
                own_evaluation(state, model)
                if early_stopping_patience and bad_epochs[0] >= early_stopping_patience:
                    control.should_training_stop = True

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics:
                record(state, {k[5:]: v for k, v in metrics.items() if k.startswith("eval_") and k[5:] not in _TRAINER_EVAL_KEYS})

    with tempfile.TemporaryDirectory(prefix="zhnlp-finetune-") as tmp:
        extra: dict[str, Any] = {"save_total_limit": 1, "save_only_model": True}
        if own:
            extra |= {"schedule": "epoch", "evaluate": False, "save_strategy": "no"}
        else:
            extra |= {"schedule": "epoch", "evaluate": True, "load_best_model_at_end": True,
                      "metric_for_best_model": metric, "greater_is_better": True}
        args = training_arguments(cfg, work_dir or tmp, full_determinism=full_determinism, **extra)
        callbacks: list = [_EpochLog()]
        if not own and early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience))
        trainer = Trainer(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=None if own else dev_dataset,
            processing_class=tokenizer,
            compute_metrics=None if own else (lambda pred: dict(compute_metrics(pred))),
            callbacks=callbacks,
        )
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
        model = trainer.model
        best_step = None if own else trainer.state.best_global_step
    if own and best["state"] is not None:
        model.load_state_dict(best["state"])
    key = f"dev.{metric}"
    evaluated = [h for _, h in sorted(history.items()) if key in h]
    if not evaluated:
        raise RuntimeError("training ran no evaluation (empty train set?)")
    if own:
        chosen = next(h for h in evaluated if h["epoch"] == best["epoch"])
    else:
        chosen = next((h for h in evaluated if h.get("step") == best_step), None) or max(evaluated, key=lambda h: h[key])
    return model, FitSummary(
        best_epoch=int(chosen["epoch"]),
        epochs_run=len(evaluated),
        best_dev_score=float(chosen[key]),
        train_seconds=seconds,
        metric=metric,
        history=evaluated,
    )
