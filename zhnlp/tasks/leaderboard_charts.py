"""The leaderboard's PNG charts (matplotlib, Agg): the means per model, and every task's scores against its baseline.

:func:`render_chart` is a dot plot of each row's means (AM, GM, HM, ...) per metric.
:func:`render_task_chart` draws one panel per task: a bar per row (model, model+CAN) with the
task's majority/chance baseline (zhnlp.tasks.task_baselines) as a dashed line, so a collapsed task
(bars on the line) shows at a glance. Bars at or below the baseline are red; ``+CAN`` bars whose CAN
reference was below can.min_reference are hatched. PNGs are written without the matplotlib version
in their metadata, so a rerun gives the same bytes.
"""

from __future__ import annotations

from zhnlp.tasks.leaderboard import METRIC_TITLES
from zhnlp.tasks.task_baselines import BASELINE_TITLES, at_or_below

PNG_METADATA = {"Software": None}  # no library version in a DVC-tracked file
BASELINE_STYLES = {"majority": "--", "chance": ":"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _tasks_of(board: dict, metric: str) -> list[str]:
    return (board.get("tasks_by_metric") or {}).get(metric, board["tasks"])


def small_reference(board: dict, row: str, task: str) -> bool:
    """Whether ``row`` is a +CAN row whose CAN reference on ``task`` was flagged too small."""
    e = board["models"][row]
    entry = ((board.get("can") or {}).get(e["base"]) or {}).get(task) if e.get("can") else None
    return bool(entry and entry.get("reference_too_small"))


def render_chart(board: dict, path) -> None:
    """PNG dot plot: per metric, each model's means (AM, GM, HM, ...) in %, models sorted by AM."""
    metrics, means, order = board["metrics"], board["means"], board["order"]
    fig = _figure(5.0 * len(metrics), 1.2 + 0.42 * len(order))
    markers = "os^Dvp*hX"
    for i, m in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        rows = sorted(order, key=lambda r: board["models"][r]["means"][m]["am"] or 0.0)
        for j, n in enumerate(means):
            xs = [board["models"][r]["means"][m][n] for r in rows]
            pts = [(100 * x, y) for y, x in enumerate(xs) if x is not None]
            if pts:
                ax.scatter(*zip(*pts), marker=markers[j % len(markers)], s=36, label=n.upper(), zorder=3)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.grid(axis="x", color="0.88", zorder=0)
        ax.set_xlabel(f"{METRIC_TITLES.get(m, m)} (%) over {len(_tasks_of(board, m))} tasks")
        ax.set_title(METRIC_TITLES.get(m, m), fontsize=10)
        if i == 0:
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_METADATA)


def task_panels(board: dict, metric: str = "score") -> list[dict]:
    """What each panel of :func:`render_task_chart` draws: the task, its title, its baseline line (%, kind)
    and one bar per row (value in %, at or below the baseline, +CAN on a too-small reference)."""
    baselines = (board.get("baselines") or {}) if metric == "score" else {}
    names = board.get("task_metrics") or {}
    panels = []
    for task in _tasks_of(board, metric):
        base = baselines.get(task)
        label = names.get(task) if metric == "score" else METRIC_TITLES.get(metric, metric)
        bars = []
        for row in board["order"]:
            e = board["models"][row]
            v = e["scores"][task][metric]
            bars.append({"row": row, "base": e["base"], "can": bool(e.get("can")), "value": 100 * v,
                         "low": at_or_below(v, base), "small_reference": small_reference(board, row, task)})
        title = f"{task} ({label}, %)" if label else f"{task} (%)"
        panels.append({"task": task, "title": title + ("; no baseline" if metric == "score" and base is None else ""),
                       "baseline": None if base is None else {"value": 100 * base["value"], "kind": base["kind"]}, "bars": bars})
    return panels


def render_task_chart(board: dict, path, metric: str = "score") -> list[dict]:
    """PNG, one panel per task: each row's score (%) as a bar, the task's baseline as a line; returns the panels."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    panels, order = task_panels(board, metric), board["order"]
    cols = min(4, len(panels))
    nrows = -(-len(panels) // cols)
    fig = _figure(max(3.3 * cols, 9.0), 0.8 + nrows * (0.9 + 0.24 * len(order)))  # wide enough for the legend
    palette = ["#4C72B0", "#55A868", "#8172B3", "#CCB974", "#64B5CD", "#8C8C8C", "#DD8452", "#937860"]
    bases = list(dict.fromkeys(board["models"][r]["base"] for r in order))
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for y, bar in enumerate(panel["bars"]):
            ax.barh(y, bar["value"], height=0.72, color="#C44E52" if bar["low"] else palette[bases.index(bar["base"]) % len(palette)],
                    alpha=0.55 if bar["can"] else 1.0, hatch="///" if bar["small_reference"] else None,
                    edgecolor="0.25", linewidth=0.4, zorder=2)
        if panel["baseline"] is not None:
            ax.axvline(panel["baseline"]["value"], color="0.1", linestyle=BASELINE_STYLES[panel["baseline"]["kind"]], linewidth=1.2, zorder=3)
        ax.set_xlim(0, 100)
        ax.set_ylim(len(order) - 0.4, -0.6)
        ax.set_yticks(range(len(order)), order if i % cols == 0 else [""] * len(order), fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", color="0.9", zorder=0)
        ax.set_title(panel["title"], fontsize=8)
    kinds = {p["baseline"]["kind"] for p in panels if p["baseline"]}
    handles = [Line2D([], [], color="0.1", linestyle=BASELINE_STYLES[k], label=BASELINE_TITLES[k]) for k in ("majority", "chance") if k in kinds]
    handles.append(Patch(facecolor="#C44E52", edgecolor="0.25", label="at or below the baseline"))
    if any(b["small_reference"] for p in panels for b in p["bars"]):
        handles.append(Patch(facecolor="white", edgecolor="0.25", hatch="///", label="+CAN on a reference below can.min_reference"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 2), fontsize=7, frameon=False)
    splits = ", ".join(sorted(set(board["splits"].values()) - {None}))
    fig.suptitle(f"{METRIC_TITLES.get(metric, metric)} per task ({splits}); lighter bars: +CAN rows", fontsize=9)
    fig.tight_layout(rect=(0, 0.04 + 0.02 * len(handles), 1, 0.96))
    fig.savefig(path, metadata=PNG_METADATA)
    return panels
