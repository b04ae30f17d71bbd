"""finetune_clue / finetune_checkpoint / finetune_baseline @<model>-<task>: train on a prepared CLUE task, predict, submit.

``python -m stages.finetune_clue <model> <task>`` (or no names under ``dvc repro``, from ``DVC_STAGE``).
``<model>`` is a backbone in ``finetune.models`` (pretrained here into ``models/pretrain/<model>/``,
recipe ``finetune.recipe``), a local Hugging Face checkpoint in ``finetune.checkpoints`` (the folder
``<finetune.checkpoint_dir>/<model>/``, recipe ``finetune.checkpoint_recipe``; its config may lack
``model_type``, see ``zhnlp.models.checkpoint``), or a baseline in ``finetune.baselines`` (``tfidf``:
the task kind's non-neural floor). A recipe is a named set of training settings in ``finetune.recipes``,
with its own ``tasks.<task>`` changes and ``finetune.overrides.<task>`` on top; its name goes to the
metrics file, ``meta.json`` and MLflow, and from there to the leaderboard.

The task's kind (``task.json``) picks the head: classification (``zhnlp.tasks.classification``; full
probability vectors for CAN) or span extraction, multiple choice, idiom cloze, NER
(``zhnlp.tasks.task_kinds``). Writes:

- ``data/predictions/clue/<task>/<model>/``: ``{dev,test_public}.parquet`` (id, label_id, probs) for
  classification, ``{dev,test_public,test}.jsonl`` predictions for the other kinds; ``meta.json``;
  ``submission/<official name>`` for the unlabelled test split and ``<task>_<model>_submission.zip``;
- ``reports/finetune/<model>/<task>.json``: the official metrics per split, the recipe and the
  training summary (best epoch, epochs run; the training time goes to MLflow only);
- transformers only: the best epoch's model in ``models/finetune/<model>/<task>/``.

MLflow gets the same metrics under the same names for every model, plus per-epoch curves
(``epoch.dev.<metric>``, ``epoch.train.loss``, step = epoch).
"""

from __future__ import annotations

import json
import shutil
import time

from stages.common import ROOT, StageRun, fail, resolve, run, stage_item, stage_params, write_json
from zhnlp.config import choice, require_mapping
from zhnlp.models.checkpoint import inspect_checkpoint
from zhnlp.tasks.baseline import TfidfClassifier, TfidfConfig
from zhnlp.tasks.classification import ClassifierTraining, TransformerClassifier
from zhnlp.tasks.classification_data import LABELLED_EVAL_SPLITS, TaskData, evaluate_probs
from zhnlp.tasks.kind_models import floor_for, head_class
from zhnlp.tasks.predictions import write_predictions
from zhnlp.tasks.submission import benchmark_of, write_kind_submission, write_task_submission, zip_submissions
from zhnlp.tasks.task_kinds import load_task, task_kind
from zhnlp.tasks.task_kinds import write_predictions as write_kind_predictions

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
    recipe = None
    if baseline:
        cfg = TfidfConfig.from_params(params["finetune.tfidf"] or {})
    else:
        recipes = require_mapping("finetune.recipes", params["finetune.recipes"] or {})
        recipe = choice(recipe_key, params[recipe_key], recipes)
        overrides = require_mapping("finetune.overrides", params["finetune.overrides"] or {})
        cfg = ClassifierTraining.from_params(recipes[recipe] or {}, overrides.get(task), task, f"finetune.recipes.{recipe}")
        params = {k: v for k, v in params.items() if k != "finetune.recipes"} | {f"finetune.recipes.{recipe}": cfg.as_dict()}
    kind = _task_kind(data_dir)
    try:
        data = TaskData.load(data_dir) if kind == "classification" else load_task(data_dir)[1]
    except FileNotFoundError as err:
        fail(str(err))
    backbone, checkpoint = _backbone(family, model, params)
    pred_dir = ROOT / "data" / "predictions" / "clue" / task / model
    model_out = ROOT / "models" / "finetune" / model / task
    for out in (pred_dir, model_out):  # no stale files from an earlier run
        shutil.rmtree(out, ignore_errors=True)

    run_params = dict(params) | {"model": model, "task": task, "task_kind": kind, "recipe": recipe}
    if checkpoint is not None:
        run_params["checkpoint"] = checkpoint.summary()
    with StageRun(stage, run_params, model=model, task=task, backbone=None if baseline else model, recipe=recipe or model) as tracker:
        t0 = time.perf_counter()
        log_fn = lambda m, epoch: tracker.log_metrics(m, step=epoch)  # noqa: E731
        go = _classification if kind == "classification" else _other_kind
        training, splits, meta = go(task, kind, data, backbone, cfg, pred_dir, model_out, log_fn)
        tracker.log_metrics({"training.seconds": time.perf_counter() - t0})  # wall time: MLflow only, never the DVC metrics
        metrics: dict = ({"kind": kind, "metric": task_kind(kind).metric} if kind != "classification" else {})
        metrics |= {"training": training} | ({"recipe": recipe} if recipe else {}) | splits
        write_json(pred_dir / "meta.json", {"model": model, "task": task, "kind": "baseline" if baseline else "transformer",
                                            "task_kind": kind, "recipe": recipe} | meta)
        metrics_path = ROOT / "reports" / "finetune" / model / f"{task}.json"
        write_json(metrics_path, metrics)
        tracker.log_metrics({s: {k: v for k, v in block.items() if k != "per_type"} for s, block in splits.items()})
        tracker.log_metrics({"training": training})
        tracker.log_artifact(metrics_path)
        tracker.log_artifact(pred_dir / "meta.json")
        name = task_kind(kind).metric
        # The task's official metric under one name for every kind, so MLflow compares models across tasks in one column.
        tracker.log_metrics({f"{s}.score": block[name] for s, block in splits.items()})
        line = "  ".join(f"{s}.{name}={block[name]:.4f}" for s, block in splits.items())
        print(f"{stage}: {line}  ({time.perf_counter() - t0:.1f}s)")


