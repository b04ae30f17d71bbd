"""CAN: Classification with Alternating Normalization, Su's variant (techniques.md §1).

Jia et al., Findings EMNLP 2021 (arXiv 2109.13449); https://kexue.fm/archives/8728.

Algorithm
---------
``probs`` is an N×m matrix of softmax outputs, ``prior`` the class frequencies of the
*training* labels (any positive vector; it is normalised, and CAN is invariant to its scale).

1. **Uncertainty** of a row: take its top-k probabilities, renormalise them to sum to 1
   and compute their entropy divided by ``log k`` (so it lies in [0, 1]).
2. **Split**: rows with ``u < tau`` are *confident*: they are returned unchanged and form
   the reference matrix C (n×m, never updated). Rows with ``u >= tau`` are corrected.
3. **Correction**, for each uncertain row p separately, always against the original C::

       X = [C; p]
       repeat iters times:
           X = X ** alpha                                   # elementwise
           X[:, c] = X[:, c] / mean_rows(X[:, c]) * prior[c]  # column step
           X[i, :] = X[i, :] / sum(X[i, :])                 # row step
       p' = X[-1]

   (``zhnlp.tasks.can_reference.can_adjust_loop`` is this loop, literally; ``can_adjust`` computes the same numbers
   without it.)

Choices where the spec leaves room
----------------------------------
* **Zero probabilities**: entries below ``EPS = 1e-16`` in C and in the uncertain rows are
  raised to ``EPS`` before the correction (the official code's epsilon), so a class that
  no reference row and not the row itself supports gives no 0/0. Confident rows are
  returned exactly as given.
* **No confident rows**: the reference is the identity matrix I_m, as in the official code
  (``get_fixed_set``). The alternative, an empty reference, makes the column step map
  every uncertain row to the prior itself (each column's mean *is* that row's value), so
  every prediction would become ``argmax(prior)``; I_m instead leaves a mild correction
  ``p'_c ∝ prior_c · p_c^α / (1 + p_c^α)``.
* **All rows confident**: nothing changes (a copy is returned).
* Uncertain means ``u >= tau`` (Su: ``u < tau`` is confident), with one k (Su), not the
  official code's "any k in 2..m".

Vectorised form
---------------
*iters = 1* (closed form, techniques.md §1). With S_c = Σ_{i∈C} C_ic^α, the column mean of
``[C; p]^α`` is (S_c + p_c^α)/(n+1), so the last row after the column step is
(n+1)·prior_c·p_c^α/(S_c + p_c^α) and after the row step

    p'_c ∝ prior_c · p_c^α / (S_c + p_c^α).

The constant (n+1) and the use of mean vs sum cancel in the row step. ``can_apply`` reads
P once, in ~1 MB chunks (``_first_pass``): each chunk is copied into the output and, while
it is in cache, checked, its top k selected (np.partition, so the scores are bit-for-bit
today's), and per group of 8 chunks scored and its confident rows added to S by a masked
reduction over the clamped chunk (no fancy-indexed copies), row after row as before, so
S and the output are bit-for-bit today's (a BLAS product would be ~10% faster, not exact).
The input checks are cheap supersets (row sums by BLAS, the chunk's minimum); a flagged
block gets the exact checks, so a bad row gets the same message as ever. A second, batched
pass corrects the uncertain rows, O(m) each. Inputs over ``BLOCK_ROWS`` rows run both passes
by blocks on threads; S adds the blocks' partial sums in block order, so the result depends on
the row count only (within ~1e-15 of one pass), never on the thread count. On 1M × 119 and
2 cores, one thread is 2.0x faster than the separate passes
(``zhnlp.tasks.can_reference.can_apply_before_fusion``, for the tests and the benchmark) and 4x
one ``P.copy()``; two threads are 3.6x and 2.3x (0.6 s). np.partition's per-row selection is the
largest single cost, and the fresh output's page faults the next.

*iters > 1* (exact, vectorised over uncertain rows). For one uncertain row, every later
state of the C block has the form ``X_ic = A_ic · E_c / W_i``: A = C^(α^t) is the *same for
every uncertain row* (shared, n×m), E is an m-vector of accumulated column factors (one
per uncertain row) and W_i = Σ_c A_ic E_c is the row normaliser. Proof by induction: a
round raises X to α (A→A^α, E→E^α, W→W^α), multiplies column c by D_c = prior_c/colsum_c
(E→E^α·D) and renormalises rows (W→Σ_c A^α_ic E^α_c D_c, whatever it was before). The
round's column sums, which are where the uncertain row x enters, are

    colsum_c = Σ_i (A_ic E_c / W_i)^α + x_c^α = E_c^α · (W^-α @ A^α)_c + x_c^α,

so for a batch of B uncertain rows a round is two matrix products, ``W = E @ A^T`` (B×m by
m×n) and ``W^-α @ A^α`` (B×n by n×m), plus O(B·m) for x itself. Round 1 starts from
A = C, E = 1, W = 1 (exactly C, without assuming its rows sum to 1), so its column sums
are S_c + x_c^α. Per-row scalings are free (a scalar on a row of A is absorbed by W, a
scalar on E cancels between E and W), so A's rows and each E are rescaled to max 1 every
round to keep them in range. The cost is O(iters · B·n·m) flops, as for the loop, but in
BLAS instead of (n+1)×m temporaries per row; memory is bounded by processing uncertain
rows in chunks of at most ``budget / (n · 8 bytes)`` (the B×n matrix W dominates).
Where extreme powers (alpha**iters large, probabilities near EPS) push W outside
[1e-250, 1e250] for some uncertain row, that row is recomputed with the literal loop
(``CanResult.loop_rows`` counts them; none for iters <= 3, alpha <= 2 in the tests).
For very large reference sets with iters > 1, subsample C first (the official code keeps
a stratified max(5m, 1000) confident rows); that is the caller's choice, not done here.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from zhnlp.config import ConfigError, in_range
from zhnlp.tasks import can_inputs  # CHUNK_ROWS and check_rows looked up at call time: the tests vary them
from zhnlp.tasks.can_inputs import SUM_TOLERANCE, as_matrix, check_params, validate_inputs

EPS = 1e-16
PASS_ROWS = 1024  # rows per chunk of the fused pass (1024 × 119 × 8 B ≈ 1 MB: it and its working copy stay in cache)
GROUP_CHUNKS = 8  # chunks per group of the fused pass (≈ 8 MB: still in L3 when S is added)
CHUNK_BYTES = 64 * 2**20  # budget for the B×n matrices of the iters > 1 path
# Rows per block of the fused pass. Each block keeps its own S partial sum, and S adds the partials in block
# order, so the bits depend on the row count alone, never on how many threads ran (an input of at most one
# block gives the single-pass bits exactly). Blocks run on up to MAX_WORKERS threads: numpy releases the GIL
# in the copies, np.partition and the reductions (1M × 119 on 2 cores: first pass 0.81 s -> 0.44 s).
BLOCK_ROWS = 65536  # a multiple of PASS_ROWS × GROUP_CHUNKS and of can_inputs.CHUNK_ROWS
MAX_WORKERS = 4
SAFE_MIN, SAFE_MAX = 1e-250, 1e250  # the factored iters > 1 form stays well inside float64


@dataclass(frozen=True)
class CanConfig:
    """The ``can`` params: top-k of the uncertainty score, its threshold, the power and the rounds."""

    k: int = 3  # a task with fewer classes uses k = its class count
    tau: float = 0.9
    alpha: float = 1.0
    iters: int = 1

    def validate(self, where: str) -> None:
        if self.k < 2:
            raise ConfigError(f"{where}.k: {self.k!r} is not allowed; use an integer >= 2")
        in_range(f"{where}.tau", self.tau, 0.0, 1.0)
        if self.tau <= 0:
            raise ConfigError(f"{where}.tau: {self.tau!r} is not allowed; use a number in (0, 1]")
        if not (0 < self.alpha < math.inf):
            raise ConfigError(f"{where}.alpha: {self.alpha!r} is not allowed; use a positive, finite number")
        if self.iters < 1:
            raise ConfigError(f"{where}.iters: {self.iters!r} is not allowed; use an integer >= 1")


@dataclass(frozen=True)
class CanResult:
    probs: np.ndarray  # N×m, the adjusted probabilities (confident rows as given)
    uncertain: np.ndarray  # N bools: rows that were corrected
    uncertainty: np.ndarray  # N floats in [0, 1]
    reference: str  # "confident" (n confident rows) or "identity" (none were confident)
    loop_rows: int = 0  # uncertain rows computed by the literal loop (factored form out of range)


# --------------------------------------------------------------------------- uncertainty


def uncertainty(probs, k: int = 3) -> np.ndarray:
    """Su's score per row: entropy of the renormalised top-k probabilities / log k, in [0, 1]."""
    P = np.asarray(probs, dtype=np.float64)
    if P.ndim != 2 or not 2 <= k <= P.shape[1]:
        raise ValueError(f"uncertainty needs a 2-D probs array and 2 <= k <= m; got shape {P.shape}, k={k!r}")
    n = P.shape[0]
    out = np.empty(n)
    for start in range(0, n, can_inputs.CHUNK_ROWS):
        block = P[start : start + can_inputs.CHUNK_ROWS]
        out[start : start + block.shape[0]] = _top_k_entropy(_top_k(block, k), k)
    return np.clip(out, 0.0, 1.0)


