"""Feature standardisation with global training statistics, computed without gathering data.

Two passes for accuracy: the global mean from summed columns, then the global variance
from summed squared deviations. A feature whose global minimum equals its maximum is
constant: it gets that value as mean and std 1, so it becomes exactly zero.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

#: Rows per chunk when summing squared deviations (bounds the float64 temporary).
CHUNK_ROWS = 4096


def fit(comm: MPI.Comm, X: np.ndarray, n_total: int) -> tuple[np.ndarray, np.ndarray]:
    """Collective: float64 mean and std of the rows of ``X`` over all ranks (``n_total`` rows)."""
    d = X.shape[1]
    stats = np.empty(3 * d)  # column sums, maxima, negated minima
    stats[:d] = X.sum(axis=0, dtype=np.float64)
    stats[d : 2 * d] = X.max(axis=0, initial=-np.inf)
    stats[2 * d :] = -X.min(axis=0, initial=np.inf)
    sums, extremes = np.empty(d), np.empty(2 * d)
    comm.Allreduce(stats[:d], sums, op=MPI.SUM)
    comm.Allreduce(stats[d:], extremes, op=MPI.MAX)
    mean = sums / n_total
    squares = np.zeros(d)
    for start in range(0, len(X), CHUNK_ROWS):
        deviation = X[start : start + CHUNK_ROWS].astype(np.float64) - mean
        squares += np.einsum("ij,ij->j", deviation, deviation)
    total = np.empty(d)
    comm.Allreduce(squares, total, op=MPI.SUM)
    std = np.sqrt(total / n_total)
    constant = extremes[:d] == -extremes[d:]
    mean[constant] = extremes[:d][constant]
    std[constant] = 1.0
    return mean, std


def apply(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """Standardise ``X`` in place: ``(X - mean) / std``, computed in float64 chunk by chunk."""
    for start in range(0, len(X), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        X[rows] = (X[rows] - mean) / std
