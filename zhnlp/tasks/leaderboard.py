"""Model × task leaderboards aggregated by power means over ONE task set (techniques.md §2).

:func:`leaderboard_from_reports` reads the finetune and CAN reports of a project (test_public
scores when every model has them, else dev), the generation heads' headline figures (each with its
unit, :func:`extra_unit`), each task's majority/chance baseline (:mod:`zhnlp.tasks.task_baselines`)
and what stands behind each +CAN score (:mod:`zhnlp.tasks.leaderboard_can`);
``build_leaderboard`` checks that every row (model, or model+CAN) has every task of the
set, computes AM/GM/HM (and any other γ) per row and metric, the ranks under each mean
and whether those rankings agree. The result is plain JSON data; :mod:`zhnlp.tasks.leaderboard_report`
turns it into a report, a PNG, DVC plot data and flat metric names.

Rules (Su's critique of Shavrina & Malykh): every mean of every row uses the same tasks;
excluded tasks are named in the report; GM/HM are undefined for scores <= 0 (reported as
such, never silently dropped). Extra columns (e.g. generation tasks) are shown beside the
table and never enter the CLUE means.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from zhnlp.config import ConfigError
from zhnlp.errors import UserError
from zhnlp.metrics import kendall_tau, mean_name, power_mean, rank, swapped_pairs
from zhnlp.tasks.leaderboard_can import can_summary
from zhnlp.tasks.task_baselines import task_baselines
from zhnlp.tasks.task_kinds import task_kind

CAN_SUFFIX = "+CAN"
# The leaderboard's tables: "score" is each task's official metric (accuracy; CMRC2018 EM; CLUENER entity F1),
# over every task; macro-F1 exists for the classification tasks only, and its means run over those.
METRICS = ("score", "macro_f1")
METRIC_TITLES = {"score": "Score", "accuracy": "Accuracy", "macro_f1": "Macro-F1"}
EXTRA_REPORTS = {"ape210k": "reports/finetune_ape210k/metrics.json", "lccc": "reports/finetune_lccc/metrics.json"}
# The headline figures of the generation heads shown beside the CLUE means.
EXTRA_COLUMNS = (
    "ape210k.trained.test.accuracy_beam1",
    "ape210k.trained.test.accuracy_beam3",
    "ape210k.untrained.test.accuracy_beam1",
    "lccc.trained.test.perplexity",
    "lccc.untrained.test.perplexity",
    "lccc.trained.test.bleu4",
    "lccc.trained.test.distinct2",
)
# How each extra metric is stored and shown: (title, factor to the shown unit); the leaf name picks it.
EXTRA_UNITS = (
    ("accuracy", "accuracy{beam} (%)", 100.0),
    ("bleu", "BLEU-{n} (0–100)", 1.0),
    ("distinct", "distinct-{n} (%)", 100.0),
    ("perplexity", "perplexity (≥ 1, lower is better)", 1.0),
)


class LeaderboardError(UserError):
    """The inputs cannot form a fair leaderboard (missing tasks, unknown exclusions, ...)."""


@dataclass(frozen=True)
class LeaderboardConfig:
    """The ``leaderboard`` params: tasks left out of every mean, and the power means' γ (AM, GM, HM always)."""

    exclude_tasks: tuple[str, ...] = ()
    gammas: tuple[float, ...] = (1.0, 0.0, -1.0)

    def validate(self, where: str) -> None:
        bad = [g for g in self.gammas if math.isnan(g)]
        if bad:
            raise ConfigError(f"{where}.gammas: nan is not allowed; use real numbers (.inf and -.inf for max and min)")


def mean_gammas(gammas: Sequence[float]) -> dict[str, float]:
    """AM, GM, HM always, then every other γ from params (largest first), by mean_name."""
    out = {"am": 1.0, "gm": 0.0, "hm": -1.0}
    for g in sorted({float(g) for g in gammas}, reverse=True):
        out.setdefault(mean_name(g), g)
    return out