def _top_k(block: np.ndarray, k: int) -> np.ndarray:
    """The k largest entries of each row (B×k, in np.partition's order: the scores depend on it in the last bit).

    Tried on 1M × 119 in 1024-row chunks: 3 argmax knock-out passes take as long (and change
    the order), a lane-wise max prefilter twice as long (numpy reduces a middle axis slowly).
    """
    m = block.shape[1]
    return block if k == m else np.partition(block, m - k, axis=1)[:, m - k :]


def _top_k_entropy(top: np.ndarray, k: int) -> np.ndarray:
    """Entropy of each row of ``top`` renormalised to sum 1, divided by log k (not clipped)."""
    top = top / top.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(top > 0, top * np.log(top), 0.0)
    return -plogp.sum(axis=1) / math.log(k)


# --------------------------------------------------------------------------- CAN


def can_apply(
    probs, prior, k: int = 3, tau: float = 0.9, alpha: float = 1.0, iters: int = 1, workers: int | None = None
) -> CanResult:
    """CAN, vectorised; returns the adjusted probabilities with the uncertain mask and scores.

    ``workers``: threads for inputs over :data:`BLOCK_ROWS` rows (default: the usable cores, at most
    :data:`MAX_WORKERS`). The result is the same for every value."""
    P = as_matrix(probs)
    try:
        q = check_params(P.shape[1], prior, k, tau, alpha, iters)
    except ValueError:
        validate_inputs(P, prior, k, tau, alpha, iters)  # a bad probs row is reported first, as always
        raise
    alpha = float(alpha)
    workers = default_workers() if workers is None else max(1, int(workers))
    out, u, S = _first_pass(P, k, tau, alpha, sums=iters == 1, workers=workers)
    uncertain = u >= tau
    unc_idx = np.flatnonzero(uncertain)
    n_conf = P.shape[0] - unc_idx.size
    reference = "confident" if n_conf else "identity"
    if unc_idx.size == 0:
        return CanResult(out, uncertain, u, reference)

    if iters == 1:
        if n_conf == 0:
            S = _reference_matrix(P, unc_idx[:0]).__pow__(alpha).sum(axis=0)
        _correct_once(P, q, alpha, S, unc_idx, out, workers)
        return CanResult(out, uncertain, u, reference)

    loop_rows = _correct_all_iterated(P, q, alpha, iters, uncertain, out)
    return CanResult(out, uncertain, u, reference, loop_rows)


