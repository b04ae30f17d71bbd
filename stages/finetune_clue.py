"""finetune_clue / finetune_checkpoint / finetune_baseline @<model>-<task>: train on a prepared CLUE task, predict, submit.

``python -m stages.finetune_clue <model> <task>`` (or no names under ``dvc repro``, from
``DVC_STAGE``). ``<model>`` is one of:

- a backbone in ``finetune.models``, pretrained here into ``models/pretrain/<model>/``
  (``finetune_clue``), trained with the recipe ``finetune.recipe``;
- a local Hugging Face checkpoint in ``finetune.checkpoints``: the folder (or a symlink to it)
  ``<finetune.checkpoint_dir>/<model>/``, finetuned with no pretraining stage
  (``finetune_checkpoint``), with the recipe ``finetune.checkpoint_recipe``. Its config may
  lack ``model_type``, its tokenizer comes from the folder (``zhnlp.models.checkpoint``);
- a baseline in ``finetune.baselines`` (``tfidf``; ``finetune_baseline``).

``<task>`` is in ``clue.tasks``. A recipe is a named set of training settings in
``finetune.recipes`` (``tiny-cpu``, ``clue-base``), with ``finetune.overrides.<task>`` on top;
its name goes to the metrics file, ``meta.json`` and MLflow, and from there to the leaderboard.

Writes (same layout for both kinds):

- ``data/predictions/clue/<task>/<model>/{dev,test_public}.parquet``: id, label_id, probs;
- ``.../meta.json``: model, task, labels, train_label_counts (the CAN prior), kind, recipe;
- ``.../submission/<official name>`` for the unlabelled test split, and
  ``.../<task>_<model>_submission.zip`` of that folder;
- ``reports/finetune/<model>/<task>.json``: dev / test_public accuracy, macro_f1, rows, the recipe,
  and the training summary (best epoch, epochs run; the training time goes to MLflow only);
- transformers only: the best checkpoint in ``models/finetune/<model>/<task>/``.

MLflow gets the same summary metrics under the same names for every model
(``dev.accuracy``, ``dev.macro_f1``, ``test_public.accuracy``, ``test_public.macro_f1``),
plus per-epoch curves (``epoch.dev.accuracy``, ``epoch.train.loss``, step = epoch).
"""

from __future__ import annotations

import shutil
import time

from stages.common import ROOT, StageRun, fail, resolve, run, stage_item, stage_params, write_json
from zhnlp.tasks.baseline import TfidfClassifier, TfidfConfig
from zhnlp.tasks.classification import ClassifierTraining, TransformerClassifier
from zhnlp.tasks.classification_data import LABELLED_EVAL_SPLITS, TaskData, evaluate_probs
from zhnlp.tasks.predictions import write_predictions
from zhnlp.config import choice, require_mapping
from zhnlp.models.checkpoint import inspect_checkpoint
from zhnlp.tasks.submission import benchmark_of, write_task_submission, zip_submissions

BASELINES = ("tfidf",)
# The stages this program runs, and the params their matrix names come from (model or baseline, task).
GROUPS = {
    "finetune_clue": ("finetune.models", "clue.tasks"),
    "finetune_checkpoint": ("finetune.checkpoints", "clue.tasks"),
    "finetune_baseline": ("finetune.baselines", "clue.tasks"),
}
FAMILIES = {"finetune.models": "finetune_clue", "finetune.checkpoints": "finetune_checkpoint", "finetune.baselines": "finetune_baseline"}


def model_family(params: dict, model: str) -> str:
    """Which list names ``model``; a name in two of them is ambiguous (their outputs would collide)."""
    found = [key for key in FAMILIES if model in (params[key] or [])]
    if len(found) > 1:
        fail(f"{' and '.join(found)} both name {model!r}; model names must be unique across them")
    return found[0]


def main() -> None:
    model, task = stage_item(GROUPS)  # names from params, check_name'd
    family = model_family(stage_params(*FAMILIES), model)
    stage, baseline = f"{FAMILIES[family]}@{model}-{task}", family == "finetune.baselines"
    recipe_key = "finetune.checkpoint_recipe" if family == "finetune.checkpoints" else "finetune.recipe"
    # What the stage declares in dvc.yaml (the recipes are read whole only to list the allowed names).
    keys = ("finetune.tfidf",) if baseline else (recipe_key, "finetune.recipes", "finetune.overrides")
    params = stage_params(*keys, *(("finetune.checkpoint_dir",) if family == "finetune.checkpoints" else ()))

    data_dir = ROOT / "data" / "prepared" / "clue" / task
    pred_dir = ROOT / "data" / "predictions" / "clue" / task / model
    model_out = ROOT / "models" / "finetune" / model / task
    recipe, checkpoint = None, None
    if baseline:
        cfg = TfidfConfig.from_params(params["finetune.tfidf"] or {})
    else:
        recipes = require_mapping("finetune.recipes", params["finetune.recipes"] or {})
        recipe = choice(recipe_key, params[recipe_key], recipes)
        overrides = require_mapping("finetune.overrides", params["finetune.overrides"] or {})
        cfg = ClassifierTraining.from_params(recipes[recipe] or {}, overrides.get(task), task, f"finetune.recipes.{recipe}")
    try:
        data = TaskData.load(data_dir)
    except FileNotFoundError as err:
        fail(str(err))
    if family == "finetune.checkpoints":
        backbone = resolve(params["finetune.checkpoint_dir"]) / model
        checkpoint = inspect_checkpoint(backbone)  # config, weights and tokenizer checked; one-line errors
    elif not baseline:
        backbone = ROOT / "models" / "pretrain" / model
        if not (backbone / "config.json").is_file():
            fail(f"{backbone} is not a model directory (no config.json); is {model!r} in pretrain.backbones?")

    for out in (pred_dir, model_out):  # no stale files from an earlier run
        shutil.rmtree(out, ignore_errors=True)

    if recipe:
        params = {k: v for k, v in params.items() if k != "finetune.recipes"} | {f"finetune.recipes.{recipe}": cfg.as_dict()}
    run_params = dict(params) | {"model": model, "task": task, "recipe": recipe, "resolved": cfg.as_dict()}
    if checkpoint is not None:
        run_params["checkpoint"] = checkpoint.summary()
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

        metrics: dict = {"training": training} | ({"recipe": recipe} if recipe else {})
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
            "recipe": recipe,
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
