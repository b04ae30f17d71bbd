"""finetune_lccc: DialoGPT-style LM over LCCC dialogues on a pretrained BERT backbone (causal mask).

Reads params ``finetune_lccc`` (``backbone``: a model folder, ``models/pretrain/<name>`` or a
local checkpoint such as ``checkpoints/<name>``; a bare name means ``models/pretrain/<name>``; ``loss_on``: all_turns | last_response; ``sampling``), the backbone and
``data/prepared/lccc/{train,valid,test}.parquet``. Writes:

- ``models/finetune_lccc/``: safetensors weights, tokenizer, ``zhnlp_generation.json`` (read by
  ``python -m stages.chat``);
- ``models/finetune_lccc-checkpoints/``: Trainer checkpoints, resumed when the run signature
  matches (DVC ``persist``);
- ``reports/finetune_lccc/metrics.json``: response perplexity, character BLEU-2/4 (0-100) and
  distinct-1/2 (0-1) on valid and test, for the trained model and the untrained backbone
  (replies per second and training time go to MLflow only, under ``timing.``);
- ``reports/finetune_lccc/loss.json``: the training loss curve;
- ``reports/finetune_lccc/samples.md``: sampled replies next to the references (also in MLflow).

Under ``torchrun`` only rank 0 opens the MLflow run and writes outputs.
"""

from __future__ import annotations

import os
import shutil
from contextlib import nullcontext

from stages.common import ROOT, StageRun, fail, resolve, run, setup_env, stage_params, write_json

setup_env()  # offline, quiet, project-local HF home: before transformers is imported

import pyarrow.parquet as pq  # noqa: E402

from zhnlp.config import check_name, from_params  # noqa: E402
from zhnlp.data.split_carving import missing_splits_message  # noqa: E402
from zhnlp.models.checkpoint import inspect_checkpoint, mlm_head_warning  # noqa: E402
from zhnlp.tasks.dialogue import DialogueSettings, finetune, samples_markdown  # noqa: E402
from zhnlp.tasks.generation import save_head  # noqa: E402
from zhnlp.progress import write as progress_write  # noqa: E402

STAGE = "finetune_lccc"
SPLITS = ("train", "valid", "test")


def backbone_dir(name: str):
    """``models/pretrain/<name>``, or ``name`` itself when it is a path (runs by hand, tests)."""
    return resolve(name) if "/" in name or os.sep in name else ROOT / "models" / "pretrain" / check_name(f"{STAGE}.backbone", name)


def say(message: str) -> None:
    progress_write(f"[{STAGE}] {message}")  # above an open progress bar, not glued to it


def main() -> None:
    params = stage_params(STAGE)[STAGE]
    settings = from_params(DialogueSettings, params, STAGE)  # strict: an unknown or mistyped key is a one-line error
    backbone = backbone_dir(settings.backbone)
    if not (backbone / "config.json").is_file():
        fail(f"{STAGE}.backbone: no model at {backbone} (no config.json); a pretrained backbone needs `dvc repro pretrain@{backbone.name}`")
    checkpoint = inspect_checkpoint(backbone)  # model type, safetensors weights, tokenizer and MLM head, checked
    if warning := mlm_head_warning(checkpoint, "causal LM"):
        say(f"warning: {warning}")
    data_dir = ROOT / "data" / "prepared" / "lccc"
    if problem := missing_splits_message(data_dir, SPLITS, "lccc", STAGE):
        fail(problem)
    rows = {s: pq.read_table(data_dir / f"{s}.parquet").to_pylist() for s in SPLITS}
    model_dir = ROOT / "models" / STAGE
    report_dir = ROOT / "reports" / STAGE

    is_main = int(os.environ.get("RANK", "0")) == 0
    with StageRun(STAGE, params | {"checkpoint": checkpoint.summary()}, model=backbone.name, task="lccc", backbone=backbone.name, recipe=f"dialogpt-{settings.loss_on}") if is_main else nullcontext() as tracker:

        def on_log(row: dict) -> None:
            say(f"step {row['step']}: loss {row['loss']:.4f}")
            tracker.log_metrics({"train/" + k: v for k, v in row.items() if k != "step"}, step=row["step"])

        say(f"backbone {backbone}; train {len(rows['train'])}, valid {len(rows['valid'])}, test {len(rows['test'])} dialogues; loss on {settings.loss_on}")
        result = finetune(
            settings,
            backbone,
            rows["train"],
            {"valid": rows["valid"], "test": rows["test"]},
            ROOT / "models" / f"{STAGE}-checkpoints",
            on_log=on_log if is_main else None,
        )
        if result is None:  # not rank 0
            return
        say(result.train.resume_reason)

        if model_dir.exists():
            shutil.rmtree(model_dir)
        save_head(model_dir, result.model, result.codec, {
            "task": "lccc",
            "head": "dialogue-lm",
            "mask": "causal",
            "backbone": settings.backbone,
            "max_seq_len": settings.max_seq_len,
            "loss_on": settings.loss_on,
            "sampling": settings.sampling.__dict__,
            "eos_token": "[SEP]",
        })
        metrics = {"model": backbone.name, "backbone": settings.backbone, "backbone_mlm_head": checkpoint.mlm_head} | result.metrics  # model: the leaderboard row
        samples = samples_markdown(
            result.replies["valid"], result.untrained_replies["valid"], settings.sampling.samples, settings.sampling,
            f"finetune_lccc: sample replies (valid, backbone {settings.backbone}, loss on {settings.loss_on})",
        )
        write_json(report_dir / "metrics.json", metrics)
        write_json(report_dir / "loss.json", result.train.history)
        (report_dir / "samples.md").write_text(samples + "\n", encoding="utf-8")
        tracker.log_metrics(metrics)
        tracker.log_metrics({"timing": result.timings})  # wall-clock figures: MLflow only, never a DVC-tracked file
        tracker.log_artifact(report_dir / "metrics.json")
        tracker.log_artifact(report_dir / "loss.json")
        tracker.log_text(samples, "samples.md")
        print(summary_table(result.metrics, result.timings))


def summary_table(metrics: dict, timings: dict) -> str:
    head = ["split", "model", "ppl", "BLEU-2", "BLEU-4", "dist-1", "dist-2", "replies/s"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for split in metrics["trained"]:
        for model in ("untrained", "trained"):
            m = metrics[model][split]
            lines.append(" | ".join([
                split, model, f"{m['perplexity']:.2f}", f"{m['bleu2']:.2f}", f"{m['bleu4']:.2f}",
                f"{m['distinct1']:.3f}", f"{m['distinct2']:.3f}", f"{timings[model][split]['replies_per_second']:.1f}",
            ]))
    return "\n".join(lines)


if __name__ == "__main__":
    run(main)