def _correct_all_iterated(P, q, alpha: float, iters: int, uncertain: np.ndarray, out: np.ndarray) -> int:
    """iters > 1: write the corrected uncertain rows into ``out``; returns how many took the loop."""
    unc_idx = np.flatnonzero(uncertain)
    conf_idx = np.flatnonzero(~uncertain)
    C = _reference_matrix(P, conf_idx)
    S = (C**alpha).sum(axis=0)
    # The shared C-block factors of every round: As[0] = C^α, As[t] = As[t-1]^α, each row
    # rescaled to max 1 (the scale r is kept: it enters the next round's column sums).
    As, scales = [], []
    A = C
    for _ in range(iters):
        A = A**alpha
        r = A.max(axis=1)
        A = A / r[:, None]
        As.append(A)
        scales.append(r)
    batch = max(1, min(unc_idx.size, CHUNK_BYTES // (8 * C.shape[0])))
    loop_rows = 0
    for start in range(0, unc_idx.size, batch):
        idx = unc_idx[start : start + batch]
        with np.errstate(all="ignore"):
            x, unsafe = _correct_iterated(np.maximum(P[idx], EPS), q, alpha, S, As, scales)
        out[idx] = x
        if unsafe.any():  # extreme alpha**iters underflowed the factored form: redo those rows literally
            out[idx[unsafe]] = _loop_rows(C, P[idx[unsafe]], q, alpha, iters)
            loop_rows += int(unsafe.sum())
    return loop_rows


def default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def _in_threads(fn, parts: list, workers: int) -> list:
    """``[fn(part) for part in parts]``, on up to ``workers`` threads; the first failing part's error is raised."""
    if workers <= 1 or len(parts) <= 1:
        return [fn(part) for part in parts]
    with ThreadPoolExecutor(min(workers, len(parts))) as pool:
        return list(pool.map(fn, parts))


def _correct_once(P, q, alpha: float, S: np.ndarray, unc_idx: np.ndarray, out: np.ndarray, workers: int = 1) -> None:
    """iters = 1: out[i] = normalise(q · x^α / (S + x^α)), x = max(P[i], EPS), for i in unc_idx, in cache-sized
    batches; rows are independent, so ``workers`` threads each take a contiguous share (same bits)."""
    if workers > 1 and unc_idx.size > BLOCK_ROWS:
        shares = np.array_split(unc_idx, min(workers, -(-unc_idx.size // BLOCK_ROWS)))
        _in_threads(lambda idx: _correct_once(P, q, alpha, S, idx, out), shares, workers)
        return
    rows = min(PASS_ROWS, unc_idx.size)
    x_buf, den_buf = np.empty((rows, P.shape[1])), np.empty((rows, P.shape[1]))
    for start in range(0, unc_idx.size, rows):
        idx = unc_idx[start : start + rows]
        x = np.take(P, idx, axis=0, out=x_buf[: idx.size])
        np.maximum(x, EPS, out=x)
        if alpha != 1.0:
            x **= alpha
        den = np.add(S, x, out=den_buf[: idx.size])
        x *= q
        x /= den  # (q · x^α) / (S + x^α), as the formula reads
        x /= x.sum(axis=1, keepdims=True)
        out[idx] = x


def _first_pass(P: np.ndarray, k: int, tau, alpha: float, sums: bool, workers: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over P: (copy of P, uncertainty scores, S_c = Σ_confident max(P, EPS)^α), by blocks of
    :data:`BLOCK_ROWS` rows on up to ``workers`` threads (:func:`_first_pass_rows`); S sums the blocks' partial
    sums in block order."""
    n, m = P.shape
    out, u = np.empty((n, m)), np.empty(n)
    blocks = [(lo, min(n, lo + BLOCK_ROWS)) for lo in range(0, n, BLOCK_ROWS)] or [(0, 0)]
    try:
        partials = _in_threads(lambda b: _first_pass_rows(P, b[0], b[1], k, tau, alpha, sums, out, u), blocks, workers)
    except ValueError:
        if len(blocks) > 1:  # the message names the first bad row of all, as one pass would
            for s in range(0, n, can_inputs.CHUNK_ROWS):
                can_inputs.check_rows(P, s, s + can_inputs.CHUNK_ROWS)
        raise
    return out, u, functools.reduce(np.add, partials) if sums else np.zeros(m)


def _first_pass_rows(P: np.ndarray, lo: int, hi: int, k: int, tau, alpha: float, sums: bool, out: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Rows [lo, hi) of the pass into ``out`` and ``u``; returns their S partial sum.

    Each cache-sized chunk is copied into the output and, while it is in cache, checked (row
    sums by a matrix-vector product, a NaN or negative entry by the chunk's minimum: a
    superset of the exact checks, which then run on the flagged blocks) and its top k
    selected. Per group of chunks (still in L3) the scores are computed at once and the
    confident rows of each clamped chunk added to S (``_RowSums``: today's order, no copies).
    """
    m = P.shape[1]
    n = hi - lo
    rows = max(1, min(n, PASS_ROWS))
    group = rows * max(1, GROUP_CHUNKS)
    work, ones = np.empty((rows, m)), np.ones(m)  # work: for np.partition in place
    tops = np.empty((min(n, group), k))
    acc = _RowSums(m, rows)
    slack = SUM_TOLERANCE - 1e-12  # covers the different rounding of the matrix-vector row sums
    checked = lo  # rows [lo, checked) passed the exact checks
    for g0 in range(lo, hi, group):
        g1 = min(hi, g0 + group)
        for start in range(g0, g1, rows):
            stop = min(g1, start + rows)
            block = out[start:stop]
            np.copyto(block, P[start:stop])
            row_sums = block @ ones
            if not (block.min() >= 0 and row_sums.min() >= 1 - slack and row_sums.max() <= 1 + slack):
                for s in range(max(checked, start // can_inputs.CHUNK_ROWS * can_inputs.CHUNK_ROWS), stop, can_inputs.CHUNK_ROWS):
                    can_inputs.check_rows(P, s, s + can_inputs.CHUNK_ROWS)
                    checked = s + can_inputs.CHUNK_ROWS
            if k < m:  # np.partition's own copy, into a reused buffer (same selection, same order)
                w = work[: stop - start]
                np.copyto(w, block)
                w.partition(m - k, axis=1)
                tops[start - g0 : stop - g0] = w[:, m - k :]
            else:
                tops[start - g0 : stop - g0] = block
        ug = u[g0:g1]
        ug[:] = _top_k_entropy(tops[: g1 - g0], k)  # once per group: ~0.09 s less than per chunk on 1M rows
        np.clip(ug, 0.0, 1.0, out=ug)
        if sums:
            confident = ug < tau
            for start in range(g0, g1, rows):
                stop = min(g1, start + rows)
                c = np.maximum(out[start:stop], EPS, out=acc.rows(stop - start))
                if alpha != 1.0:
                    c **= alpha
                acc.add(confident[start - g0 : stop - g0])
    return acc.total()


class _RowSums:
    """Σ of the confident rows, in today's order (row after row within blocks of CHUNK_ROWS
    confident rows, block sums added to S), so S and the corrected rows are today's bits.

    ``rows(b)`` is where the caller writes a chunk; ``add(mask)`` adds its rows where mask is
    set, by a masked reduction that starts from the running sum in the row above the chunk.
    """

    def __init__(self, m: int, rows: int):
        self.S, self.acc, self.filled = np.zeros(m), np.zeros(m), 0
        self.buf, self.keep = np.empty((rows + 1, m)), np.empty(rows + 1, dtype=bool)

    def rows(self, b: int) -> np.ndarray:
        return self.buf[1 : 1 + b]

    def add(self, mask: np.ndarray) -> None:
        end, keep, lo = 1 + mask.shape[0], self.keep, 0
        keep[1:end] = mask
        while True:
            sel = np.flatnonzero(keep[lo + 1 : end])
            room = can_inputs.CHUNK_ROWS - self.filled
            hi = end if sel.size < room else lo + 2 + int(sel[room - 1])
            self.buf[lo], keep[lo] = self.acc, True  # row lo is spent (or the slot above the chunk)
            self.acc = np.add.reduce(self.buf[lo:hi], axis=0, where=keep[lo:hi, None])
            if sel.size < room:
                self.filled += sel.size
                return
            self.S += self.acc  # a block of CHUNK_ROWS confident rows is complete
            self.acc, self.filled, lo = np.zeros_like(self.acc), 0, hi - 1

    def total(self) -> np.ndarray:
        return self.S + self.acc if self.filled else self.S


def _correct_iterated(x, q, alpha, S, As, scales) -> tuple[np.ndarray, np.ndarray]:
    """``len(As)`` CAN rounds for a batch of B uncertain rows x (B×m); see the module docstring.

    After round t the C block of row b's matrix is ``As[t-1]_ic · E_bc / W_bi``. Returns the
    corrected rows and a mask of rows whose W left the safe floating-point range (only for
    extreme alpha**iters, e.g. alpha=2, iters=5 on probabilities near 1e-16); the caller
    recomputes those with the literal loop.
    """
    unsafe = np.zeros(x.shape[0], dtype=bool)
    # round 1: the matrix is [C; x]; its column sums are S + x^α
    xa = x**alpha
    D = q / (S + xa)
    x = xa * D
    x /= x.sum(axis=1, keepdims=True)
    E = D / D.max(axis=1, keepdims=True)
    for t in range(1, len(As)):
        W = E @ As[t - 1].T  # B×n: row sums of the current C block, before normalising
        unsafe |= ~(W.min(axis=1) > SAFE_MIN)
        W = np.maximum(W, SAFE_MIN)  # those rows are redone anyway; keep the batch finite
        Ea = E**alpha
        xa = x**alpha
        # Σ_i (As[t-1]_ic E_c / W_i)^α = E_c^α Σ_i As[t]_ic · scales[t]_i · W_i^-α
        Wr = W ** (-alpha) * scales[t]
        unsafe |= ~(Wr.max(axis=1) < SAFE_MAX)
        colsum = Ea * (np.minimum(Wr, SAFE_MAX) @ As[t]) + xa
        D = q / colsum
        x = xa * D
        x /= x.sum(axis=1, keepdims=True)
        E = Ea * D
        E /= E.max(axis=1, keepdims=True)
    unsafe |= ~np.isfinite(x).all(axis=1)
    return x, unsafe


def _loop_rows(C: np.ndarray, rows: np.ndarray, q: np.ndarray, alpha: float, iters: int) -> np.ndarray:
    """The spec's loop for each row of ``rows`` (raw probabilities) against the reference C."""
    out = np.empty_like(rows)
    for j, p in enumerate(rows):
        X = np.concatenate([C, np.maximum(p, EPS)[None, :]], axis=0)
        for _ in range(iters):
            X = X**alpha
            X = X / X.mean(axis=0, keepdims=True) * q[None, :]
            X = X / X.sum(axis=1, keepdims=True)
        out[j] = X[-1]
    return out


def _reference_matrix(P: np.ndarray, conf_idx: np.ndarray) -> np.ndarray:
    """C: the confident rows with EPS for zeros, or I_m (with EPS) when there are none."""
    if conf_idx.size == 0:
        return np.maximum(np.eye(P.shape[1]), EPS)
    return np.maximum(P[conf_idx], EPS)


def can_adjust(probs, prior, k: int = 3, tau: float = 0.9, alpha: float = 1.0, iters: int = 1) -> np.ndarray:
    """CAN-adjusted probabilities (a new N×m float64 array; confident rows unchanged)."""
    return can_apply(probs, prior, k=k, tau=tau, alpha=alpha, iters=iters).probs
