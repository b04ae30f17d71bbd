"""leaderboard: every model (and model+CAN) × every CLUE task, aggregated over one task set.

Reads reports/finetune/<model>/<task>.json and reports/can/<task>.json for every model
in finetune.models + finetune.checkpoints + finetune.baselines and every task in clue.tasks; optionally
reports/finetune_ape210k/metrics.json and reports/finetune_lccc/metrics.json as extra
columns (never part of the CLUE means); each task's majority/chance baseline from
reports/prepare_clue/<task>.json or data/prepared/clue/<task>/ (zhnlp.tasks.task_baselines). Writes
reports/leaderboard.{md,json,png}, reports/leaderboard_tasks.png (per-task bars against the baselines)
and reports/leaderboard_plot.json. Split per task: test_public when every model has it, else dev.
"""

from __future__ import annotations

from pathlib import Path

from stages.common import ROOT, StageRun, run, stage_params, write_json
from zhnlp.config import from_params
from zhnlp.tasks.leaderboard import LeaderboardConfig, leaderboard_from_reports
from zhnlp.tasks.leaderboard_charts import render_chart, render_task_chart
from zhnlp.tasks.leaderboard_report import flat_metrics, plot_rows, render_markdown


def write_outputs(board: dict, report_dir: Path) -> dict[str, Path]:
    paths = {
        "markdown": report_dir / "leaderboard.md",
        "json": report_dir / "leaderboard.json",
        "png": report_dir / "leaderboard.png",
        "tasks_png": report_dir / "leaderboard_tasks.png",
        "plot": report_dir / "leaderboard_plot.json",
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    paths["markdown"].write_text(render_markdown(board), encoding="utf-8")
    write_json(paths["json"], board)
    render_chart(board, paths["png"])
    render_task_chart(board, paths["tasks_png"])
    write_json(paths["plot"], plot_rows(board))
    return paths


def table_rows(board: dict) -> list[dict]:
    """One row per model (and model+CAN): the task scores and the means, in %, as the markdown shows them."""
    pct = lambda v: None if v is None else round(100 * v, 2)  # noqa: E731
    rows = []
    for name in board["order"]:
        entry = board["models"][name]
        row = {"model": name, "recipe": board["recipes"].get(entry["base"])}
        row |= {task: pct(entry["scores"].get(task, {}).get("score")) for task in board["tasks"]}
        row |= {f"mean_{m}": pct(v) for m, v in entry["means"]["score"].items()}
        rows.append(row)
    return rows


def main() -> None:
    params = stage_params("leaderboard", "finetune.models", "finetune.checkpoints", "finetune.baselines", "clue.tasks")
    cfg = from_params(LeaderboardConfig, params["leaderboard"], "leaderboard")
    models = [*params["finetune.models"], *(params["finetune.checkpoints"] or []), *params["finetune.baselines"]]
    with StageRun("leaderboard", params) as tracking:
        board = leaderboard_from_reports(ROOT, models, list(params["clue.tasks"]), cfg)
        paths = write_outputs(board, ROOT / "reports")
        tracking.log_metrics(flat_metrics(board))
        for path in paths.values():
            tracking.log_artifact(path, "leaderboard")
        tracking.log_table(table_rows(board), "leaderboard_table.json")  # model x task, in the run's MLflow table view
        tracking.log_image(paths["png"], "charts/means.png")
        tracking.log_image(paths["tasks_png"], "charts/tasks.png")
        print(paths["markdown"].read_text(encoding="utf-8"))


if __name__ == "__main__":
    run(main)
