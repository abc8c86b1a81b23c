"""Lloyd iterations as a message and an update (:class:`LloydPass`), shared by ``--model
kmeans`` and ``--partition kmeans``; and :func:`cluster_rows`, a whole k-means run that
labels rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import allreduce
from mpitrain.exact import exact_column_sums, fixed_scale, global_max
from mpitrain.kernels.kmeans import lloyd_pass, row_norms
from mpitrain.kernels.trees import nearest

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
        moments = exact_column_sums(comm, X, rows, squares=True) / rows
        top = float(global_max(comm, np.array([_max_abs(X)]))[0])
        variance = np.maximum(moments[d:] - moments[:d] ** 2, 0.0)
        return cls(sums=fixed_scale(top, rows), inertia=fixed_scale(4.0 * top * top * d, rows),
                   tolerance=tol * float(variance.mean()))


def _max_abs(X: np.ndarray) -> float:
    """The largest |value| of ``X`` (0 for no rows), without a temporary as large as X."""
    return max((float(np.abs(X[i:i + 65536]).max()) for i in range(0, len(X), 65536)),
               default=0.0)


class LloydPass:
    """This rank's side of Lloyd iterations of ``G`` runs at once (``--n-init``): its rows
    and their squared norms (computed once), and the message of one iteration.

    The message is ``[per-center fixed-point sums (G·k·d) | counts (G·k) | inertia (G) |
    stop vote]``; summed over the ranks with any allreduce it is the same bits for any
    number of ranks (:mod:`mpitrain.exact`).
    """

    def __init__(self, X: np.ndarray, *, runs: int, k: int) -> None:
        self.X = X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)
        self.runs, self.k, self.d = runs, k, X.shape[1]
        self.norms = np.empty(len(X))
        row_norms(self.X, self.norms)
        self.message = np.zeros(runs * (k * self.d + k + 1) + 1)

    def parts(self, message: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of ``message``: sums (G·k, d), counts (G·k), inertia (G)."""
        g, k, d = self.runs, self.k, self.d
        return (message[:g * k * d].reshape(g * k, d), message[g * k * d:g * k * (d + 1)],
                message[g * k * (d + 1):g * k * (d + 1) + g])

    def fill(self, centers: np.ndarray, active: np.ndarray, scales: Scales, *,
             stop: bool) -> np.ndarray:
        """This rank's part of one iteration of the ``active`` runs (``centers``: (G, k,
        d)): nearest centers, fixed-point sums, counts, inertia, the stop vote (one fused
        pass, :func:`mpitrain.kernels.kmeans.lloyd_pass`). Returns the message."""
        message = self.message
        message[:] = 0.0
        sums, counts, inertia = self.parts(message)
        # distances in the rows' precision (as scikit-learn), the centers rounded to it once
        flat = centers.reshape(-1, self.d).astype(self.X.dtype).astype(np.float64)
        lloyd_pass(self.X, self.norms, flat, np.square(flat).sum(axis=1), self.k,
                   np.ascontiguousarray(active, dtype=np.bool_), scales.sums,
                   scales.inertia, sums, counts, inertia)
        message[-1] = 1.0 if stop else 0.0
        return message

    def update(self, message: np.ndarray, centers: np.ndarray, active: np.ndarray,
               scales: Scales) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """From a summed message: the new centers of the active runs (an empty cluster
        keeps its center; the others unchanged), each run's squared shift and the inertia
        of its assignment (inactive runs: 0 and NaN)."""
        sums, counts, inertia = self.parts(message)
        g, k, d = centers.shape
        counts = counts.reshape(g, k, 1)
        means = sums.reshape(g, k, d) / scales.sums / np.maximum(counts, 1.0)
        moved = (counts > 0) & active[:, None, None]
        new = np.where(moved, means, centers)
        shift = np.square(new - centers).sum(axis=(1, 2))
        return new, shift, np.where(active, inertia / scales.inertia, np.nan)


def cluster_rows(comm: MPI.Comm, X: np.ndarray, *, k: int, first_row: int, rows: int,
                 seed: int, max_iter: int = 100, tol: float = 1e-4,
                 algorithm: str = "auto") -> np.ndarray:
    """Collective: the cluster (0..k-1) of each of this rank's rows after k-means|| and
    Lloyd iterations over every rank's rows; the same for any number of ranks."""
    scales = Scales.agree(comm, X, rows=rows, tol=tol)
    centers = kmeans_parallel(comm, X, k=k, first_row=first_row, rows=rows, seed=seed)[None]
    lloyd, active = LloydPass(X, runs=1, k=k), np.ones(1, dtype=bool)
    for _ in range(max_iter):
        message = lloyd.fill(centers, active, scales, stop=False)
        allreduce(message, comm, algorithm=algorithm)
        centers, shift, _ = lloyd.update(message, centers, active, scales)
        if shift[0] <= scales.tolerance:
            break
    labels, dist = np.empty(len(X), np.int64), np.empty(len(X))
    nearest(X, centers[0], labels, dist)
    return labels
