"""finetune_ape210k: UniLM seq2seq (question -> equation) on a pretrained BERT backbone; beam-search accuracy.

Reads params ``finetune_ape210k`` (``backbone``: a model folder, ``models/pretrain/<name>`` or a
local checkpoint such as ``checkpoints/<name>``; a bare name means ``models/pretrain/<name>``), the backbone and
``data/prepared/ape210k/{train,valid,test}.parquet``. Writes:

- ``models/finetune_ape210k/``: safetensors weights, tokenizer, ``zhnlp_generation.json``;
- ``models/finetune_ape210k-checkpoints/``: Trainer checkpoints every ``save_steps``, resumed
  when the run signature (params, backbone, data, code, versions) matches (DVC ``persist``);
- ``data/predictions/ape210k/{valid,test}.parquet``: id, question, gold_equation, answer,
  pred_beam<k>, correct_beam<k> for every beam size in ``beams``;
- ``reports/finetune_ape210k/metrics.json``: accuracy / invalid-expression rate per beam size and
  the loss, for the trained model and the untrained backbone (problems per second and training
  time go to MLflow only, under ``timing.``);
- ``reports/finetune_ape210k/loss.json``: the training loss curve.

Under ``torchrun`` only rank 0 opens the MLflow run and writes outputs.
"""

from __future__ import annotations

import os
import shutil
from contextlib import nullcontext

from stages.common import ROOT, StageRun, fail, resolve, run, setup_env, stage_params, write_json

setup_env()  # offline, quiet, project-local HF home: before transformers is imported

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from zhnlp.tasks.generation import save_head  # noqa: E402
from zhnlp.config import check_name, from_params  # noqa: E402
from zhnlp.data.split_carving import missing_splits_message  # noqa: E402
from zhnlp.models.checkpoint import inspect_checkpoint, mlm_head_warning  # noqa: E402
from zhnlp.tasks.seq2seq import ApeSettings, finetune  # noqa: E402
from zhnlp.progress import write as progress_write  # noqa: E402

STAGE = "finetune_ape210k"
SPLITS = ("train", "valid", "test")


def backbone_dir(name: str):
    """``models/pretrain/<name>``, or ``name`` itself when it is a path (runs by hand, tests)."""
    return resolve(name) if "/" in name or os.sep in name else ROOT / "models" / "pretrain" / check_name(f"{STAGE}.backbone", name)


def say(message: str) -> None:
    progress_write(f"[{STAGE}] {message}")  # above an open progress bar, not glued to it


def main() -> None:
    params = stage_params(STAGE)[STAGE]
    settings = from_params(ApeSettings, params, STAGE)  # strict: an unknown or mistyped key is a one-line error
    backbone = backbone_dir(settings.backbone)
    if not (backbone / "config.json").is_file():
        fail(f"{STAGE}.backbone: no model at {backbone} (no config.json); a pretrained backbone needs `dvc repro pretrain@{backbone.name}`")
    checkpoint = inspect_checkpoint(backbone)  # model type, safetensors weights, tokenizer and MLM head, checked
    if warning := mlm_head_warning(checkpoint, "UniLM seq2seq"):
        say(f"warning: {warning}")
    data_dir = ROOT / "data" / "prepared" / "ape210k"
    if problem := missing_splits_message(data_dir, SPLITS, "ape210k", STAGE):
        fail(problem)
    rows = {s: pq.read_table(data_dir / f"{s}.parquet").to_pylist() for s in SPLITS}
    model_dir = ROOT / "models" / STAGE
    report_dir = ROOT / "reports" / STAGE
    pred_dir = ROOT / "data" / "predictions" / "ape210k"

    is_main = int(os.environ.get("RANK", "0")) == 0
    with StageRun(STAGE, params | {"checkpoint": checkpoint.summary()}, model=backbone.name, task="ape210k", backbone=backbone.name, recipe="unilm-seq2seq") if is_main else nullcontext() as tracker:

        def on_log(row: dict) -> None:
            say(f"step {row['step']}: loss {row['loss']:.4f}")
            tracker.log_metrics({"train/" + k: v for k, v in row.items() if k != "step"}, step=row["step"])

        say(f"backbone {backbone}; train {len(rows['train'])}, valid {len(rows['valid'])}, test {len(rows['test'])} problems")
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
            "task": "ape210k",
            "head": "unilm-seq2seq",
            "mask": "unilm",
            "backbone": settings.backbone,
            "max_source_len": settings.max_source_len,
            "max_target_len": settings.max_target_len,
            "eos_token": "[SEP]",
        })
        for split, columns in result.predictions.items():
            path = pred_dir / f"{split}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(predictions_table(columns, settings.beams), path)

        metrics = {"model": backbone.name, "backbone": settings.backbone, "backbone_mlm_head": checkpoint.mlm_head} | result.metrics  # model: the leaderboard row
        write_json(report_dir / "metrics.json", metrics)
        write_json(report_dir / "loss.json", result.train.history)
        tracker.log_metrics(metrics)
        tracker.log_metrics({"timing": result.timings})  # wall-clock figures: MLflow only, never a DVC-tracked file
        tracker.log_artifact(report_dir / "metrics.json")
        tracker.log_artifact(report_dir / "loss.json")
        for split in result.predictions:
            tracker.log_artifact(pred_dir / f"{split}.parquet", "predictions")
        print(summary_table(result.metrics, result.timings, settings.beams))


def predictions_table(columns: dict[str, list], beams: list[int]) -> pa.Table:
    fields = [pa.field(name, pa.string(), nullable=False) for name in ("id", "question", "gold_equation", "answer")]
    fields += [pa.field(f"pred_beam{k}", pa.string(), nullable=False) for k in beams]
    fields += [pa.field(f"correct_beam{k}", pa.bool_(), nullable=False) for k in beams]
    schema = pa.schema(fields)
    return pa.table({f.name: columns[f.name] for f in fields}, schema=schema)


def summary_table(metrics: dict, timings: dict, beams: list[int]) -> str:
    head = ["split", "model", "loss", *(f"acc@{k}" for k in beams), *(f"invalid@{k}" for k in beams), *(f"problems/s@{k}" for k in beams)]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for split in metrics["trained"]:
        for model in ("untrained", "trained"):
            m = metrics[model][split]
            cells = [split, model, f"{m['loss']:.3f}"]
            cells += [f"{m[f'accuracy_beam{k}']:.2%}" for k in beams]
            cells += [f"{m[f'invalid_rate_beam{k}']:.2%}" for k in beams]
            cells += [f"{timings[model][split][f'problems_per_second_beam{k}']:.1f}" for k in beams]
            lines.append(" | ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    run(main)
