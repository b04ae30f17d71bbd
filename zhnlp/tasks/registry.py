"""The model registry's decisions, without MLflow: which finetuned models a task has, and its champion.

The ``register`` stage (``stages/register.py``) logs every finetuned transformer CLUE model, of every
task kind, as an MLflow model and registers it under ``<register.name_prefix><task>``; what a served
model reads and answers is :mod:`zhnlp.tasks.serving`. This module holds the rest that needs no MLflow:

- :func:`find_candidates`: one :class:`Candidate` per (model, task) of ``finetune.models`` and
  ``finetune.checkpoints``: its model folder, its report's dev score on the task kind's headline metric
  (:mod:`zhnlp.tasks.task_kinds`: accuracy, EM, entity F1), its recipe, and whether that recipe is the
  configured one of its family (``finetune.recipe`` / ``finetune.checkpoint_recipe``);
- :func:`generative_candidates`: the same for the Ape210K and LCCC generation heads (:data:`GENERATIVE`);
- :func:`champion`: the eligible candidate with the best dev score (ties: the first in params order);
- :func:`same_version`: whether a registered version already holds a candidate (reruns register nothing new);
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

from zhnlp.config import ConfigError, check_names
from zhnlp.errors import UserError
from zhnlp.tasks.task_kinds import task_kind

NOT_RUN_BY_DVC = "not-run-by-dvc"  # StageRun's deps hash of a stage run by hand: a version is then known by its run
IDENTITY_TAGS = ("zhnlp.model", "dvc.deps_hash", "zhnlp.serving_code")  # equal on a version: it holds the same model
FAMILIES = {"finetune.models": ("finetune_clue", "finetune.recipe"), "finetune.checkpoints": ("finetune_checkpoint", "finetune.checkpoint_recipe")}
# What a served model imports (zhnlp itself travels with the model); pinned to the versions installed here.
SERVING_PACKAGES = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "pyarrow", "jieba")
INCLUDE = ("clue", "ape210k", "lccc")
PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


class RegistryError(UserError):
    """A finetuned model or its report is missing or unreadable; the message names the file and the stage to run."""


@dataclass(frozen=True)
class RegisterConfig:
    """The ``register`` params: whether the stage registers anything, and the registered models' name prefix."""

    enabled: bool = True
    name_prefix: str = "zhnlp-"
    include: tuple[str, ...] = INCLUDE  # the model families registered: clue (every clue.tasks model), ape210k, lccc

    def validate(self, where: str) -> None:
        if not PREFIX.match(self.name_prefix):
            raise ConfigError(f"{where}.name_prefix: {self.name_prefix!r} is not allowed; use 1-40 letters, digits, '_', '-' or '.' (not first)")
        for i, family in enumerate(self.include):
            if family not in INCLUDE:
                raise ConfigError(f"{where}.include[{i}]: {family!r} is not allowed; use {', '.join(INCLUDE)}")


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
    data_dir: Path | None = None  # the prepared task its input example comes from (None: data/prepared/clue/<task>)
    num_beams: int = 1  # Ape210K's served beam size


# The generation heads: one model each per pipeline. task: (stage, kind, dev split, headline metric (higher is better)).
GENERATIVE = {"ape210k": ("finetune_ape210k", "math_word_problem", "valid", "accuracy_beam{beams}"),
              "lccc": ("finetune_lccc", "dialogue", "valid", "bleu2")}


def find_candidates(root: Path, params: Mapping[str, Any]) -> list[Candidate]:
    """Every (model, task) of finetune.models and finetune.checkpoints x clue.tasks, in params order."""
    out = []
    for family, (stage_kind, recipe_key) in FAMILIES.items():
        for model in check_names(family, params[family] or []):
            for task in check_names("clue.tasks", params["clue.tasks"]):
                out.append(_candidate(root, f"{stage_kind}@{model}-{task}", model, task, params[recipe_key]))
    return out


def _candidate(root: Path, stage: str, model: str, task: str, recipe: str) -> Candidate:
    report = _report(root, f"reports/finetune/{model}/{task}.json", stage)
    kind = str(report.get("kind", "classification"))
    metric = task_kind(kind).metric
    dev = (report.get("dev") or {}).get(metric)
    if not _is_number(dev):
        raise RegistryError(f"reports/finetune/{model}/{task}.json: no number at dev.{metric}; rerun {stage}")
    model_dir = _model_dir(root, f"models/finetune/{model}/{task}", stage)
    trained = report.get("recipe")
    return Candidate(model, task, stage, kind, metric, float(dev), trained, trained == recipe, model_dir, root / "data" / "prepared" / "clue" / task)


def generative_candidates(root: Path, params: Mapping[str, Any], tasks: Sequence[str] = tuple(GENERATIVE)) -> list[Candidate]:
    """The Ape210K seq2seq and LCCC dialogue models (``models/finetune_ape210k``, ``models/finetune_lccc``) of ``tasks``.
    Ape210K is served with its largest beam (``finetune_ape210k.beams``), and scored by that beam's dev accuracy."""
    beams = max(int(b) for b in params["finetune_ape210k.beams"])
    out = []
    for task, (stage, kind, split, metric) in GENERATIVE.items():
        if task not in tasks:
            continue
        metric = metric.format(beams=beams)
        report = _report(root, f"reports/{stage}/metrics.json", stage)
        dev = ((report.get("trained") or {}).get(split) or {}).get(metric)
        if not _is_number(dev):
            raise RegistryError(f"reports/{stage}/metrics.json: no number at trained.{split}.{metric}; rerun {stage}")
        model_dir = _model_dir(root, f"models/{stage}", stage)
        head = json.loads((model_dir / "zhnlp_generation.json").read_text(encoding="utf-8")) if (model_dir / "zhnlp_generation.json").is_file() else {}
        recipe = "-".join(str(head[k]) for k in ("head", "loss_on") if k in head) or None
        out.append(Candidate(str(report.get("model") or stage), task, stage, kind, metric, float(dev), recipe, True, model_dir,
                             root / "data" / "prepared" / task, beams if kind == "math_word_problem" else 1))
    return out


def _report(root: Path, rel: str, stage: str) -> dict:
    path = root / rel
    if not path.is_file():
        raise RegistryError(f"{rel} not found; run the stage {stage} first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RegistryError(f"{rel}: not JSON ({err.msg} at line {err.lineno}); rerun {stage}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _model_dir(root: Path, rel: str, stage: str) -> Path:
    model_dir = root / rel
    if not (model_dir / "config.json").is_file() or not any((model_dir / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        raise RegistryError(f"{rel} has no config.json and safetensors weights; rerun {stage}")
    return model_dir


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
    """``reports/registry.json``: per task its kind, registered model name, champion and dev scores."""
    tasks: dict[str, Any] = {}
    for task in dict.fromkeys(c.task for c in candidates):
        of_task = [c for c in candidates if c.task == task]
        best = champion(of_task)
        tasks[task] = {
            "kind": of_task[0].kind,
            "metric": of_task[0].metric,
            "registered_model": f"{prefix}{task}",
            "champion": best.model if best else None,
            "champion_dev": best.dev if best else None,
            "models": {c.model: {"dev": c.dev, "recipe": c.recipe, "eligible": c.eligible} for c in of_task},
        }
    return {"alias": "champion", "tasks": tasks}
