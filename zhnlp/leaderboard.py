"""Model × task leaderboards aggregated by power means over ONE task set (techniques.md §2).

``build_leaderboard`` checks that every row (model, or model+CAN) has every task of the
set, computes AM/GM/HM (and any other γ) per row and metric, the ranks under each mean
and whether those rankings agree; ``render_markdown``, ``render_chart`` and ``plot_rows``
turn the result into a report, a PNG and DVC plot data. The result is plain JSON data.

Rules (Su's critique of Shavrina & Malykh): every mean of every row uses the same tasks;
excluded tasks are named in the report; GM/HM are undefined for scores <= 0 (reported as
such, never silently dropped). Extra columns (e.g. generation tasks) are shown beside the
table and never enter the CLUE means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from zhnlp.metrics import kendall_tau, mean_name, power_mean, rank, swapped_pairs

CAN_SUFFIX = "+CAN"
METRIC_TITLES = {"accuracy": "Accuracy", "macro_f1": "Macro-F1"}


class LeaderboardError(ValueError):
    """The inputs cannot form a fair leaderboard (missing tasks, unknown exclusions, ...)."""


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
) -> dict:
    """The leaderboard as JSON-ready data.

    ``scores``: {row: {task: {metric: value}}}, rows in display order (e.g. "char",
    "char+CAN", ...). ``tasks``: the full task set; ``exclude_tasks`` leaves some out of
    every row's means. A row lacking a task (or a metric of it) that is not excluded is a
    LeaderboardError naming every such row and task.
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

    problems = []
    for row, per_task in scores.items():
        missing = [t for t in used if t not in per_task]
        if missing:
            problems.append(f"model {row!r} lacks tasks {missing}")
        for t in used:
            if t not in per_task:
                continue
            gaps = [m for m in metrics if not _is_number(per_task[t].get(m))]
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
            "scores": {t: {m: float(per_task[t][m]) for m in metrics} for t in used},
            "means": {},
        }
        for m in metrics:
            values = [entry["scores"][t][m] for t in used]
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
        "excluded_tasks": excluded,
        "splits": {t: (splits or {}).get(t) for t in used},
        "metrics": list(metrics),
        "means": means,
        "order": list(models),
        "models": models,
        "agreement": agreement,
        "extra_columns": sorted(extra_columns),
        "notes": notes,
    }


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


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


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
        lines += [f"## {METRIC_TITLES.get(m, m)}", ""]
        head = ["model", *tasks, *(n.upper() for n in means), *(f"rank {n.upper()}" for n in means)]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for row in sorted(order, key=lambda r: (board["models"][r]["ranks"][m]["am"] or 10**9, order.index(r))):
            e = board["models"][row]
            cells = [row, *(_pct(e["scores"][t][m]) for t in tasks), *(_pct(e["means"][m][n]) for n in means)]
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
    """DVC plot data: one row per model, ``<metric>_<mean>`` fields in %, e.g. accuracy_am."""
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
        ax.set_xlabel(f"{METRIC_TITLES.get(m, m)} (%) over {len(board['tasks'])} tasks")
        ax.set_title(METRIC_TITLES.get(m, m), fontsize=10)
        if i == 0:
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