def build_leaderboard(
    scores: Mapping[str, Mapping[str, Mapping[str, float]]],
    tasks: Sequence[str],
    *,
    exclude_tasks: Sequence[str] = (),
    gammas: Sequence[float] = (1, 0, -1),
    metrics: Sequence[str] = ("accuracy", "macro_f1"),
    splits: Mapping[str, str] | None = None,
    extra_metrics: Mapping[str, Mapping[str, float]] | None = None,
    notes: Sequence[str] = (),
    metric_tasks: Mapping[str, Sequence[str]] | None = None,
    task_metrics: Mapping[str, str] | None = None,
) -> dict:
    """The leaderboard as JSON-ready data.

    ``scores``: {row: {task: {metric: value}}}, rows in display order (e.g. "char",
    "char+CAN", ...). ``tasks``: the full task set; ``exclude_tasks`` leaves some out of
    every row's means. A row lacking a task (or a metric of it) that is not excluded is a
    LeaderboardError naming every such row and task. ``metric_tasks`` limits a metric to some tasks (macro-F1
    to the classification tasks): its means run over those only. ``task_metrics`` names each task's metric
    for the report's headers (e.g. {"cmrc2018": "EM"}).
    """
    tasks = list(tasks)
    unknown = sorted(set(exclude_tasks) - set(tasks))
    if unknown:
        raise LeaderboardError(f"exclude_tasks names tasks that are not in the task set: {unknown}; tasks: {tasks}")
    used = [t for t in tasks if t not in set(exclude_tasks)]
    excluded = [t for t in tasks if t in set(exclude_tasks)]
    if not used:
        raise LeaderboardError(f"every task is excluded ({excluded}): nothing to aggregate")
    if not scores:
        raise LeaderboardError("no models to rank")

    tasks_of = {m: [t for t in used if t in set((metric_tasks or {}).get(m, used))] for m in metrics}
    metrics = [m for m in metrics if tasks_of[m]]  # e.g. no macro-F1 table without a classification task
    tasks_of = {m: tasks_of[m] for m in metrics}
    problems = []
    for row, per_task in scores.items():
        missing = [t for t in used if t not in per_task]
        if missing:
            problems.append(f"model {row!r} lacks tasks {missing}")
        for t in used:
            if t not in per_task:
                continue
            gaps = [m for m in metrics if t in tasks_of[m] and not _is_number(per_task[t].get(m))]
            if gaps:
                problems.append(f"model {row!r} task {t!r} lacks a numeric {' and '.join(gaps)}")
    if problems:
        raise LeaderboardError(
            "every model must be scored on the same tasks: "
            + "; ".join(problems)
            + " (produce them, or list the tasks in leaderboard.exclude_tasks to leave them out of every mean)"
        )

    means = mean_gammas(gammas)
    notes = list(notes)
    models: dict[str, dict] = {}
    for row, per_task in scores.items():
        entry = {
            "base": row[: -len(CAN_SUFFIX)] if row.endswith(CAN_SUFFIX) else row,
            "can": row.endswith(CAN_SUFFIX),
            "scores": {t: {m: float(per_task[t][m]) for m in metrics if t in tasks_of[m]} for t in used},
            "means": {},
        }
        for m in metrics:
            values = [entry["scores"][t][m] for t in tasks_of[m]]
            entry["means"][m] = {}
            for name, g in means.items():
                try:
                    entry["means"][m][name] = power_mean(values, g)
                except ValueError as err:
                    entry["means"][m][name] = None
                    notes.append(f"{name.upper()} of {METRIC_TITLES.get(m, m)} is undefined for {row}: {err}")
        models[row] = entry

    agreement = {}
    for m in metrics:
        ranks = {name: rank({row: models[row]["means"][m][name] for row in models}) for name in means}
        for row in models:
            models[row].setdefault("ranks", {})[m] = {name: ranks[name][row] for name in means}
        pairs = {}
        names = list(means)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                va = {row: models[row]["means"][m][a] for row in models}
                vb = {row: models[row]["means"][m][b] for row in models}
                pairs[f"{a}_vs_{b}"] = {
                    "kendall_tau": kendall_tau(va, vb),
                    "swapped": [list(p) for p in swapped_pairs(ranks[a], ranks[b])],
                }
        defined = [n for n in names if all(models[row]["means"][m][n] is not None for row in models)]
        agreement[m] = {
            "identical": all(ranks[n] == ranks[defined[0]] for n in defined) if defined else None,
            "means_compared": defined,
            "pairs": pairs,
        }

    extra_columns: list[str] = []
    if extra_metrics:
        for row, values in extra_metrics.items():
            if row not in models:
                notes.append(f"extra metrics for {row!r} ignored: no such model on the leaderboard")
                continue
            kept = {k: float(v) for k, v in values.items() if _is_number(v)}
            models[row]["extra"] = kept
            extra_columns.extend(k for k in kept if k not in extra_columns)

    return {
        "tasks": used,
        "tasks_by_metric": tasks_of,
        "task_metrics": {t: (task_metrics or {}).get(t) for t in used},
        "excluded_tasks": excluded,
        "splits": {t: (splits or {}).get(t) for t in used},
        "metrics": list(metrics),
        "means": means,
        "order": list(models),
        "models": models,
        "agreement": agreement,
        "extra_columns": sorted(extra_columns),
        "extra_units": {c: extra_unit(c) for c in sorted(extra_columns)},
        "notes": notes,
    }


