"""The model registry's decisions, without MLflow: which finetuned models a task has, its champion, what a served model reads.

The ``register`` stage (``stages/register.py``) logs every finetuned transformer model of a registered
kind (:data:`REGISTERED_KINDS`) as an MLflow model and registers it under ``<register.name_prefix><task>``.
This module holds what needs no MLflow:

- :func:`find_candidates`: one :class:`Candidate` per (model, task) of ``finetune.models`` and
  ``finetune.checkpoints``: its model folder, its report's dev score on the task kind's headline metric
  (:mod:`zhnlp.tasks.task_kinds`: accuracy, EM, entity F1), its recipe, and whether that recipe is the
  configured one of its family (``finetune.recipe`` / ``finetune.checkpoint_recipe``);
- :func:`champion`: the eligible candidate with the best dev score (ties: the first in params order);
- :func:`same_version`: whether a registered version already holds a candidate (reruns register nothing new);
- :func:`example_rows` / :func:`rows_from_records`: the input example taken from a prepared split, and
  the rows a served classifier rebuilds from a request table;
- :func:`registry_report`: ``reports/registry.json``, deterministic (no versions, run ids or times).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from zhnlp.config import ConfigError, check_names
from zhnlp.errors import UserError
from zhnlp.tasks.task_kinds import task_kind

REGISTERED_KINDS = ("classification",)  # kinds served as MLflow models; the others are listed as not registered
INPUT_COLUMNS = ("text_a", "text_b", "span1_text", "span1_index", "span2_text", "span2_index")  # prepared CLUE fields a model reads
INT_COLUMNS = ("span1_index", "span2_index")
EXAMPLE_SPLITS = ("test", "test_public", "dev")  # the input example comes from the first present
NOT_RUN_BY_DVC = "not-run-by-dvc"  # StageRun's deps hash of a stage run by hand: a version is then known by its run
IDENTITY_TAGS = ("zhnlp.model", "dvc.deps_hash", "zhnlp.serving_code")  # equal on a version: it holds the same model
FAMILIES = {"finetune.models": ("finetune_clue", "finetune.recipe"), "finetune.checkpoints": ("finetune_checkpoint", "finetune.checkpoint_recipe")}
# What a served classifier imports (zhnlp itself travels with the model); pinned to the versions installed here.
SERVING_PACKAGES = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "pyarrow", "jieba")
PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


class RegistryError(UserError):
    """A finetuned model or its report is missing or unreadable; the message names the file and the stage to run."""


@dataclass(frozen=True)
class RegisterConfig:
    """The ``register`` params: whether the stage registers anything, and the registered models' name prefix."""

    enabled: bool = True
    name_prefix: str = "zhnlp-"

    def validate(self, where: str) -> None:
        if not PREFIX.match(self.name_prefix):
            raise ConfigError(f"{where}.name_prefix: {self.name_prefix!r} is not allowed; use 1-40 letters, digits, '_', '-' or '.' (not first)")


@dataclass(frozen=True)
class Candidate:
    """One finetuned model of one task, as its finetune stage left it."""

    model: str
    task: str
    stage: str  # the DVC stage that trained it, e.g. finetune_clue@char-tnews
    kind: str
    metric: str
    dev: float
    recipe: str | None
    eligible: bool  # trained under its family's configured recipe: may be the champion
    model_dir: Path


def find_candidates(root: Path, params: Mapping[str, Any]) -> list[Candidate]:
    """Every (model, task) of finetune.models and finetune.checkpoints x clue.tasks, in params order."""
    out = []
    for family, (stage_kind, recipe_key) in FAMILIES.items():
        for model in check_names(family, params[family] or []):
            for task in check_names("clue.tasks", params["clue.tasks"]):
                out.append(_candidate(root, f"{stage_kind}@{model}-{task}", model, task, params[recipe_key]))
    return out


