"""Sums that are the same bits for any number of ranks: fixed-point integers in float64.

Used wherever a statistic must not depend on P: the standardisation statistics of the data
(:mod:`mpitrain.data.standardize`), tree histograms and scores, k-means sums. Numpy and
mpi4py only, so every layer (data included) may use it.

Float sums depend on the order of their terms, so a sum over P ranks' partial sums changes
in the last bits with P. Integer-valued doubles below 2**53 add exactly in any order, so a
sum of values each rounded to a multiple of ``2**-s`` (``s`` chosen from the global maximum
so the total stays below 2**53) is exact, and identical for any P and any allreduce
algorithm. The price is the rounding of each term to ``2**-s`` (about ``2**-52`` times
``max |value| * rows``), far below what a model or a metric can see; ``levels=2`` adds the
terms' remainders as a second fixed-point sum, for statistics that must also match a
float sum closely (about ``2**-104`` times ``max |value| * rows**2``). XGBoost's GPU
histograms use the same idea for deterministic sums.
"""

from __future__ import annotations

import math

import numpy as np
from mpi4py import MPI

#: Total magnitude the fixed-point sums may reach (below 2**53, with a bit to spare).
LIMIT = 2.0 ** 52


def fixed_scale(max_abs: float, rows: int) -> float:
    """The power of two ``2**s`` that keeps ``rows`` terms of at most ``max_abs`` below
    :data:`LIMIT` once rounded (1.0 for all-zero terms)."""
    bound = max_abs * max(rows, 1)
    if not math.isfinite(bound):
        raise FloatingPointError("fixed-point sum of non-finite values")
    if bound <= 0.0:
        return 1.0
    return 2.0 ** (math.floor(math.log2(LIMIT / bound)) - 1)


def global_max(comm: MPI.Comm, values: np.ndarray) -> np.ndarray:
    """Collective: the element-wise maximum of ``values`` (float64, 1-D) over the ranks."""
    local = np.ascontiguousarray(values, dtype=np.float64)
    out = np.empty_like(local)
    comm.Allreduce(local, out, op=MPI.MAX)
    return out


#: Rows converted and rounded at a time by :func:`exact_column_sums` (bounds its temporaries).
BLOCK_ROWS = 1 << 13


def exact_column_sums(comm: MPI.Comm, columns: np.ndarray, rows: int, *,
                      squares: bool = False, center: np.ndarray | None = None,
                      levels: int = 1) -> np.ndarray:
    """Collective: the sum over every rank's rows of each column of ``columns`` (n, m),
    the same bits for any number of ranks (``rows``: the global row count); with
    ``squares``, then the sums of their squares (2m sums); with ``center`` (m values, the
    same on every rank), of ``columns - center`` (squared deviations: a variance). Two
    small collectives: the maximum, then the fixed-point sums (``levels`` 1 or 2, see the
    module docstring). Rows are taken in blocks, so the temporaries stay small whatever
    the size of ``columns`` (integer-valued terms add exactly in any order)."""
    columns = np.asarray(columns)
    n, m = columns.shape

    def blocks():
        for start in range(0, n, BLOCK_ROWS):
            block = columns[start:start + BLOCK_ROWS].astype(np.float64)
            if center is not None:
                block -= center
            yield (np.concatenate([block, np.square(block)], axis=1) if squares
                   else block)

    width = 2 * m if squares else m
    local_max = np.zeros(width)
    for block in blocks():
        np.maximum(local_max, np.abs(block).max(axis=0), out=local_max)
    top = global_max(comm, local_max)
    scales = np.array([[fixed_scale(float(t), rows) for t in top]])
    for _ in range(1, levels):  # a remainder is at most half a step of the level above
        scales = np.vstack([scales, [fixed_scale(0.5 / s, rows) for s in scales[-1]]])
    sums = np.zeros_like(scales)
    for block in blocks():
        for level, scale in enumerate(scales):
            steps = np.rint(block * scale)
            sums[level] += steps.sum(axis=0)
            if level + 1 < levels:
                block = block - steps / scale
    total = np.empty_like(sums)
    comm.Allreduce(sums, total, op=MPI.SUM)
    return (total / scales).sum(axis=0) if levels > 1 else total[0] / scales[0]