def leaderboard_from_reports(root: Path, models: Sequence[str], tasks: Sequence[str], cfg: LeaderboardConfig) -> dict:
    """The leaderboard of ``models`` (each also as ``<model>+CAN``) over ``tasks``, from the reports under ``root``.

    Reads reports/finetune/<model>/<task>.json and reports/can/<task>.json, and the
    generation heads' metrics as extra columns. Missing data is a LeaderboardError naming every gap.
    """
    scores, splits, hints, recipes, kinds = read_scores(root, list(models), [t for t in tasks if t not in set(cfg.exclude_tasks)])
    extra, notes = extra_metrics(root, list(models))
    others = sorted(t for t, k in kinds.items() if k != "classification")
    if others:
        notes.append(f"CAN applies to classification only: the +CAN rows repeat the model's scores on {', '.join(others)}")
    try:
        board = build_leaderboard(
            scores, tasks, exclude_tasks=cfg.exclude_tasks, gammas=cfg.gammas, metrics=METRICS, splits=splits, extra_metrics=extra, notes=notes,
            metric_tasks={"macro_f1": [t for t in tasks if kinds.get(t, "classification") == "classification"]},
            task_metrics={t: task_kind(kinds.get(t, "classification")).title for t in tasks},
        )
    except LeaderboardError as err:
        raise LeaderboardError(str(err) + (f". Details: {'; '.join(dict.fromkeys(hints))}" if hints else "")) from err
    board["recipes"] = recipes
    board["task_kinds"] = {t: kinds.get(t, "classification") for t in board["tasks"]}
    board["baselines"], more = task_baselines(root, board["tasks"], board["splits"], board["task_kinds"])
    can_reports = {t: _read_json(p) for t in board["tasks"] if (p := root / "reports" / "can" / f"{t}.json").is_file()}
    board["can"] = can_summary(can_reports, list(models), board["splits"])
    board["notes"] += more
    return board


def extra_unit(column: str) -> dict:
    """How the report shows an extra column: {"title", "scale"} (shown = scale × stored value).

    Accuracies and distinct-n are stored as fractions and shown in %, BLEU is stored and shown in 0–100,
    perplexity as is; any other metric is shown as stored.
    """
    parts = column.split(".")
    leaf, where = parts[-1], " ".join(parts[:-1])
    shown, scale = f"{leaf} (as stored)", 1.0
    for stem, title, factor in EXTRA_UNITS:
        if leaf.startswith(stem):
            rest = leaf[len(stem):].lstrip("_")
            beam = f", beam {rest[4:]}" if rest.startswith("beam") else ""
            shown, scale = title.format(beam=beam, n=rest or "n"), factor
            break
    return {"title": f"{where}: {shown}" if where else shown, "scale": scale}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LeaderboardError(f"{path}: not valid JSON ({err})") from err