def _candidate(root: Path, stage: str, model: str, task: str, recipe: str) -> Candidate:
    report_path = root / "reports" / "finetune" / model / f"{task}.json"
    model_dir = root / "models" / "finetune" / model / task
    if not report_path.is_file():
        raise RegistryError(f"reports/finetune/{model}/{task}.json not found; run the stage {stage} first")
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RegistryError(f"reports/finetune/{model}/{task}.json: not JSON ({err.msg} at line {err.lineno}); rerun {stage}") from None
    kind = str(report.get("kind", "classification"))
    metric = task_kind(kind).metric
    dev = (report.get("dev") or {}).get(metric)
    if not isinstance(dev, (int, float)) or isinstance(dev, bool) or math.isnan(dev):
        raise RegistryError(f"reports/finetune/{model}/{task}.json: no number at dev.{metric}; rerun {stage}")
    if not (model_dir / "config.json").is_file() or not any((model_dir / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        raise RegistryError(f"models/finetune/{model}/{task} has no config.json and safetensors weights; rerun {stage}")
    trained = report.get("recipe")
    return Candidate(model, task, stage, kind, metric, float(dev), trained, trained == recipe, model_dir)


def champion(candidates: Sequence[Candidate]) -> Candidate | None:
    """The eligible candidate with the best dev score; ties go to the first in params order."""
    eligible = [c for c in candidates if c.eligible]
    return max(eligible, key=lambda c: c.dev) if eligible else None


def same_version(tags: Mapping[str, str], version_run_id: str | None, expected: Mapping[str, str], run_id: str) -> bool:
    """Whether a registered version (its tags and run) already holds the model a version with tags ``expected``
    would: the same :data:`IDENTITY_TAGS` (model, DVC deps hash, serving code); for a stage run by hand (no
    deps hash), also the same finetune run."""
    if any(tags.get(key) != expected.get(key) for key in IDENTITY_TAGS):
        return False
    return expected.get("dvc.deps_hash") != NOT_RUN_BY_DVC or version_run_id == run_id


def saved_labels(model_dir: Path) -> list[str]:
    """The label names of a saved classifier, in label-id order (config.json ``id2label``)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    if sorted(id2label) != list(range(len(id2label))) or not id2label:
        raise RegistryError(f"{model_dir}/config.json: id2label is not labels 0..n-1; rerun its finetune stage")
    return [id2label[i] for i in range(len(id2label))]


def example_rows(data_dir: Path, n: int = 3) -> list[dict[str, Any]]:
    """The first ``n`` rows of the task's first present split in :data:`EXAMPLE_SPLITS`, keeping the input
    columns the task fills (text_b for pairs, the spans for WSC)."""
    for split in EXAMPLE_SPLITS:
        path = data_dir / f"{split}.parquet"
        if path.is_file():
            rows = pq.read_table(path, columns=list(INPUT_COLUMNS)).to_pylist()
            used = [c for c in INPUT_COLUMNS if any(r[c] is not None for r in rows)]
            if rows:
                return [{c: r[c] for c in used} for r in rows[:n]]
    raise RegistryError(f"{data_dir}: no rows in any of {', '.join(s + '.parquet' for s in EXAMPLE_SPLITS)}; run prepare_clue first")


def column_types(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(column, MLflow type) of example rows: the signature's inputs."""
    return [(c, "long" if c in INT_COLUMNS else "string") for c in rows[0]] if rows else []


def rows_from_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prepared-row dicts from a request table's records: absent or NaN fields become None, span indices ints."""
    rows = []
    for i, record in enumerate(records):
        row = {}
        for column in INPUT_COLUMNS:
            value = record.get(column)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                value = None
            elif column in INT_COLUMNS:
                value = int(value)
            else:
                value = str(value)
            row[column] = value
        if row["text_a"] is None:
            raise UserError(f"input row {i}: text_a is missing")
        rows.append(row)
    return rows


def pip_requirements() -> list[str]:
    """The served model's requirements, pinned to this environment (local build tags such as +cpu dropped)."""
    out = []
    for package in SERVING_PACKAGES:
        try:
            out.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return out


def registry_report(prefix: str, candidates: Sequence[Candidate]) -> dict[str, Any]:
    """``reports/registry.json``: per task its registered model name, champion and dev scores (or why it is not registered)."""
    tasks: dict[str, Any] = {}
    for task in dict.fromkeys(c.task for c in candidates):
        of_task = [c for c in candidates if c.task == task]
        kind = of_task[0].kind
        entry: dict[str, Any] = {"kind": kind, "metric": of_task[0].metric}
        if kind not in REGISTERED_KINDS:
            tasks[task] = entry | {"registered_model": None, "reason": f"kind {kind} is not served as an MLflow model"}
            continue
        best = champion(of_task)
        tasks[task] = entry | {
            "registered_model": f"{prefix}{task}",
            "champion": best.model if best else None,
            "champion_dev": best.dev if best else None,
            "models": {c.model: {"dev": c.dev, "recipe": c.recipe, "eligible": c.eligible} for c in of_task},
        }
    return {"alias": "champion", "tasks": tasks}
