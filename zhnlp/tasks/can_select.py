"""CAN's settings: Su's fixed defaults, and τ/α picked on dev by a grid search as the official code does.

techniques.md §1: Su runs CAN with k=3, τ=0.9, α=1, iters=1 ("basically optimal"); the official code
(KMnP/can) tunes τ and α on the validation split. :class:`CanParams` is the ``can`` params section:
the fixed settings (:meth:`CanParams.fixed`, what the can stage writes as predictions), the size
below which a reference set is flagged, and the dev grid. :func:`select_on_dev` runs every grid point
on the dev predictions and picks the best by dev accuracy; ties go to the most conservative setting
(fewest changed dev predictions, then fewest corrected rows, then the larger τ, then α nearer 1; α only
acts on corrected rows), then to the earlier grid point. Its dev accuracy is
therefore optimistic: only a split the grid never saw (test_public) says what the picked setting is worth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from zhnlp.config import ConfigError
from zhnlp.tasks.can import CanConfig, can_apply
from zhnlp.tasks.can_report import split_metrics

SELECTED_BY = ("dev accuracy; ties: fewest changed dev predictions, then fewest corrected (uncertain) dev rows, "
               "then the larger τ, then α nearer 1, then grid order")


@dataclass(frozen=True)
class CanParams(CanConfig):
    """The ``can`` params: CAN's fixed settings (those of :class:`CanConfig`), plus the reference-size threshold and the dev grid."""

    # A reference (the confident rows) below max(min_reference, min_reference_per_class × classes) rows is flagged.
    min_reference: int = 30
    min_reference_per_class: float = 2.0
    select_on_dev: bool = True
    tau_grid: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
    alpha_grid: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)

    def fixed(self) -> CanConfig:
        """The fixed settings alone, as :func:`zhnlp.tasks.can.can_apply` takes them."""
        return CanConfig(**{f.name: getattr(self, f.name) for f in fields(CanConfig)})

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.min_reference < 0:
            raise ConfigError(f"{where}.min_reference: {self.min_reference!r} is not allowed; use an integer >= 0")
        if not (0 <= self.min_reference_per_class < math.inf):
            raise ConfigError(f"{where}.min_reference_per_class: {self.min_reference_per_class!r} is not allowed; use a finite number >= 0")
        if self.select_on_dev:
            for name in ("tau_grid", "alpha_grid"):
                if not getattr(self, name):
                    raise ConfigError(f"{where}.{name}: empty; list at least one value (or set {where}.select_on_dev: false)")
        for i, tau in enumerate(self.tau_grid):
            if not 0 < tau <= 1:
                raise ConfigError(f"{where}.tau_grid[{i}]: {tau!r} is not allowed; use numbers in (0, 1]")
        for i, alpha in enumerate(self.alpha_grid):
            if not 0 < alpha < math.inf:
                raise ConfigError(f"{where}.alpha_grid[{i}]: {alpha!r} is not allowed; use positive, finite numbers")

    def min_reference_rows(self, classes: int) -> int:
        """The fewest confident rows a reference may have unflagged, for a task with ``classes`` classes."""
        return max(int(self.min_reference), math.ceil(self.min_reference_per_class * classes))


def select_on_dev(probs, prior, labels, *, k: int, iters: int, tau_grid, alpha_grid) -> tuple[dict, list[dict]]:
    """Every (τ, α) of the grid on the dev predictions: ({"tau", "alpha"} picked, one row per grid point).

    A row has the grid point, dev accuracy, its number of right predictions, the predictions it
    changed and the reference size (confident rows) it used.
    """
    P = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    before = P.argmax(axis=1)
    grid = []
    for tau in tau_grid:
        for alpha in alpha_grid:
            res = can_apply(P, prior, k=k, tau=float(tau), alpha=float(alpha), iters=iters)
            pred = res.probs.argmax(axis=1)
            right = int((pred == y).sum())
            grid.append({
                "tau": float(tau),
                "alpha": float(alpha),
                "dev_accuracy": right / len(y) if len(y) else None,
                "dev_right": right,
                "dev_changed": int((pred != before).sum()),
                "reference_rows": int((~res.uncertain).sum()),
            })
    if not grid:
        raise ValueError("select_on_dev needs a non-empty tau_grid and alpha_grid")
    n = len(y)
    best = max(range(len(grid)), key=lambda i: (grid[i]["dev_right"], -grid[i]["dev_changed"], grid[i]["reference_rows"] - n,
                                                grid[i]["tau"], -abs(math.log(grid[i]["alpha"])), -i))
    return {"tau": grid[best]["tau"], "alpha": grid[best]["alpha"]}, grid


def dev_selected(splits: Mapping[str, tuple], prior, params: CanParams, k: int) -> dict:
    """τ/α picked on ``splits["dev"]`` ((probs, labels)), then CAN with them on dev and test_public.

    Returns the pick, how it was made, the grid rows and each split's ``split_metrics`` (None for a split
    that is absent). ``unbiased_split`` names the split that estimates the pick fairly (None without test_public).
    """
    probs, labels = splits["dev"]
    pick, grid = select_on_dev(probs, prior, labels, k=k, iters=params.iters, tau_grid=params.tau_grid, alpha_grid=params.alpha_grid)
    out = pick | {
        "k": k,
        "iters": params.iters,
        "selected_by": SELECTED_BY,
        "unbiased_split": "test_public" if "test_public" in splits else None,
        "grid": grid,
    }
    min_rows = params.min_reference_rows(np.asarray(probs).shape[1])
    for split in ("dev", "test_public"):
        if split in splits:
            p, y = splits[split]
            out[split] = split_metrics(p, prior, y, k=k, tau=pick["tau"], alpha=pick["alpha"], iters=params.iters, min_rows=min_rows)[1]
        else:
            out[split] = None
    return out
