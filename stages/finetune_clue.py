"""finetune_clue@<model>-<task> / finetune_baseline@<baseline>-<task>: train on a prepared CLUE task, predict, submit.

``python -m stages.finetune_clue <model> <task>`` (or no names under ``dvc repro``, from
``DVC_STAGE``): ``<model>`` is a baseline name in ``finetune.baselines`` (``tfidf``) or a
backbone in ``finetune.models`` under ``models/pretrain/<model>/`` (any local Hugging Face
checkpoint directory with a BERT-style encoder works the same way); ``<task>`` is in ``clue.tasks``.

Writes (same layout for both kinds):

- ``data/predictions/clue/<task>/<model>/{dev,test_public}.parquet``: id, label_id, probs;
- ``.../meta.json``: model, task, labels, train_label_counts (the CAN prior), kind;
- ``.../submission/<official name>`` for the unlabelled test split, and
  ``.../<task>_<model>_submission.zip`` of that folder;
- ``reports/finetune/<model>/<task>.json``: dev / test_public accuracy, macro_f1, rows,
  and the training summary (best epoch, epochs run; the training time goes to MLflow only);
- transformers only: the best checkpoint in ``models/finetune/<model>/<task>/``.

MLflow gets the same summary metrics under the same names for every model
(``dev.accuracy``, ``dev.macro_f1``, ``test_public.accuracy``, ``test_public.macro_f1``),
plus per-epoch curves (``epoch.dev.accuracy``, ``epoch.train.loss``, step = epoch).
"""

from __future__ import annotations

import shutil
import sys
import time

from stages.common import ROOT, StageRun, fail, run, stage_item, stage_params, write_json
from zhnlp.tasks.baseline import TfidfClassifier, TfidfConfig
from zhnlp.tasks.classification import ClassifierTraining, TransformerClassifier
from zhnlp.tasks.classification_data import LABELLED_EVAL_SPLITS, TaskData, evaluate_probs
from zhnlp.tasks.predictions import write_predictions
from zhnlp.config import require_mapping
from zhnlp.tasks.submission import benchmark_of, write_task_submission, zip_submissions

BASELINES = ("tfidf",)
# The stages this program runs, and the params their matrix names come from (model or baseline, task).
GROUPS = {"finetune_clue": ("finetune.models", "clue.tasks"), "finetune_baseline": ("finetune.baselines", "clue.tasks")}


def main() -> None:
    model, task = stage_item(GROUPS)  # names from params, check_name'd
    baseline = model in BASELINES
    keys = ("finetune.tfidf",) if baseline else ("finetune.training", "finetune.overrides")
    params = stage_params(*keys)
    stage = f"{'finetune_baseline' if baseline else 'finetune_clue'}@{model}-{task}"

    data_dir = ROOT / "data" / "prepared" / "clue" / task
    pred_dir = ROOT / "data" / "predictions" / "clue" / task / model
    model_out = ROOT / "models" / "finetune" / model / task
    backbone = ROOT / "models" / "pretrain" / model
    if baseline:
        cfg = TfidfConfig.from_params(params["finetune.tfidf"] or {})
    else:
        overrides = require_mapping("finetune.overrides", params["finetune.overrides"] or {})
        cfg = ClassifierTraining.from_params(params["finetune.training"] or {}, overrides.get(task), task)
    try:
        data = TaskData.load(data_dir)
    except FileNotFoundError as err:
        fail(str(err))
    if not baseline:
        if not (backbone / "config.json").is_file():
            fail(f"{backbone} is not a model directory (no config.json); is {model!r} in pretrain.backbones?")
        if not (backbone / "zhnlp_tokenizer.json").is_file():
            print(f"warning: {backbone} has no zhnlp_tokenizer.json: encoding it as a plain Hugging Face checkpoint "
                  "(mode 'pretrained', no jieba pre-segmentation)", file=sys.stderr)

    for out in (pred_dir, model_out):  # no stale files from an earlier run
        shutil.rmtree(out, ignore_errors=True)

    run_params = dict(params) | {"model": model, "task": task, "resolved": cfg.as_dict()}
    with StageRun(stage, run_params) as tracker:
        t0 = time.perf_counter()
        train = data.splits["train"]
        if baseline:
            clf = TfidfClassifier(data.labels, cfg).fit(train)
            training = {}
        else:
            clf = TransformerClassifier.from_pretrained(backbone, data.labels, seed=cfg.seed, max_seq_len=cfg.max_seq_len)
            summary = clf.fit(train, data.splits["dev"], cfg, log_fn=lambda m, epoch: tracker.log_metrics(m, step=epoch))
            training = summary.metrics()
            clf.save(model_out)
        tracker.log_metrics({"training.seconds": time.perf_counter() - t0})  # wall time: MLflow only, never the DVC metrics
        training["rows"] = len(train)

        metrics: dict = {"training": training}
        for split in LABELLED_EVAL_SPLITS:
            if split in data.splits:
                rows = data.splits[split]
                probs = clf.predict_proba(rows)
                write_predictions(pred_dir / f"{split}.parquet", [r["id"] for r in rows], probs, [r["label_id"] for r in rows])
                metrics[split] = evaluate_probs(rows, probs)

        if "test" in data.splits:
            rows = data.splits["test"]
            predicted = clf.predict_proba(rows).argmax(axis=1)
            sub = write_task_submission(
                pred_dir / "submission", task, benchmark_of(data.splits), [r["id"] for r in rows], [data.labels[i] for i in predicted]
            )
            zip_submissions([sub], pred_dir / f"{task}_{model}_submission.zip")

        meta = {
            "model": model,
            "task": task,
            "kind": "baseline" if baseline else "transformer",
            "labels": data.labels,
            "train_label_counts": data.label_counts("train"),
        }
        write_json(pred_dir / "meta.json", meta)
        metrics_path = ROOT / "reports" / "finetune" / model / f"{task}.json"
        write_json(metrics_path, metrics)
        tracker.log_metrics(metrics)
        tracker.log_artifact(metrics_path)
        tracker.log_artifact(pred_dir / "meta.json")
        summary_line = "  ".join(f"{s}.accuracy={metrics[s]['accuracy']:.4f}" for s in LABELLED_EVAL_SPLITS if s in metrics)
        print(f"{stage}: {summary_line}  ({time.perf_counter() - t0:.1f}s)")


if __name__ == "__main__":
    run(main)
