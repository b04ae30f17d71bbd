"""A leaderboard (the data of :func:`zhnlp.tasks.leaderboard.build_leaderboard`) as a report.

:func:`render_markdown` (tables per metric, rank agreement, notes), :func:`render_chart` (a PNG
dot plot of each model's means), :func:`plot_rows` (DVC plot data) and :func:`flat_metrics`
(one flat name per figure, for the tracking store).
"""

from __future__ import annotations

from zhnlp.tasks.leaderboard import METRIC_TITLES
from zhnlp.metrics import metric_key


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def tasks_of(board: dict, metric: str) -> list[str]:
    """The tasks a metric's means run over (all tasks, or the classification tasks for macro-F1)."""
    return (board.get("tasks_by_metric") or {}).get(metric, board["tasks"])


def _header(board: dict, task: str, metric: str) -> str:
    name = (board.get("task_metrics") or {}).get(task)
    return f"{task} ({name})" if metric == "score" and name else task


def render_markdown(board: dict, title: str = "CLUE leaderboard") -> str:
    """The leaderboard as markdown: per-task scores, means and ranks per metric, agreement, notes."""
    tasks, means, order = board["tasks"], board["means"], board["order"]
    lines = [f"# {title}", ""]
    split_text = ", ".join(f"{t}: {s}" for t, s in board["splits"].items() if s)
    lines.append(f"Scores in %, every row over the same {len(tasks)} tasks: {', '.join(tasks)}.")
    if split_text:
        lines.append(f"Split per task: {split_text}.")
    if board["excluded_tasks"]:
        lines.append(f"**Excluded from every mean:** {', '.join(board['excluded_tasks'])} (leaderboard.exclude_tasks).")
    else:
        lines.append("Excluded tasks: none.")
    gamma_text = ", ".join(f"{n.upper()} (γ={g:g})" for n, g in means.items())
    lines += [f"Means: power means M_γ over tasks: {gamma_text}. Rows marked `+CAN` are the same model after CAN.", ""]

    for m in board["metrics"]:
        m_tasks = tasks_of(board, m)
        lines += [f"## {METRIC_TITLES.get(m, m)}", ""]
        if m == "score" and any(board.get("task_metrics", {}).get(t) not in (None, "Acc") for t in tasks):
            lines += ["Each task's official metric, named in its column: Acc accuracy, EM exact match (CMRC2018), F1 entity-level micro F1 (CLUENER).", ""]
        if m_tasks != tasks:
            lines += [f"Over the {len(m_tasks)} classification tasks only: {', '.join(m_tasks)}.", ""]
        recipes = board.get("recipes") or {}
        head = ["model", *(["recipe"] if recipes else []), *(_header(board, t, m) for t in m_tasks), *(n.upper() for n in means), *(f"rank {n.upper()}" for n in means)]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] * (2 if recipes else 1) + ["---:"] * (len(head) - (2 if recipes else 1))) + "|")
        for row in sorted(order, key=lambda r: (board["models"][r]["ranks"][m]["am"] or 10**9, order.index(r))):
            e = board["models"][row]
            cells = [row, *([recipes.get(e["base"], "–")] if recipes else []), *(_pct(e["scores"][t][m]) for t in m_tasks), *(_pct(e["means"][m][n]) for n in means)]
            cells += ["–" if e["ranks"][m][n] is None else str(e["ranks"][m][n]) for n in means]
            lines.append("| " + " | ".join(cells) + " |")
        ag = board["agreement"][m]
        lines.append("")
        compared = ", ".join(n.upper() for n in ag["means_compared"])
        if ag["identical"]:
            lines.append(f"Rankings agree: identical ranking under {compared}: **yes**.")
        else:
            lines.append(f"Rankings agree: identical ranking under {compared}: **no**.")
        for pair, info in ag["pairs"].items():
            a, b = pair.split("_vs_")
            tau = "undefined" if info["kendall_tau"] is None else f"{info['kendall_tau']:.3f}"
            swaps = "; ".join(f"{x} ↔ {y}" for x, y in info["swapped"]) or "none"
            lines.append(f"- {a.upper()} vs {b.upper()}: Kendall τ = {tau}; pairs that swap: {swaps}")
        lines.append("")

    if board["extra_columns"]:
        cols = board["extra_columns"]
        lines += ["## Other tasks (not part of the CLUE means)", ""]
        lines.append("| model | " + " | ".join(cols) + " |")
        lines.append("|---|" + "|".join(["---:"] * len(cols)) + "|")
        for row in order:
            extra = board["models"][row].get("extra") or {}
            if extra:
                lines.append(f"| {row} | " + " | ".join(f"{extra[c]:.4g}" if c in extra else "–" for c in cols) + " |")
        lines.append("")
    if board["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in board["notes"]] + [""]
    return "\n".join(lines)


def plot_rows(board: dict) -> list[dict]:
    """DVC plot data: one row per model, ``<metric>_<mean>`` fields in %, e.g. score_am."""
    rows = []
    for row in board["order"]:
        e = board["models"][row]
        rec = {"model": row}
        for m in board["metrics"]:
            for n in board["means"]:
                v = e["means"][m][n]
                rec[f"{m}_{n}"] = None if v is None else round(100 * v, 4)
        rows.append(rec)
    return rows


def flat_metrics(board: dict) -> dict[str, float]:
    """Flat metric names, the same shape for every model: leaderboard.<model>.<metric>.<mean>, ..."""
    out: dict[str, float] = {}
    for row, e in board["models"].items():
        key = f"leaderboard.{metric_key(row)}"
        for metric in board["metrics"]:
            for name in board["means"]:
                if e["means"][metric][name] is not None:
                    out[f"{key}.{metric}.{name}"] = e["means"][metric][name]
                if e["ranks"][metric][name] is not None:
                    out[f"{key}.rank.{metric}.{name}"] = e["ranks"][metric][name]
            for task in tasks_of(board, metric):
                out[f"{key}.task.{task}.{metric}"] = e["scores"][task][metric]
        for col, value in (e.get("extra") or {}).items():
            out[f"{key}.extra.{metric_key(col)}"] = value
    for metric, ag in board["agreement"].items():
        if ag["identical"] is not None:
            out[f"leaderboard.agreement.{metric}.identical"] = float(ag["identical"])
    return out


def render_chart(board: dict, path) -> None:
    """PNG dot plot: per metric, each model's means (AM, GM, HM, ...) in %, models sorted by AM."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics, means, order = board["metrics"], board["means"], board["order"]
    height = 1.2 + 0.42 * len(order)
    fig = Figure(figsize=(5.0 * len(metrics), height), dpi=110)
    FigureCanvasAgg(fig)
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
        ax.set_xlabel(f"{METRIC_TITLES.get(m, m)} (%) over {len(tasks_of(board, m))} tasks")
        ax.set_title(METRIC_TITLES.get(m, m), fontsize=10)
        if i == 0:
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
