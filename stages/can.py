"""can@<task>: CAN over every model's CLUE probabilities for one task.

Reads data/predictions/clue/<task>/<model>/{dev,test_public}.parquet and meta.json; writes
data/predictions_can/clue/<task>/<model>/ (same schema, zhnlp.tasks.predictions; pred_id follows the
adjusted probs; plus meta.json), the metrics
reports/can/<task>.json ({model: {split: {...}}}) and the reliability-diagram data
reports/can/<task>_reliability.json (reported split: test_public when present, else dev).
CAN applies to classification only: for another task kind the report says so (``applicable: false``).
The prior is the class frequency of the training labels (meta.json train_label_counts);
when a class has no training example every count gets +1 (Laplace) and the report says so.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from stages.common import ROOT, StageRun, run, stage_item, stage_params, write_json
from zhnlp.tasks.can import CanConfig, can_apply
from zhnlp.tasks.can_report import summarize
from zhnlp.config import from_params
from zhnlp.metrics import macro_f1, metric_key, plot_reliability, reliability_bins
from zhnlp.tasks.predictions import PredictionError, load_predictions, read_meta, replace_probs, training_prior

SPLITS = ("dev", "test_public")
N_BINS = 10


def process_model(model_dir: Path, out_dir: Path, cfg: CanConfig) -> tuple[dict, list[dict], dict]:
    """CAN for one model's splits: (metrics per split, reliability rows, reliability curves per split)."""
    meta = read_meta(model_dir)
    m = len(meta["labels"])
    prior, smoothed = training_prior(meta, m)
    splits = [s for s in SPLITS if (model_dir / f"{s}.parquet").is_file()]
    if "dev" not in splits:
        raise PredictionError(f"{model_dir}: no dev.parquet")
    reported = "test_public" if "test_public" in splits else "dev"
    metrics, rel_rows, curves = {}, [], {}
    k = min(cfg.k, m)  # top-k entropy needs k <= classes: binary tasks use k = 2
    for split in splits:
        path = model_dir / f"{split}.parquet"
        table, y, probs = load_predictions(path, m)
        try:
            res = can_apply(probs, prior, k=k, tau=cfg.tau, alpha=cfg.alpha, iters=cfg.iters)
        except ValueError as err:
            raise PredictionError(f"{path}: {err}") from err
        replace_probs(table, res.probs, out_dir / f"{split}.parquet")
        rel_b = reliability_bins(probs, y, N_BINS)
        rel_a = reliability_bins(res.probs, y, N_BINS)
        metrics[split] = summarize(probs, res.probs, res.uncertain, y) | {
            "k": k,
            "macro_f1_before": macro_f1(y, probs.argmax(axis=1)),
            "macro_f1_after": macro_f1(y, res.probs.argmax(axis=1)),
            "ece_before": rel_b["ece"],
            "ece_after": rel_a["ece"],
            "reference_identity": res.reference == "identity",
            "prior_smoothed": smoothed,
            "reported": split == reported,
        }
        if split == reported:
            for when, rel in (("before", rel_b), ("after", rel_a)):
                rel_rows += [
                    {"model": model_dir.name, "split": split, "when": when} | {k: b[k] for k in ("confidence", "accuracy", "count")}
                    for b in rel["bins"]
                    if b["count"]
                ]
            curves[split] = {"before": rel_b, "after": rel_a}
    write_json(out_dir / "meta.json", meta | {"can": asdict(cfg), "prior": prior.tolist(), "prior_smoothed": smoothed})
    return metrics, rel_rows, curves


def run_task(pred_dir: Path, out_dir: Path, cfg: CanConfig) -> tuple[dict, list[dict], dict]:
    """Every model under ``pred_dir``: ({model: {split: metrics}}, reliability rows, {model: curves})."""
    if not pred_dir.is_dir():
        raise PredictionError(f"{pred_dir}: no predictions (run the finetuning stages first)")
    models = sorted(d for d in pred_dir.iterdir() if d.is_dir())
    if not models:
        raise PredictionError(f"{pred_dir}: no model directories")
    if out_dir.exists():
        shutil.rmtree(out_dir)  # no stale models from an earlier run
    metrics, rel_rows, curves = {}, [], {}
    for model_dir in models:
        metrics[model_dir.name], rows, curves[model_dir.name] = process_model(model_dir, out_dir / model_dir.name, cfg)
        rel_rows += rows
    return metrics, rel_rows, curves


def summary_markdown(task: str, metrics: dict) -> str:
    lines = [f"# CAN on {task}", "", "| model | split | rows | uncertain | acc before | acc after | acc confident | acc uncertain before → after | ECE before → after |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def pct(v):
        return "–" if v is None else f"{100 * v:.2f}"

    for model, splits in metrics.items():
        for split, r in splits.items():
            lines.append(
                f"| {model} | {split} | {r['rows']} | {r['uncertain_rows']} | {pct(r['accuracy_before'])} | {pct(r['accuracy_after'])} | "
                f"{pct(r['accuracy_confident'])} | {pct(r['accuracy_uncertain_before'])} → {pct(r['accuracy_uncertain_after'])} | "
                f"{r['ece_before']:.3f} → {r['ece_after']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def _task_kind(pred_dir: Path) -> str:
    """The task kind the models' meta.json files name (``task_kind``; classification when absent)."""
    kinds = {json.loads(p.read_text(encoding="utf-8")).get("task_kind", "classification") for p in sorted(pred_dir.glob("*/meta.json"))}
    if len(kinds) > 1:
        raise PredictionError(f"{pred_dir}: models disagree on the task kind ({', '.join(sorted(kinds))}); rerun the finetune stages")
    return kinds.pop() if kinds else "classification"


def main() -> None:
    task = stage_item("can", "clue.tasks")
    params = stage_params("can")
    cfg = from_params(CanConfig, params["can"], "can")
    pred_dir = ROOT / "data" / "predictions" / "clue" / task
    out_dir = ROOT / "data" / "predictions_can" / "clue" / task
    report_dir = ROOT / "reports" / "can"

    with StageRun(f"can@{task}", params) as tracking:
        kind = _task_kind(pred_dir)
        if kind != "classification":  # nothing to re-normalise: the report says so, the leaderboard keeps the model's score
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir(parents=True)
            reason = (f"CAN applies to classification only (it re-normalises class probabilities); {task} is a {kind} task, "
                      "so the leaderboard's +CAN rows repeat the model's scores on it")
            write_json(report_dir / f"{task}.json", {"applicable": False, "task_kind": kind, "reason": reason})
            write_json(report_dir / f"{task}_reliability.json", [])
            tracking.log_text(f"# CAN on {task}\n\n{reason}.\n", "can_report.md")
            print(f"can@{task}: {reason}")
            return
        metrics, rel_rows, curves = run_task(pred_dir, out_dir, cfg)
        write_json(report_dir / f"{task}.json", metrics)
        write_json(report_dir / f"{task}_reliability.json", rel_rows)
        tracking.log_metrics({metric_key(model): splits for model, splits in metrics.items()})
        report = summary_markdown(task, metrics)
        tracking.log_text(report, "can_report.md")
        with tempfile.TemporaryDirectory() as tmp:
            for model, per_split in curves.items():
                for split, pair in per_split.items():
                    png = Path(tmp) / f"reliability_{task}_{model}_{split}.png"
                    plot_reliability(pair, png, title=f"{task} / {model} / {split}: before vs after CAN")
                    tracking.log_artifact(png, "reliability")
        print(report)


if __name__ == "__main__":
    run(main)
