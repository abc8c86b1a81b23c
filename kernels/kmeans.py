"""Kernels of k-means' Lloyd iterations (pure functions, no MPI).

:func:`lloyd_pass` is one fused pass over a rank's rows for one iteration of ``G``
independent runs at once (``--n-init``): the distances to each run's ``k`` centers as
``||x||² − 2 x·c + ||c||²`` (the row norms computed once, :func:`row_norms`; rows in
blocks, the innermost loop over a block's rows, vectorised without reordering any sum),
the nearest center, and the run's fixed-point sums, counts and inertia accumulated in the
same pass. Every row's arithmetic is the same whichever rank or position holds it, and the
sums are integer-valued doubles (``rint(x · scale)``), so the total over the ranks is the
same bits for any number of ranks. One thread per rank (no ``parallel=True``): a rank is
one core.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def row_norms(X, out):  # pragma: no cover - numba
    """``out[i] = Σ_j X[i, j]²`` in float64, summed in feature order (the same bits for a
    row wherever it sits)."""
    for i in range(X.shape[0]):
        s = 0.0
        for j in range(X.shape[1]):
            v = np.float64(X[i, j])
            s += v * v
        out[i] = s


#: Rows per block of :func:`lloyd_pass` (the block's features, transposed, stay in the L1
#: cache).
BLOCK = 128


@njit(cache=True, nogil=True)
def lloyd_pass(X, norms, centers, center_norms, k, active, scale, inertia_scale,
               sums, counts, inertia):  # pragma: no cover - numba
    """One Lloyd pass of ``G = centers.shape[0] // k`` runs over the rows ``X`` (n, d).

    ``norms``: the rows' squared norms (:func:`row_norms`); ``centers`` (G·k, d): the runs'
    centers, run after run; ``center_norms`` (G·k): their squared norms; ``active`` (G,
    bool): the runs still iterating (the others are skipped). Adds, for each active run
    ``g``, to ``sums`` (G·k, d) the rows' fixed-point features ``rint(x · scale)`` per
    nearest center (lowest index on ties), to ``counts`` (G·k) the rows per center and to
    ``inertia[g]`` the fixed-point squared distances ``rint(dist · inertia_scale)``
    (distances below 0 from rounding count as 0).

    Rows go in blocks of :data:`BLOCK`, transposed so the innermost loops run over the
    block's rows (vectorised), four features per sweep; dot products are in the rows'
    precision, each summed in feature order, so a row's distances do not depend on where
    the row sits.
    """
    n, d = X.shape
    runs = centers.shape[0] // k
    xt = np.empty((d, BLOCK), X.dtype)
    acc = np.empty(BLOCK, X.dtype)
    ct = X.dtype.type
    zero = ct(0)
    best = np.empty(BLOCK)
    arg = np.empty(BLOCK, np.int64)
    for start in range(0, n, BLOCK):
        nb = min(BLOCK, n - start)
        for b in range(nb):
            for j in range(d):
                xt[j, b] = X[start + b, j]
        for g in range(runs):
            if not active[g]:
                continue
            for b in range(nb):
                best[b] = np.inf
                arg[b] = g * k
            for c in range(g * k, (g + 1) * k):
                for b in range(nb):
                    acc[b] = zero
                j = 0
                while j + 4 <= d:  # four features per sweep (same order of the sum)
                    c0, c1 = ct(centers[c, j]), ct(centers[c, j + 1])
                    c2, c3 = ct(centers[c, j + 2]), ct(centers[c, j + 3])
                    r0, r1, r2, r3 = xt[j], xt[j + 1], xt[j + 2], xt[j + 3]
                    for b in range(nb):
                        acc[b] = (((acc[b] + r0[b] * c0) + r1[b] * c1) + r2[b] * c2) \
                            + r3[b] * c3
                    j += 4
                while j < d:
                    cj = ct(centers[c, j])
                    row = xt[j]
                    for b in range(nb):
                        acc[b] += row[b] * cj
                    j += 1
                norm_c = center_norms[c]
                for b in range(nb):
                    dist = norm_c - 2.0 * np.float64(acc[b])
                    if dist < best[b]:
                        best[b] = dist
                        arg[b] = c
            for b in range(nb):
                dist = best[b] + norms[start + b]
                if dist > 0.0:
                    inertia[g] += np.rint(dist * inertia_scale)
                c = arg[b]
                counts[c] += 1.0
                for j in range(d):
                    sums[c, j] += np.rint(np.float64(X[start + b, j]) * scale)


def warm(dtype: np.dtype) -> None:
    """Compile (or load from the cache) the kernels here for rows of ``dtype``."""
    for rows in (np.zeros((2, 1), dtype=dtype), np.zeros((2, 1))):
        norms = np.zeros(2)
        row_norms(rows, norms)
        lloyd_pass(rows, norms, np.zeros((1, 1)), np.zeros(1), 1, np.ones(1, np.bool_), 1.0,
                   1.0, np.zeros((1, 1)), np.zeros(1), np.zeros(1))
