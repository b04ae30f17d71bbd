"""can@<task>: CAN over every model's CLUE probabilities for one task.

Reads data/predictions/clue/<task>/<model>/{dev,test_public}.parquet and meta.json; writes
data/predictions_can/clue/<task>/<model>/ (same schema, zhnlp.tasks.predictions; pred_id follows the
adjusted probs; plus meta.json) with Su's fixed settings (can.k, tau, alpha, iters), the metrics
reports/can/<task>.json ({model: {split: {...}, "dev_selected": {...}}}), the report reports/can/<task>.md
and the reliability-diagram data reports/can/<task>_reliability.json (reported split: test_public when
present, else dev). Every split's metrics give the reference (confident rows) size and accuracy, flagged
below max(can.min_reference, can.min_reference_per_class × classes). With can.select_on_dev, τ and α are
also picked on dev over can.tau_grid × can.alpha_grid ("dev_selected": reported only, test_public is its
unbiased estimate). CAN applies to classification only: for another task kind the report says so
(``applicable: false``). The prior is the class frequency of the training labels (meta.json
train_label_counts); when a class has no training example every count gets +1 (Laplace) and the report says so.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from stages.common import ROOT, StageRun, run, stage_item, stage_params, write_json
from zhnlp.config import from_params
from zhnlp.metrics import metric_key, reliability_bins
from zhnlp.tasks.can_report import render_markdown, split_metrics
from zhnlp.tasks.reliability_chart import render_reliability
from zhnlp.tasks.can_select import SELECTED_BY, CanParams, dev_selected
from zhnlp.tasks.predictions import PredictionError, load_predictions, read_meta, replace_probs, training_prior

SPLITS = ("dev", "test_public")
N_BINS = 10


def process_model(model_dir: Path, out_dir: Path, cfg: CanParams) -> tuple[dict, list[dict], dict]:
    """CAN for one model's splits: ({split: metrics, "dev_selected": ...}, reliability rows, reliability curves per split)."""
    meta = read_meta(model_dir)
    m = len(meta["labels"])
    prior, smoothed = training_prior(meta, m)
    splits = [s for s in SPLITS if (model_dir / f"{s}.parquet").is_file()]
    if "dev" not in splits:
        raise PredictionError(f"{model_dir}: no dev.parquet")
    reported = "test_public" if "test_public" in splits else "dev"
    metrics, rel_rows, curves, loaded = {}, [], {}, {}
    k = min(cfg.k, m)  # top-k entropy needs k <= classes: binary tasks use k = 2
    for split in splits:
        path = model_dir / f"{split}.parquet"
        table, y, probs = load_predictions(path, m)
        loaded[split] = (probs, y)
        try:
            res, metrics[split] = split_metrics(probs, prior, y, k=k, tau=cfg.tau, alpha=cfg.alpha, iters=cfg.iters, min_rows=cfg.min_reference_rows(m))
        except ValueError as err:
            raise PredictionError(f"{path}: {err}") from err
        replace_probs(table, res.probs, out_dir / f"{split}.parquet")
        rel_b = reliability_bins(probs, y, N_BINS)
        rel_a = reliability_bins(res.probs, y, N_BINS)
        metrics[split] |= {"ece_before": rel_b["ece"], "ece_after": rel_a["ece"], "prior_smoothed": smoothed, "reported": split == reported}
        if split == reported:
            for when, rel in (("before", rel_b), ("after", rel_a)):
                rel_rows += [
                    {"model": model_dir.name, "split": split, "when": when} | {k: b[k] for k in ("confidence", "accuracy", "count")}
                    for b in rel["bins"]
                    if b["count"]
                ]
            curves[split] = {"before": rel_b, "after": rel_a}
    if cfg.select_on_dev:
        metrics["dev_selected"] = dev_selected(loaded, prior, cfg, k)
    write_json(out_dir / "meta.json", meta | {"can": asdict(cfg.fixed()), "prior": prior.tolist(), "prior_smoothed": smoothed})
    return metrics, rel_rows, curves


def run_task(pred_dir: Path, out_dir: Path, cfg: CanParams) -> tuple[dict, list[dict], dict]:
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


def _task_kind(pred_dir: Path) -> str:
    """The task kind the models' meta.json files name (``task_kind``; classification when absent)."""
    kinds = {json.loads(p.read_text(encoding="utf-8")).get("task_kind", "classification") for p in sorted(pred_dir.glob("*/meta.json"))}
    if len(kinds) > 1:
        raise PredictionError(f"{pred_dir}: models disagree on the task kind ({', '.join(sorted(kinds))}); rerun the finetune stages")
    return kinds.pop() if kinds else "classification"


def main() -> None:
    task = stage_item("can", "clue.tasks")
    params = stage_params("can")
    cfg = from_params(CanParams, params["can"], "can")
    pred_dir = ROOT / "data" / "predictions" / "clue" / task
    out_dir = ROOT / "data" / "predictions_can" / "clue" / task
    report_dir = ROOT / "reports" / "can"

    with StageRun(f"can@{task}", params, task=task) as tracking:
        kind = _task_kind(pred_dir)
        if kind != "classification":  # nothing to re-normalise: the report says so, the leaderboard keeps the model's score
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir(parents=True)
            reason = (f"CAN applies to classification only (it re-normalises class probabilities); {task} is a {kind} task, "
                      "so the leaderboard's +CAN rows repeat the model's scores on it")
            write_json(report_dir / f"{task}.json", {"applicable": False, "task_kind": kind, "reason": reason})
            write_json(report_dir / f"{task}_reliability.json", [])
            (report_dir / f"{task}.md").write_text(f"# CAN on {task}\n\n{reason}.\n", encoding="utf-8")
            render_reliability(task, {}, report_dir / f"{task}_reliability.png", note=f"CAN does not apply to {task} ({kind})")
            tracking.log_text(f"# CAN on {task}\n\n{reason}.\n", "can_report.md")
            print(f"can@{task}: {reason}")
            return
        metrics, rel_rows, curves = run_task(pred_dir, out_dir, cfg)
        write_json(report_dir / f"{task}.json", metrics)
        write_json(report_dir / f"{task}_reliability.json", rel_rows)
        tracking.log_metrics({metric_key(model): splits for model, splits in metrics.items()})
        selection = {"tau_grid": cfg.tau_grid, "alpha_grid": cfg.alpha_grid, "selected_by": SELECTED_BY} if cfg.select_on_dev else None
        report = render_markdown(task, metrics, asdict(cfg.fixed()), selection)
        (report_dir / f"{task}.md").write_text(report, encoding="utf-8")
        tracking.log_text(report, "can_report.md")
        render_reliability(task, curves, report_dir / f"{task}_reliability.png")
        tracking.log_image(report_dir / f"{task}_reliability.png", "reliability.png")
        print(report)


if __name__ == "__main__":
    run(main)
