"""Feature standardisation with global training statistics, computed without gathering data.

Two passes for accuracy: the global mean from summed columns, then the global variance
from summed squared deviations, both exact sums (:mod:`mpitrain.exact`, two fixed-point
levels), so the statistics, hence the standardised rows, are the same bits for any number
of ranks. A feature whose global minimum equals its maximum is constant: it gets that
value as mean and std 1, so it becomes exactly zero.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.exact import exact_column_sums

#: Rows per chunk when summing squared deviations (bounds the float64 temporary).
CHUNK_ROWS = 4096


def fit(comm: MPI.Comm, X: np.ndarray, n_total: int) -> tuple[np.ndarray, np.ndarray]:
    """Collective: float64 mean and std of the rows of ``X`` over all ranks (``n_total``
    rows), the same bits for any number of ranks."""
    d = X.shape[1]
    local = np.empty(2 * d)  # maxima, negated minima
    local[:d] = X.max(axis=0, initial=-np.inf)
    local[d:] = -X.min(axis=0, initial=np.inf)
    extremes = np.empty(2 * d)
    comm.Allreduce(local, extremes, op=MPI.MAX)
    mean = exact_column_sums(comm, X, n_total, levels=2) / n_total
    deviations = exact_column_sums(comm, X, n_total, squares=True, center=mean, levels=2)
    std = np.sqrt(deviations[d:] / n_total)
    constant = extremes[:d] == -extremes[d:]
    mean[constant] = extremes[:d][constant]
    std[constant] = 1.0
    return mean, std


def apply(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """Standardise ``X`` in place: ``(X - mean) / std``, computed in float64 chunk by chunk."""
    for start in range(0, len(X), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        X[rows] = (X[rows] - mean) / std
