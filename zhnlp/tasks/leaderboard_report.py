"""A leaderboard (the data of :func:`zhnlp.tasks.leaderboard.build_leaderboard`) as a report.

:func:`render_markdown` (tables per metric with the tasks' baselines and marks, rank agreement, the
other tasks in their own units, what stands behind each +CAN score, notes), :func:`plot_rows` (DVC
plot data) and :func:`flat_metrics` (one flat name per figure, for the tracking store). The PNG
charts are in :mod:`zhnlp.tasks.leaderboard_charts`.
"""

from __future__ import annotations

from zhnlp.metrics import metric_key
from zhnlp.tasks.leaderboard import METRIC_TITLES
from zhnlp.tasks.leaderboard_can import can_counts
from zhnlp.tasks.leaderboard_charts import small_reference
from zhnlp.tasks.task_baselines import at_or_below

LOW = "▼"  # a score at or below the task's majority/chance baseline
SMALL = "†"  # a +CAN score whose CAN reference was below can.min_reference


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _cell(board: dict, row: str, task: str, metric: str) -> str:
    v = board["models"][row]["scores"][task][metric]
    marks = ""
    if metric == "score" and at_or_below(v, (board.get("baselines") or {}).get(task)):
        marks += " " + LOW
    if small_reference(board, row, task):
        marks += " " + SMALL
    return _pct(v) + marks


def tasks_of(board: dict, metric: str) -> list[str]:
    """The tasks a metric's means run over (all tasks, or the classification tasks for macro-F1)."""
    return (board.get("tasks_by_metric") or {}).get(metric, board["tasks"])


def _header(board: dict, task: str, metric: str) -> str:
    name = (board.get("task_metrics") or {}).get(task)
    return f"{task} ({name})" if metric == "score" and name else task


