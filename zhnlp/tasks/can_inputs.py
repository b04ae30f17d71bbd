"""CAN's input checks: a one-line ValueError naming the first bad row of ``probs``, or the bad prior or setting.

:func:`zhnlp.tasks.can.can_apply` runs cheap checks inside its fused pass and calls these exact ones
only for the blocks those flag (and :func:`~zhnlp.tasks.can.can_adjust` calls :func:`validate_inputs`
first), so every caller gets the same messages: non-finite values first, then negative ones, then
row sums off 1 by more than :data:`SUM_TOLERANCE` (logits passed for probabilities).
"""

from __future__ import annotations

import math

import numpy as np

SUM_TOLERANCE = 1e-6
CHUNK_ROWS = 32768  # rows per block of the exact input checks (32768 × 119 × 8 B ≈ 31 MB per temporary)


def validate_inputs(probs, prior, k, tau, alpha, iters) -> tuple[np.ndarray, np.ndarray]:
    """(probs as float64, prior normalised to sum 1), or a ValueError saying what is wrong.

    The exact checks, in order and in blocks of :data:`CHUNK_ROWS`; ``can_apply`` runs cheaper ones in its
    fused pass and comes here only for the blocks those flag, so the messages are these.
    """
    P = as_matrix(probs)
    for start in range(0, P.shape[0], CHUNK_ROWS):
        check_rows(P, start, start + CHUNK_ROWS)
    return P, check_params(P.shape[1], prior, k, tau, alpha, iters)


def as_matrix(probs) -> np.ndarray:
    P = np.asarray(probs)
    if P.ndim != 2:
        raise ValueError(f"probs must be a 2-D array (rows × classes); got shape {P.shape}")
    if not (np.issubdtype(P.dtype, np.floating) or np.issubdtype(P.dtype, np.integer)):
        raise ValueError(f"probs must be numeric; got dtype {P.dtype}")
    P = P.astype(np.float64, copy=False)
    if P.shape[1] < 2:
        raise ValueError(f"probs needs at least 2 classes (columns); got {P.shape[1]}")
    return P


def check_rows(P: np.ndarray, start: int, stop: int) -> None:
    """The exact checks of rows [start, stop): non-finite first, then negative, then the row sums."""
    block = P[start:stop]
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        row = start + int(np.argmin(finite))
        raise ValueError(f"probs row {row} has a non-finite value (NaN or inf): {short(P[row])}")
    nonneg = (block >= 0).all(axis=1)
    if not nonneg.all():
        row = start + int(np.argmin(nonneg))
        raise ValueError(f"probs row {row} has a negative value ({float(P[row].min())!r}); probabilities must be >= 0")
    sums = block.sum(axis=1)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        row = start + int(np.argmax(off))
        raise ValueError(
            f"probs row {row} sums to {float(sums[row - start])!r}, not 1 (tolerance {SUM_TOLERANCE:g}); "
            "pass softmax probabilities, not logits"
        )


def check_params(m, prior, k, tau, alpha, iters) -> np.ndarray:
    """The prior normalised to sum 1, after checking it and k, tau, alpha, iters against m classes."""
    q = np.asarray(prior, dtype=np.float64)
    if q.ndim != 1 or q.shape[0] != m:
        raise ValueError(f"prior must have one entry per class: probs has {m} classes, prior has shape {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError(f"prior has a non-finite value: {short(q)}")
    if (q <= 0).any():
        bad = int(np.argmax(q <= 0))
        raise ValueError(
            f"prior must be positive: entry {bad} is {float(q[bad])!r} (a class with no training examples: smooth the counts first)"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= m:
        raise ValueError(f"k must be an integer in [2, m={m}]; got {k!r}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.number)) or not 0 < float(tau) <= 1:
        raise ValueError(f"tau must be in (0, 1]; got {tau!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not (0 < float(alpha) < math.inf):
        raise ValueError(f"alpha must be positive and finite; got {alpha!r}")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1; got {iters!r}")
    return q / q.sum()


def short(row: np.ndarray) -> str:
    text = np.array2string(row[:8], precision=4)
    return text if row.shape[0] <= 8 else text[:-1] + " ...]"
