"""can@<task>: CAN over every model's CLUE probabilities for one task.

Reads data/predictions/clue/<task>/<model>/{dev,test_public}.parquet and meta.json; writes
data/predictions_can/clue/<task>/<model>/ (same schema, plus meta.json), the metrics
reports/can/<task>.json ({model: {split: {...}}}) and the reliability-diagram data
reports/can/<task>_reliability.json (reported split: test_public when present, else dev).
The prior is the class frequency of the training labels (meta.json train_label_counts);
when a class has no training example every count gets +1 (Laplace) and the report says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.common import ROOT, StageRun, fail, stage_params, write_json
from zhnlp.can import can_apply, summarize
from zhnlp.metrics import macro_f1, plot_reliability, reliability_bins

SPLITS = ("dev", "test_public")
N_BINS = 10


class PredictionError(ValueError):
    """A predictions file or meta.json that does not follow the contract."""


def read_predictions(path: Path, n_classes: int) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """(table, label_id as int64, probs as N×m float64) from one predictions Parquet file."""
    table = pq.read_table(path)
    missing = [c for c in ("id", "label_id", "probs") if c not in table.column_names]
    if missing:
        raise PredictionError(f"{path}: missing columns {missing} (need id, label_id, probs)")
    probs_col = table.column("probs").combine_chunks()
    if not (pa.types.is_list(probs_col.type) or pa.types.is_large_list(probs_col.type)):
        raise PredictionError(f"{path}: column probs must be list<float64>; got {probs_col.type}")
    if probs_col.null_count:
        raise PredictionError(f"{path}: column probs has {probs_col.null_count} null rows")
    lengths = pc.list_value_length(probs_col).to_numpy(zero_copy_only=False)
    if lengths.size and (lengths != n_classes).any():
        row = int(np.argmax(lengths != n_classes))
        raise PredictionError(f"{path}: row {row} has {lengths[row]} probabilities; the task has {n_classes} labels")
    values = probs_col.flatten()
    if values.null_count:
        raise PredictionError(f"{path}: column probs contains null values")
    probs = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False).reshape(len(table), n_classes)
    labels_col = table.column("label_id")
    if labels_col.null_count:
        raise PredictionError(f"{path}: label_id has {labels_col.null_count} nulls (gold labels are required)")
    labels = labels_col.to_numpy().astype(np.int64)
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        row = int(np.argmax(bad))
        raise PredictionError(f"{path}: row {row} has label_id {labels[row]}, outside [0, {n_classes})")
    return table, labels, probs


def write_predictions(table: pa.Table, probs: np.ndarray, path: Path) -> None:
    """``table`` with its probs column replaced, schema unchanged."""
    n, m = probs.shape
    offsets = pa.array(np.arange(0, (n + 1) * m, m, dtype=np.int32))
    field = table.schema.field("probs")
    column = pa.ListArray.from_arrays(offsets, pa.array(probs.ravel(), type=pa.float64())).cast(field.type)
    out = table.set_column(table.column_names.index("probs"), field, column)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(out, path)


def training_prior(meta: dict, n_classes: int) -> tuple[np.ndarray, bool]:
    """Class frequencies of the training labels; (+1 smoothed if a class has no example, whether it was)."""
    counts = meta.get("train_label_counts")
    if not isinstance(counts, list) or len(counts) != n_classes:
        raise PredictionError(f"meta.json train_label_counts must list {n_classes} class counts; got {counts!r}")
    c = np.asarray(counts, dtype=np.float64)
    if not np.isfinite(c).all() or (c < 0).any() or c.sum() <= 0:
        raise PredictionError(f"meta.json train_label_counts must be non-negative counts, not all zero; got {counts!r}")
    smoothed = bool((c == 0).any())
    if smoothed:
        c = c + 1.0
    return c / c.sum(), smoothed


def process_model(model_dir: Path, out_dir: Path, cfg: dict) -> tuple[dict, list[dict], dict]:
    """CAN for one model's splits: (metrics per split, reliability rows, reliability curves per split)."""
    meta_path = model_dir / "meta.json"
    if not meta_path.is_file():
        raise PredictionError(f"{model_dir}: no meta.json")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    labels = meta.get("labels")
    if not isinstance(labels, list) or len(labels) < 2:
        raise PredictionError(f"{meta_path}: labels must list the task's labels; got {labels!r}")
    m = len(labels)
    prior, smoothed = training_prior(meta, m)
    splits = [s for s in SPLITS if (model_dir / f"{s}.parquet").is_file()]
    if "dev" not in splits:
        raise PredictionError(f"{model_dir}: no dev.parquet")
    reported = "test_public" if "test_public" in splits else "dev"
    metrics, rel_rows, curves = {}, [], {}
    k = min(cfg["k"], m)  # top-k entropy needs k <= classes: binary tasks use k = 2
    for split in splits:
        path = model_dir / f"{split}.parquet"
        table, y, probs = read_predictions(path, m)
        try:
            res = can_apply(probs, prior, k=k, tau=cfg["tau"], alpha=cfg["alpha"], iters=cfg["iters"])
        except ValueError as err:
            raise PredictionError(f"{path}: {err}") from err
        write_predictions(table, res.probs, out_dir / f"{split}.parquet")
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
    write_json(out_dir / "meta.json", meta | {"can": dict(cfg), "prior": prior.tolist(), "prior_smoothed": smoothed})
    return metrics, rel_rows, curves


def run_task(pred_dir: Path, out_dir: Path, cfg: dict) -> tuple[dict, list[dict], dict]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task")
    task = parser.parse_args().task
    params = stage_params("can")
    cfg = params["can"]
    pred_dir = ROOT / "data" / "predictions" / "clue" / task
    out_dir = ROOT / "data" / "predictions_can" / "clue" / task
    report_dir = ROOT / "reports" / "can"

    with StageRun(f"can@{task}", params) as run:
        try:
            metrics, rel_rows, curves = run_task(pred_dir, out_dir, cfg)
        except PredictionError as err:
            fail(str(err))
        write_json(report_dir / f"{task}.json", metrics)
        write_json(report_dir / f"{task}_reliability.json", rel_rows)
        run.log_metrics({_safe(model): splits for model, splits in metrics.items()})
        report = summary_markdown(task, metrics)
        run.log_text(report, "can_report.md")
        with tempfile.TemporaryDirectory() as tmp:
            for model, per_split in curves.items():
                for split, pair in per_split.items():
                    png = Path(tmp) / f"reliability_{task}_{model}_{split}.png"
                    plot_reliability(pair, png, title=f"{task} / {model} / {split}: before vs after CAN")
                    run.log_artifact(png, "reliability")
        print(report)


def _safe(name: str) -> str:
    """An MLflow-safe metric name part."""
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in name)


if __name__ == "__main__":
    main()
