"""Fine-tuning a BERT generation head (UniLM seq2seq or causal dialogue LM) with the HF Trainer.

:class:`GenerationTrainer` computes the masked next-token loss on the target positions only;
:func:`train_head` runs it with this package's pieces: :func:`~zhnlp.train.arguments.training_arguments`
(gloo DDP on CPU under torchrun, bf16 only where CUDA supports it), the throughput callback, and
:func:`~zhnlp.train.resume.resume_or_train` (resume on a matching signature, skip damaged
checkpoints, load a finished run as it is).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer

from zhnlp.tasks.generation import Collator, Example, bert_lm_loss
from zhnlp.train.arguments import TrainingSettings, bar_without_log_lines, training_arguments
from zhnlp.train.callbacks import LossHistory, ThroughputCallback, loss_curve
from zhnlp.train.resume import code_identity, files_identity, resume_or_train


class GenerationTrainer(Trainer):
    """The HF Trainer with the masked next-token loss of a BERT head (``mask_kind``: unilm | causal).

    The loss is the mean over the batch's target tokens; the Trainer divides it for gradient
    accumulation (``loss_is_scaled_for_ga = False``).
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args, mask_kind: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_kind = mask_kind

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        wrapped = self.accelerator.unwrap_model(model) is not model  # DDP: go through forward()
        total, count = bert_lm_loss(model, inputs, self.mask_kind, selected_only=not wrapped)
        loss = total / count.clamp(min=1)
        return (loss, {"loss": loss}) if return_outputs else loss


@dataclass
class TrainResult:
    steps: int
    seconds: float  # wall time of trainer.train() in this process
    tokens: float  # non-pad training tokens of this process's steps, all ranks (ThroughputCallback)
    tokens_per_second: float | None
    train_loss: float  # the Trainer's mean over this process's steps
    tokens_seen: int  # non-pad training tokens of the whole run, resumed part included
    history: list[dict]  # [{step, loss}] over the whole run, resumed part included
    resumed_from: str | None
    resume_reason: str
    signature: str
    is_main_process: bool

    def summary(self) -> dict[str, Any]:
        """What the run computed, for metrics.json: the same figures whenever the same run is redone or resumed."""
        return {
            "steps": self.steps,
            "tokens_seen": self.tokens_seen,
            "final_logged_loss": self.history[-1]["loss"] if self.history else None,
            "signature": self.signature[:16],
        }

    def timings(self) -> dict[str, Any]:
        """How this process's run went (wall time, speed, whether it resumed): for MLflow only, never a
        DVC-tracked file, so redoing or resuming the same run leaves dvc.lock as it was."""
        return {
            "resumed": int(self.resumed_from is not None),  # 0/1: MLflow metrics are numbers
            "seconds": self.seconds,
            "tokens": self.tokens,
            "tokens_per_second": self.tokens_per_second,
            "train_loss": self.train_loss if math.isfinite(self.train_loss) else None,
        }


def examples_digest(examples: Iterable[Example]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.input_ids, e.token_type_ids, e.labels]).encode())
    return digest.hexdigest()


def training_components(
    task: str, config: TrainingSettings, settings: Mapping[str, Any], backbone_dir: str | Path, examples: Sequence[Example], code: Iterable[Path]
) -> dict[str, Any]:
    """Everything a checkpoint must agree with to be resumed: params, backbone files, training data, code, versions."""
    import transformers

    from zhnlp.tasks import generation

    return {
        "task": task,
        "train": config.identity(),
        "settings": dict(settings),
        "backbone": files_identity(backbone_dir),
        "examples": examples_digest(examples),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "code": code_identity(generation.__file__, *code),
    }


def train_head(
    model,
    examples: Sequence[Example],
    *,
    mask_kind: str,
    pad_id: int,
    config: TrainingSettings,
    checkpoints_dir: str | Path,
    components: Mapping[str, Any],
    on_log: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Fine-tune a BERT head with the HF Trainer: AdamW, linear warmup/decay, seeded, bf16 on a capable GPU.

    ``checkpoints_dir`` holds ``checkpoint-<step>`` folders (every ``save_steps``) and the run
    signature of ``components``; a usable checkpoint with the same signature is resumed (weights,
    optimizer, scheduler, RNG, data position), any other content is wiped. ``is_main_process``
    tells the caller whether to write outputs.
    """
    args = training_arguments(config, checkpoints_dir)
    throughput = ThroughputCallback(world_size=args.world_size)
    trainer = GenerationTrainer(
        model=model,
        args=args,
        train_dataset=list(examples),
        data_collator=Collator(pad_id),
        callbacks=[throughput, LossHistory(on_log)],
        mask_kind=mask_kind,
    )
    trainer.remove_callback(PrinterCallback)  # logs reach on_log instead of being printed as dicts
    bar_without_log_lines(trainer)  # ... and not above the progress bar either
    run = resume_or_train(trainer, components)
    model.eval()
    summary = throughput.summary()
    return TrainResult(
        steps=int(trainer.state.global_step),
        seconds=run.seconds,
        tokens=summary["train_tokens"],
        tokens_per_second=summary["tokens_per_second"],
        train_loss=run.training_loss,
        tokens_seen=int(trainer.state.num_input_tokens_seen),
        history=loss_curve(trainer.state.log_history),
        resumed_from=str(run.decision.checkpoint) if run.decision.resumed else None,
        resume_reason=run.reason,
        signature=run.signature,
        is_main_process=run.is_main_process,
    )


def compare_with_untrained(
    trained,
    load_untrained: Callable[[], Any],
    eval_splits: Mapping[str, Any],
    evaluate: Callable[[Any, Any], tuple[dict, Any]],
) -> tuple[dict, dict, dict]:
    """Evaluate the trained head and a freshly loaded untrained one on every split.

    ``evaluate(model, split_rows) -> (figures, outputs)``. Returns ``(metrics, outputs, timings)``,
    each ``{"trained"|"untrained": {split: ...}}``; the wall-clock ``*per_second`` figures move from
    metrics to timings (MLflow only, never a DVC-tracked metrics file).
    """
    metrics: dict[str, dict] = {"trained": {}, "untrained": {}}
    outputs: dict[str, dict] = {"trained": {}, "untrained": {}}
    for kind in ("trained", "untrained"):
        model = trained if kind == "trained" else load_untrained()
        for split, rows in eval_splits.items():
            metrics[kind][split], outputs[kind][split] = evaluate(model, rows)
        del model
    timings = {
        kind: {split: {k: figures.pop(k) for k in [k for k in figures if "per_second" in k]} for split, figures in per_split.items()}
        for kind, per_split in metrics.items()
    }
    return metrics, outputs, timings
