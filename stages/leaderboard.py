"""leaderboard: every model (and model+CAN) × every CLUE task, aggregated over one task set.

Reads reports/finetune/<model>/<task>.json and reports/can/<task>.json for every model
in finetune.models + finetune.baselines and every task in clue.tasks; optionally
reports/finetune_ape210k/metrics.json and reports/finetune_lccc/metrics.json as extra
columns (never part of the CLUE means). Writes reports/leaderboard.{md,json,png} and
reports/leaderboard_plot.json. Split per task: test_public when every model has it, else dev.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from stages.common import ROOT, StageRun, fail, stage_params, write_json
from zhnlp.leaderboard import CAN_SUFFIX, LeaderboardError, build_leaderboard, extra_columns_from, plot_rows, render_chart, render_markdown

METRICS = ("accuracy", "macro_f1")
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
CONSISTENCY_TOLERANCE = 1e-6


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LeaderboardError(f"{path}: not valid JSON ({err})") from err


def collect(root: Path, models: list[str], tasks: list[str]) -> tuple[dict, dict, list[str], list[str]]:
    """({row: {task: {metric: value}}}, {task: split}, hints for missing data, notes)."""
    finetune: dict[str, dict[str, dict]] = {m: {} for m in models}
    for model in models:
        for task in tasks:
            path = root / "reports" / "finetune" / model / f"{task}.json"
            if path.is_file():
                finetune[model][task] = _read_json(path)
    can: dict[str, dict] = {}
    for task in tasks:
        path = root / "reports" / "can" / f"{task}.json"
        if path.is_file():
            can[task] = _read_json(path)

    scores: dict[str, dict] = {}
    for model in models:
        scores[model] = {}
        scores[model + CAN_SUFFIX] = {}
    splits, hints, notes = {}, [], []
    for task in tasks:
        have = [finetune[m][task] for m in models if task in finetune[m]]
        if not have:
            hints.append(f"no reports/finetune/<model>/{task}.json for any model")
            continue
        split = "test_public" if all(isinstance(r.get("test_public"), dict) for r in have) else "dev"
        splits[task] = split
        for model in models:
            report = finetune[model].get(task)
            if report is None:
                hints.append(f"reports/finetune/{model}/{task}.json is missing")
            elif not isinstance(report.get(split), dict):
                hints.append(f"reports/finetune/{model}/{task}.json has no {split!r} scores")
            else:
                scores[model][task] = _scores(report[split], f"reports/finetune/{model}/{task}.json[{split}]")
            entry = can.get(task, {}).get(model, {}).get(split)
            if task not in can:
                hints.append(f"reports/can/{task}.json is missing")
            elif not isinstance(entry, dict):
                hints.append(f"reports/can/{task}.json has no {model!r} {split!r} entry")
            else:
                where = f"reports/can/{task}.json[{model}][{split}]"
                scores[model + CAN_SUFFIX][task] = _scores({"accuracy": entry.get("accuracy_after"), "macro_f1": entry.get("macro_f1_after")}, where)
                for metric, why in (
                    ("accuracy", "reports and predictions are out of sync"),
                    ("macro_f1", "out of sync, or macro-F1 is defined differently (zhnlp.metrics.macro_f1: classes present in gold or predictions)"),
                ):
                    before = entry.get(f"{metric}_before")
                    base = scores[model].get(task, {}).get(metric)
                    if isinstance(before, (int, float)) and isinstance(base, (int, float)) and abs(before - base) > CONSISTENCY_TOLERANCE:
                        notes.append(
                            f"{model}/{task}/{split}: the finetune report's {metric} {100 * base:.2f} differs from that of its "
                            f"predictions before CAN ({100 * before:.2f}): {why}"
                        )
    return scores, splits, hints, notes


def _scores(block: dict, where: str) -> dict:
    out = {}
    for metric in METRICS:
        value = block.get(metric)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
            raise LeaderboardError(f"{where}: {metric} must be a fraction in [0, 1]; got {value!r}")
        out[metric] = float(value)
    return out


def extra_metrics(root: Path, models: list[str]) -> tuple[dict, list[str]]:
    """{model: {"<task>.<metric>": value}} from the generation tasks' reports, where present."""
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


def build(root: Path, params: dict) -> dict:
    """The leaderboard data from the reports under ``root`` (LeaderboardError on missing data)."""
    models = list(params["finetune.models"]) + list(params["finetune.baselines"])
    tasks = list(params["clue.tasks"])
    cfg = params["leaderboard"]
    exclude = list(cfg.get("exclude_tasks") or [])
    scores, splits, hints, notes = collect(root, models, [t for t in tasks if t not in set(exclude)])
    extra, extra_notes = extra_metrics(root, models)
    try:
        return build_leaderboard(
            scores,
            tasks,
            exclude_tasks=exclude,
            gammas=cfg.get("gammas") or [1, 0, -1],
            metrics=METRICS,
            splits=splits,
            extra_metrics=extra,
            notes=notes + extra_notes,
        )
    except LeaderboardError as err:
        raise LeaderboardError(str(err) + (f". Details: {'; '.join(dict.fromkeys(hints))}" if hints else "")) from err


def write_outputs(board: dict, report_dir: Path) -> dict[str, Path]:
    paths = {
        "markdown": report_dir / "leaderboard.md",
        "json": report_dir / "leaderboard.json",
        "png": report_dir / "leaderboard.png",
        "plot": report_dir / "leaderboard_plot.json",
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    paths["markdown"].write_text(render_markdown(board), encoding="utf-8")
    write_json(paths["json"], board)
    render_chart(board, paths["png"])
    write_json(paths["plot"], plot_rows(board))
    return paths


def mlflow_metrics(board: dict) -> dict[str, float]:
    """Flat metric names, the same shape for every model: leaderboard.<model>.<metric>.<mean>, ..."""
    out: dict[str, float] = {}
    for row, e in board["models"].items():
        key = f"leaderboard.{_safe(row)}"
        for metric in board["metrics"]:
            for name in board["means"]:
                if e["means"][metric][name] is not None:
                    out[f"{key}.{metric}.{name}"] = e["means"][metric][name]
                if e["ranks"][metric][name] is not None:
                    out[f"{key}.rank.{metric}.{name}"] = e["ranks"][metric][name]
            for task in board["tasks"]:
                out[f"{key}.task.{task}.{metric}"] = e["scores"][task][metric]
        for col, value in (e.get("extra") or {}).items():
            out[f"{key}.extra.{_safe(col)}"] = value
    for metric, ag in board["agreement"].items():
        if ag["identical"] is not None:
            out[f"leaderboard.agreement.{metric}.identical"] = float(ag["identical"])
    return out


def _safe(name: str) -> str:
    """An MLflow-safe metric name part ("char+CAN" -> "char_CAN")."""
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in name)


def main() -> None:
    params = stage_params("leaderboard", "finetune.models", "finetune.baselines", "clue.tasks")
    report_dir = ROOT / "reports"
    with StageRun("leaderboard", params) as run:
        try:
            board = build(ROOT, params)
        except LeaderboardError as err:
            fail(str(err))
        paths = write_outputs(board, report_dir)
        run.log_metrics(mlflow_metrics(board))
        for path in paths.values():
            run.log_artifact(path, "leaderboard")
        print(paths["markdown"].read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