def read_scores(root: Path, models: list[str], tasks: list[str]) -> tuple[dict, dict, list[str], dict[str, str], dict[str, str]]:
    """({row: {task: {"score", "macro_f1"}}}, {task: split}, hints for missing data, {model: its finetune recipe},
    {task: kind}); rows are each model and model+CAN. ``score`` is the task kind's official metric (the report's
    ``metric``; accuracy for classification). A model trained with several recipes shows them joined by '/'."""
    scores: dict[str, dict] = {row: {} for model in models for row in (model, model + CAN_SUFFIX)}
    splits, hints, recipes, kinds = {}, [], {}, {}
    for task in tasks:
        finetune = {m: _read_json(p) for m in models if (p := root / "reports" / "finetune" / m / f"{task}.json").is_file()}
        bad = [m for m, r in finetune.items() if not isinstance(r, dict)]
        if bad:
            raise LeaderboardError(f"reports/finetune/{bad[0]}/{task}.json: expected a JSON object of splits")
        can_path = root / "reports" / "can" / f"{task}.json"
        can = _read_json(can_path) if can_path.is_file() else None
        if not finetune:
            hints.append(f"no reports/finetune/<model>/{task}.json for any model")
            continue
        found = {str(r.get("kind", "classification")) for r in finetune.values()}
        if len(found) > 1:
            raise LeaderboardError(f"reports/finetune/*/{task}.json disagree on the task kind ({', '.join(sorted(found))}); rerun the finetune stages")
        kinds[task] = kind = found.pop()
        metric = task_kind(kind).metric
        split = "test_public" if all(isinstance(r.get("test_public"), dict) for r in finetune.values()) else "dev"
        splits[task] = split
        can_applies = kind == "classification"
        for model in models:
            report = finetune.get(model)
            if isinstance(report, dict) and report.get("recipe") is not None:
                recipes.setdefault(model, set()).add(str(report["recipe"]))
            if report is None:
                hints.append(f"reports/finetune/{model}/{task}.json is missing")
            elif not isinstance(report.get(split), dict):
                hints.append(f"reports/finetune/{model}/{task}.json has no {split!r} scores")
            else:
                block = report[split]
                scores[model][task] = _scores({"score": block.get(metric), "macro_f1": block.get("macro_f1")}, f"reports/finetune/{model}/{task}.json[{split}]")
                if not can_applies:
                    scores[model + CAN_SUFFIX][task] = dict(scores[model][task])
            if not can_applies:
                continue
            can_entry = can.get(model) if isinstance(can, dict) else None
            entry = can_entry.get(split) if isinstance(can_entry, dict) else None
            if can is None:
                hints.append(f"reports/can/{task}.json is missing")
            elif not isinstance(entry, dict):
                hints.append(f"reports/can/{task}.json has no {model!r} {split!r} entry")
            else:
                after = {"score": entry.get("accuracy_after"), "macro_f1": entry.get("macro_f1_after")}
                scores[model + CAN_SUFFIX][task] = _scores(after, f"reports/can/{task}.json[{model}][{split}]")
    return scores, splits, hints, {m: "/".join(sorted(names)) for m, names in recipes.items()}, kinds


def _scores(block: dict, where: str) -> dict:
    out = {}
    for metric in METRICS:  # a missing one is reported by build_leaderboard, where the task needs it
        value = block.get(metric)
        if value is None:
            continue
        if not _is_number(value) or not 0 <= value <= 1:
            raise LeaderboardError(f"{where}: {metric} must be a fraction in [0, 1]; got {value!r}")
        out[metric] = float(value)
    return out


def extra_metrics(root: Path, models: list[str]) -> tuple[dict, list[str]]:
    """{model: {"<task>.<metric>": value}} from the generation tasks' reports, where present, and notes."""
    out: dict[str, dict] = {}
    notes: list[str] = []
    for prefix, rel in EXTRA_REPORTS.items():
        path = root / rel
        if path.is_file():
            found, more = extra_columns_from(prefix, _read_json(path), models)
            for model, values in found.items():
                out.setdefault(model, {}).update({k: v for k, v in values.items() if k in EXTRA_COLUMNS})
            notes += [f"{rel}: {n}" for n in more]
    return out, notes


def extra_columns_from(prefix: str, report, models: Sequence[str]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Extra columns from another task's metrics JSON: ({model: {"<prefix>.<path>": value}}, notes).

    Accepted shapes: ``{"model": "char", ...numbers...}`` (or ``"backbone"``), or
    ``{"char": {...numbers...}, ...}`` keyed by model names. Numeric leaves anywhere below
    become columns named by their dotted path; anything else is ignored.
    """
    if not isinstance(report, Mapping):
        return {}, [f"expected a JSON object, got {type(report).__name__}; ignored"]
    owner = report.get("model", report.get("backbone"))
    if isinstance(owner, str):
        return {owner: _numeric_leaves(report, prefix)}, []
    keyed = {k: v for k, v in report.items() if k in models and isinstance(v, Mapping)}
    if keyed:
        return {m: _numeric_leaves(v, prefix) for m, v in keyed.items()}, []
    return {}, ["names no model (no 'model'/'backbone' key, no model-name keys); ignored"]


def _numeric_leaves(obj: Mapping, prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            out.update(_numeric_leaves(value, name))
        elif _is_number(value):
            out[name] = float(value)
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