def render_markdown(board: dict, title: str = "CLUE leaderboard") -> str:
    """The leaderboard as markdown: per-task scores, means and ranks per metric, agreement, other tasks, CAN, notes."""
    tasks, means, order = board["tasks"], board["means"], board["order"]
    lines = [f"# {title}", ""]
    split_text = ", ".join(f"{t}: {board['splits'][t]}" for t in tasks if board["splits"].get(t))  # task order, also from JSON
    lines.append(f"CLUE scores in %, every row over the same {len(tasks)} tasks: {', '.join(tasks)}.")
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
        if m == "score":
            lines += _legend(board, m_tasks)
        if m_tasks != tasks:
            lines += [f"Over the {len(m_tasks)} classification tasks only: {', '.join(m_tasks)}.", ""]
        recipes = board.get("recipes") or {}
        head = ["model", *(["recipe"] if recipes else []), *(_header(board, t, m) for t in m_tasks), *(n.upper() for n in means), *(f"rank {n.upper()}" for n in means)]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] * (2 if recipes else 1) + ["---:"] * (len(head) - (2 if recipes else 1))) + "|")
        baselines = board.get("baselines") or {}
        if m == "score" and any(baselines.get(t) for t in m_tasks):
            cells = ["*baseline*", *(["–"] if recipes else []), *(_baseline_cell(baselines.get(t)) for t in m_tasks)]
            lines.append("| " + " | ".join(cells + ["–"] * (2 * len(means))) + " |")
        for row in sorted(order, key=lambda r: (board["models"][r]["ranks"][m]["am"] or 10**9, order.index(r))):
            e = board["models"][row]
            cells = [row, *([recipes.get(e["base"], "–")] if recipes else []), *(_cell(board, row, t, m) for t in m_tasks), *(_pct(e["means"][m][n]) for n in means)]
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

    lines += _extra_table(board) + _can_table(board)
    if board["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in board["notes"]] + [""]
    return "\n".join(lines)


def _legend(board: dict, tasks: list[str]) -> list[str]:
    baselines = board.get("baselines") or {}
    out = []
    if any(baselines.get(t) for t in tasks):
        out.append(f"*baseline*: each task's free score on its split: (maj) the majority class's share (the best constant "
                   f"prediction), (chance) a uniform guess, 1/#labels or the mean 1/#choices; – none (EM, entity F1: see the tfidf floor). "
                   f"{LOW} marks a score at or below it.")
    if any(small_reference(board, r, t) for r in board["order"] for t in tasks):
        out.append(f"{SMALL} marks a +CAN score whose CAN reference (the split's confident rows) was below can.min_reference: "
                   "CAN was applied, but re-normalised against too few rows to mean anything (see the CAN table below).")
    return out + [""] if out else []


def _baseline_cell(base: dict | None) -> str:
    if base is None:
        return "–"
    return f"{_pct(base['value'])} ({'maj' if base['kind'] == 'majority' else 'chance'})"


def _extra_table(board: dict) -> list[str]:
    cols = board["extra_columns"]
    if not cols:
        return []
    units = board.get("extra_units") or {}
    lines = ["## Other tasks (not part of the CLUE means)", "", "Each column in the unit its header names.", ""]
    lines.append("| model | " + " | ".join(units.get(c, {}).get("title", c) for c in cols) + " |")
    lines.append("|---|" + "|".join(["---:"] * len(cols)) + "|")
    for row in board["order"]:
        extra = board["models"][row].get("extra") or {}
        if extra:
            lines.append(f"| {row} | " + " | ".join(f"{units.get(c, {}).get('scale', 1.0) * extra[c]:.2f}" if c in extra else "–" for c in cols) + " |")
    return lines + [""]


def _can_table(board: dict) -> list[str]:
    can = board.get("can") or {}
    if not can:
        return []
    c = can_counts(can)
    fixed = sorted({(e["tau"], e["alpha"]) for per_task in can.values() for e in per_task.values() if e["tau"] is not None})
    fixed_text = "; ".join(f"τ={t:g}, α={a:g}" for t, a in fixed) or "as in params can"
    lines = [
        "## CAN: what stands behind each +CAN score",
        "",
        "CAN re-normalises each uncertain prediction against a reference: the split's confident predictions "
        "(uncertainty < τ). `ref rows / min`: the reference's size and the minimum, max(can.min_reference, "
        f"can.min_reference_per_class × classes); {SMALL} below it (CAN still applied). The +CAN rows use Su's fixed "
        f"defaults ({fixed_text}); the τ and α picked on dev (can.select_on_dev) are shown on test_public only, the split they were not tuned on. "
        "Accuracies in %.",
        "",
        f"Su's defaults raised the accuracy on {c['helped']}, lowered it on {c['hurt']} and left it unchanged on {c['unchanged']} of {c['pairs']} model–task pairs; "
        f"the reference was below the minimum on {c['reference_too_small']} of them.",
        "",
        "| model | task | split | classes | ref rows / min | ref acc | acc before → after (Su's defaults) | fixed / broken | dev-picked τ, α | test_public acc before → after (dev-picked) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in dict.fromkeys(board["models"][r]["base"] for r in board["order"]):
        per_task = can.get(model) or {}
        for task, e in ((t, per_task[t]) for t in board["tasks"] if t in per_task):  # task order, also after a JSON round trip
            ref = "–" if e["reference_rows"] is None else f"{e['reference_rows']} / {_num(e['reference_min_rows'])}" + (f" {SMALL}" if e["reference_too_small"] else "")
            sel = e.get("dev_selected")
            picked = "–" if sel is None else f"τ={sel['tau']:g}, α={sel['alpha']:g}"
            test = (sel or {}).get("test_public")
            honest = "–" if sel is None else "no test_public split" if test is None else f"{_pct(test['accuracy_before'])} → {_pct(test['accuracy_after'])}" + (f" {SMALL}" if test["reference_too_small"] else "")
            lines.append(
                f"| {model} | {task} | {e['split']} | {_num(e['classes'])} | {ref} | {_pct(e['reference_accuracy'])} | "
                f"{_pct(e['accuracy_before'])} → {_pct(e['accuracy_after'])} | {_num(e['fixed'])} / {_num(e['broken'])} | {picked} | {honest} |"
            )
    return lines + [""]


def _num(v) -> str:
    return "–" if v is None else str(v)


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
    baselines = board.get("baselines") or {}
    for task, base in baselines.items():
        if base is not None:
            out[f"leaderboard.baseline.{task}"] = base["value"]
    for row, e in board["models"].items():
        out[f"leaderboard.{metric_key(row)}.tasks_at_or_below_baseline"] = sum(at_or_below(e["scores"][t].get("score"), baselines.get(t)) for t in board["tasks"])
    if board.get("can"):
        for name, n in can_counts(board["can"]).items():
            out[f"leaderboard.can.{name}"] = n
    for metric, ag in board["agreement"].items():
        if ag["identical"] is not None:
            out[f"leaderboard.agreement.{metric}.identical"] = float(ag["identical"])
    return out
