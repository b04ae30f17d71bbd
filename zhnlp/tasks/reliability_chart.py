"""One PNG per task: reliability diagrams before and after CAN, with the rows behind every bin.

A panel per model (on the split the leaderboard reports): accuracy against mean confidence per bin, before
(grey) and after CAN (colour), over the diagonal of perfect calibration, and under them the number of rows in
each bin, so a point made of three rows is not read like one made of three hundred. Written without the
matplotlib version in its metadata, so the same curves give the same bytes (``dvc plots show`` shows it as an
image; the can stage logs it to MLflow too).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

STYLE = {"before": ("0.45", "o", "before CAN"), "after": ("tab:blue", "s", "after CAN")}


def render_reliability(task: str, curves: Mapping[str, Mapping[str, Mapping[str, dict]]], path: Path, note: str = "") -> None:
    """``curves``: {model: {split: {"before": reliability_bins(...), "after": ...}}}; an empty mapping draws ``note``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(model, split, pair) for model, per_split in curves.items() for split, pair in per_split.items()]
    cols = max(1, min(3, len(panels)))
    rows = max(1, -(-len(panels) // cols))
    fig = Figure(figsize=(4.2 * cols, 4.6 * rows), dpi=100)
    FigureCanvasAgg(fig)
    if not panels:
        fig.text(0.5, 0.5, note or f"{task}: no reliability diagram", ha="center", va="center", wrap=True)
    grid = fig.add_gridspec(rows * 4, cols, hspace=0.9)
    for i, (model, split, pair) in enumerate(panels):
        r, c = divmod(i, cols)
        ax = fig.add_subplot(grid[r * 4 : r * 4 + 3, c])
        bars = fig.add_subplot(grid[r * 4 + 3, c], sharex=ax)
        ax.plot([0, 1], [0, 1], color="0.8", linestyle="--", linewidth=1)
        width = 0.4 / max(1, len(pair["before"]["bins"]))
        for offset, (when, rel) in zip((-width / 2, width / 2), pair.items()):
            color, marker, label = STYLE[when]
            pts = [(b["confidence"], b["accuracy"]) for b in rel["bins"] if b["count"]]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, color=color, marker=marker, markersize=4, label=f"{label} (ECE {rel['ece']:.3f})")
            centres = [(b["lower"] + b["upper"]) / 2 + offset for b in rel["bins"]]
            bars.bar(centres, [b["count"] for b in rel["bins"]], width=width, color=color)
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{model} / {split}")
        ax.legend(fontsize=7, loc="upper left")
        ax.tick_params(labelbottom=False)
        bars.set(xlabel="confidence (max probability)", ylabel="rows")
    fig.suptitle(f"{task}: reliability before and after CAN", fontsize=11)
    fig.savefig(path, metadata={"Software": None})
