"""One Lloyd iteration as a message and an update, shared by ``--model kmeans`` and
``--partition kmeans``; and :func:`cluster_rows`, a whole k-means run that labels rows.

The message is ``[per-center fixed-point sums (k·d) | counts (k) | inertia | stop vote]``;
summed over the ranks with any allreduce it is the same bits for any number of ranks
(:mod:`mpitrain.collectives.fixed`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import allreduce
from mpitrain.collectives.fixed import exact_column_sums, fixed_scale, global_max
from mpitrain.kernels.trees import cluster_sums, nearest

from .init import kmeans_parallel


@dataclass(frozen=True)
class Scales:
    """Fixed-point scales of the feature sums and of the inertia, and the stopping
    threshold of the center shift (``tol`` times the mean feature variance)."""

    sums: float
    inertia: float
    tolerance: float

    @classmethod
    def agree(cls, comm: MPI.Comm, X: np.ndarray, *, rows: int, tol: float) -> Scales:
        """Collective: the scales of the rows of every rank (``rows`` in all)."""
        d = X.shape[1]
        top = float(global_max(comm, np.array([np.abs(X).max(initial=0.0)]))[0])
        moments = exact_column_sums(comm, np.column_stack(
            [X, np.square(X.astype(np.float64))]), rows) / rows
        variance = np.maximum(moments[d:] - moments[:d] ** 2, 0.0)
        return cls(sums=fixed_scale(top, rows), inertia=fixed_scale(4.0 * top * top * d, rows),
                   tolerance=tol * float(variance.mean()))


def message_size(k: int, d: int) -> int:
    return k * d + k + 2


def fill_message(X: np.ndarray, centers: np.ndarray, scales: Scales, message: np.ndarray,
                 *, stop: bool) -> None:
    """This rank's part of one iteration: nearest centers, fixed-point sums, counts,
    inertia, the stop vote."""
    k, d = centers.shape
    labels, dist = np.empty(len(X), np.int64), np.empty(len(X))
    nearest(X, centers, labels, dist)
    message[:] = 0.0
    cluster_sums(X, labels, scales.sums, message[:k * d].reshape(k, d),
                 message[k * d:k * d + k])
    message[-2] = np.rint(dist * scales.inertia).sum()
    message[-1] = 1.0 if stop else 0.0


def update(message: np.ndarray, centers: np.ndarray,
           scales: Scales) -> tuple[np.ndarray, float, float]:
    """From a summed message: the new centers (an empty cluster keeps its center), the
    squared shift and the inertia of the assignment."""
    k, d = centers.shape
    counts = message[k * d:k * d + k]
    means = message[:k * d].reshape(k, d) / scales.sums / np.maximum(counts, 1.0)[:, None]
    new = np.where(counts[:, None] > 0, means, centers)
    return new, float(np.square(new - centers).sum()), float(message[-2] / scales.inertia)


def cluster_rows(comm: MPI.Comm, X: np.ndarray, *, k: int, first_row: int, rows: int,
                 seed: int, max_iter: int = 100, tol: float = 1e-4,
                 algorithm: str = "auto") -> np.ndarray:
    """Collective: the cluster (0..k-1) of each of this rank's rows after k-means|| and
    Lloyd iterations over every rank's rows; the same for any number of ranks."""
    scales = Scales.agree(comm, X, rows=rows, tol=tol)
    centers = kmeans_parallel(comm, X, k=k, first_row=first_row, rows=rows, seed=seed)
    message = np.zeros(message_size(*centers.shape))
    for _ in range(max_iter):
        fill_message(X, centers, scales, message, stop=False)
        allreduce(message, comm, algorithm=algorithm)
        centers, shift, _ = update(message, centers, scales)
        if shift <= scales.tolerance:
            break
    labels, dist = np.empty(len(X), np.int64), np.empty(len(X))
    nearest(X, centers, labels, dist)
    return labels