def _classification(task, kind, data: TaskData, backbone, cfg, pred_dir, model_out, log_fn) -> tuple[dict, dict, dict]:
    """A classification task: TF-IDF + LR or the transformer classifier; probabilities for CAN."""
    train = data.splits["train"]
    if backbone is None:
        clf, training = TfidfClassifier(data.labels, cfg).fit(train), {}
    else:
        clf = TransformerClassifier.from_pretrained(backbone, data.labels, seed=cfg.seed, max_seq_len=cfg.max_seq_len)
        training = clf.fit(train, data.splits["dev"], cfg, log_fn=log_fn).metrics()
        clf.save(model_out)
    splits = {}
    for split in LABELLED_EVAL_SPLITS:
        if split in data.splits:
            rows = data.splits[split]
            probs = clf.predict_proba(rows)
            write_predictions(pred_dir / f"{split}.parquet", [r["id"] for r in rows], probs, [r["label_id"] for r in rows])
            splits[split] = evaluate_probs(rows, probs)
    if "test" in data.splits:
        rows = data.splits["test"]
        predicted = clf.predict_proba(rows).argmax(axis=1)
        labels = [data.labels[i] for i in predicted]
        sub = write_task_submission(pred_dir / "submission", task, benchmark_of(data.splits), [r["id"] for r in rows], labels)
        zip_submissions([sub], pred_dir / f"{task}_{pred_dir.name}_submission.zip")
    meta = {"labels": data.labels, "train_label_counts": data.label_counts("train")}
    return training | {"rows": len(train)}, splits, meta


def _other_kind(task, kind, splits_rows: dict, backbone, cfg, pred_dir, model_out, log_fn) -> tuple[dict, dict, dict]:
    """Span extraction, multiple choice, idiom cloze or NER: the kind's head (or its floor), its official metrics."""
    spec = task_kind(kind)
    info = json.loads((ROOT / "data" / "prepared" / "clue" / task / "task.json").read_text(encoding="utf-8"))
    if backbone is None:
        predictor, training = floor_for(kind).fit(splits_rows["train"]), {}
    else:
        extra = {"kind": kind} if kind in ("multiple_choice", "idiom_cloze") else {}
        predictor = head_class(kind).from_pretrained(backbone, labels=info.get("labels") or (), seed=cfg.seed, max_seq_len=cfg.max_seq_len, **extra)
        training = predictor.fit(splits_rows["train"], splits_rows["dev"], cfg, score_fn=spec.score, metric=spec.metric, log_fn=log_fn).metrics()
        predictor.save(model_out)
    splits = {}
    for split in ("dev", "test_public", "test"):
        if split in splits_rows:
            rows = splits_rows[split]
            predicted = predictor.predict(rows)
            write_kind_predictions(pred_dir / f"{split}.jsonl", spec, rows, predicted)
            if split != "test":
                splits[split] = spec.score(rows, predicted)
                continue
            sub = write_kind_submission(pred_dir / "submission", task, benchmark_of(splits_rows), kind, [r["id"] for r in rows], predicted)
            zip_submissions([sub], pred_dir / f"{task}_{pred_dir.name}_submission.zip")
    return training | {"rows": len(splits_rows["train"])}, splits, {}


def _task_kind(data_dir) -> str:
    """The prepared task's kind (task.json; classification when absent, as prepared before kinds existed)."""
    path = data_dir / "task.json"
    return json.loads(path.read_text(encoding="utf-8")).get("kind", "classification") if path.is_file() else "classification"


def _backbone(family: str, model: str, params: dict):
    """(backbone folder, Checkpoint or None) of a transformer model; (None, None) for a baseline."""
    if family == "finetune.checkpoints":
        backbone = resolve(params["finetune.checkpoint_dir"]) / model
        return backbone, inspect_checkpoint(backbone)  # config, weights and tokenizer checked; one-line errors
    if family == "finetune.models":
        backbone = ROOT / "models" / "pretrain" / model
        if not (backbone / "config.json").is_file():
            fail(f"{backbone} is not a model directory (no config.json); is {model!r} in pretrain.backbones?")
        return backbone, None
    return None, None


if __name__ == "__main__":
    run(main)
