"""CAN references for tests and benchmarks: the spec's per-row loop, literally, and ``can_apply``
as it was before the fused single pass (``zhnlp.tasks.can``), kept verbatim.

``tests/test_can.py`` checks ``can_apply`` against both (bit for bit against the second);
``python -m benchmarks bench_can`` times ``can_apply`` against both on 1,000,000 × 119.
"""

from __future__ import annotations

import numpy as np

from zhnlp.tasks import can_inputs  # CHUNK_ROWS read at call time: the tests vary it for both implementations
from zhnlp.tasks.can import (
    EPS,
    CanResult,
    _correct_all_iterated,
    _loop_rows,
    _reference_matrix,
    uncertainty,
)
from zhnlp.tasks.can_inputs import validate_inputs


def can_adjust_loop(probs, prior, k: int = 3, tau: float = 0.9, alpha: float = 1.0, iters: int = 1) -> np.ndarray:
    """The reference implementation: the spec's per-row loop, literally. O(N_uncertain·n·m·iters)."""
    P, q = validate_inputs(probs, prior, k, tau, alpha, iters)
    uncertain = uncertainty(P, k) >= tau
    C = _reference_matrix(P, np.flatnonzero(~uncertain))
    out = P.copy()
    idx = np.flatnonzero(uncertain)
    out[idx] = _loop_rows(C, P[idx], q, float(alpha), iters)
    return out


def can_apply_before_fusion(probs, prior, k: int = 3, tau: float = 0.9, alpha: float = 1.0, iters: int = 1) -> CanResult:
    """``can_apply`` as it was before the fused pass (separate validation, scoring, copy and
    S passes, fancy-indexed copies), kept verbatim."""
    P, q = validate_inputs(probs, prior, k, tau, alpha, iters)
    alpha = float(alpha)
    u = uncertainty(P, k)
    uncertain = u >= tau
    out = P.copy()
    unc_idx = np.flatnonzero(uncertain)
    conf_idx = np.flatnonzero(~uncertain)
    reference = "confident" if conf_idx.size else "identity"
    if unc_idx.size == 0:
        return CanResult(out, uncertain, u, reference)
    if iters > 1:  # unchanged code, shared with can_apply
        return CanResult(out, uncertain, u, reference, _correct_all_iterated(P, q, alpha, iters, uncertain, out))
    S = _power_sums(P, conf_idx, alpha)
    for start in range(0, unc_idx.size, can_inputs.CHUNK_ROWS):
        idx = unc_idx[start : start + can_inputs.CHUNK_ROWS]
        xa = np.maximum(P[idx], EPS) ** alpha
        new = q * xa / (S + xa)
        out[idx] = new / new.sum(axis=1, keepdims=True)
    return CanResult(out, uncertain, u, reference)


def _power_sums(P: np.ndarray, conf_idx: np.ndarray, alpha: float) -> np.ndarray:
    """S_c = Σ_{i∈C} C_ic^α, streamed over the confident rows (C is never materialised)."""
    if conf_idx.size == 0:
        return _reference_matrix(P, conf_idx).__pow__(alpha).sum(axis=0)
    S = np.zeros(P.shape[1])
    for start in range(0, conf_idx.size, can_inputs.CHUNK_ROWS):
        S += (np.maximum(P[conf_idx[start : start + can_inputs.CHUNK_ROWS]], EPS) ** alpha).sum(axis=0)
    return S
