"""k-means|| initialisation (Bahmani et al. 2012), the same centers for any number of ranks.

Round 0 takes one row chosen by a seeded draw of its global index. Each of ``ROUNDS``
rounds then keeps every row with probability ``min(1, l·D(x)²/φ)`` (``l = 2k``,
``φ``: the total cost, an exact fixed-point sum), the uniform number keyed by (seed,
round, global row), and every rank gathers the kept rows (rank order is row order). The
candidates are weighted by how many rows they are nearest to (exact counts) and reduced
to ``k`` centers by greedy weighted k-means++ and Lloyd on every rank alike (no communication).
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.exact import exact_column_sums
from mpitrain.kernels.trees import keyed_uniform, nearest

ROUNDS = 5
#: Lloyd iterations on the weighted candidates.
RECLUSTER_ITERATIONS = 30


def kmeans_parallel(comm: MPI.Comm, X: np.ndarray, *, k: int, first_row: int, rows: int,
                    seed: int, run: int = 0) -> np.ndarray:
    """Collective: ``k`` initial centers (float64, (k, d)) for the rows of every rank
    (``X``: this rank's, global rows ``first_row...``; ``rows`` in all). ``run`` numbers
    the initialisations of ``--n-init``: each draws from its own streams (seed, run)."""
    rng = np.random.default_rng([seed, 0x6B6D] if run == 0 else [seed, 0x6B6D, run])
    centers = _row(comm, X, int(rng.integers(rows)), first_row)[None, :]
    labels, dist = np.empty(len(X), np.int64), np.empty(len(X))
    nearest(X, centers, labels, dist)
    for r in range(ROUNDS):
        cost = float(exact_column_sums(comm, dist[:, None], rows)[0])
        if cost <= 0.0:
            break
        draw = np.empty(len(X))
        keyed_uniform(seed, 1 + r + ROUNDS * run, first_row, draw)
        kept = np.ascontiguousarray(X[draw < 2.0 * k * dist / cost], dtype=np.float64)
        new = _gather_rows(comm, kept)
        _closer(X, new, len(centers), labels, dist)
        centers = np.vstack([centers, new])
    weights = np.bincount(labels, minlength=len(centers)).astype(np.float64)
    comm.Allreduce(MPI.IN_PLACE, weights, op=MPI.SUM)  # integer counts: exact
    return recluster(centers, weights, k=k, rng=rng)


def recluster(points: np.ndarray, weights: np.ndarray, *, k: int,
              rng: np.random.Generator) -> np.ndarray:
    """``k`` centers of weighted ``points``: greedy weighted k-means++ (the best of
    ``2 + ln k`` draws each step, as scikit-learn) then Lloyd (no MPI). Fewer distinct
    candidates than ``k`` (data with fewer distinct rows): repeated."""
    chosen = [int(rng.choice(len(points), p=weights / weights.sum()))]
    labels, dist = np.empty(len(points), np.int64), np.empty(len(points))
    nearest(points, points[chosen], labels, dist)
    trials = 2 + int(np.log(k))
    for _ in range(1, k):
        mass = weights * dist
        if mass.sum() <= 0:
            chosen.append(chosen[-1])
            continue
        draws = rng.choice(len(points), size=trials, p=mass / mass.sum())
        best, best_cost, best_dist = -1, np.inf, dist
        for draw in draws:
            gap = np.minimum(dist, np.square(points - points[draw]).sum(axis=1))
            cost = float((weights * gap).sum())
            if cost < best_cost:
                best, best_cost, best_dist = int(draw), cost, gap
        chosen.append(best)
        dist = best_dist
    centers = points[chosen].copy()
    for _ in range(RECLUSTER_ITERATIONS):
        nearest(points, centers, labels, dist)
        mass = np.bincount(labels, weights=weights, minlength=k)
        for j in range(points.shape[1]):
            sums = np.bincount(labels, weights=weights * points[:, j], minlength=k)
            centers[:, j] = np.where(mass > 0, sums / np.maximum(mass, 1e-300), centers[:, j])
    return centers


def _closer(X: np.ndarray, new: np.ndarray, first: int, labels: np.ndarray,
            dist: np.ndarray) -> None:
    """Move each row's nearest center (``labels``, squared ``dist``) to one of the ``new``
    centers (numbered from ``first``) that is strictly nearer: the same labels and
    distances as a scan of all centers (lowest index on ties), at the cost of the new ones."""
    if not len(new):
        return
    near, gap = np.empty(len(X), np.int64), np.empty(len(X))
    nearest(X, new, near, gap)
    closer = gap < dist
    labels[closer] = near[closer] + first
    dist[closer] = gap[closer]


def _row(comm: MPI.Comm, X: np.ndarray, row: int, first_row: int) -> np.ndarray:
    """Collective: global row ``row`` on every rank (its owner adds it, the others 0)."""
    out = np.zeros(X.shape[1])
    if first_row <= row < first_row + len(X):
        out[:] = X[row - first_row]
    comm.Allreduce(MPI.IN_PLACE, out, op=MPI.SUM)  # one nonzero term: exact
    return out


def _gather_rows(comm: MPI.Comm, rows: np.ndarray) -> np.ndarray:
    """Collective: every rank's ``rows`` (float64, (n, d)), in rank order."""
    d = rows.shape[1]
    counts = np.array(comm.allgather(rows.size), dtype=np.int64)
    out = np.empty(int(counts.sum()))
    displacements = np.concatenate([[0], np.cumsum(counts)[:-1]])
    comm.Allgatherv(rows.ravel(), [out, counts, displacements, MPI.DOUBLE])
    return out.reshape(-1, d)
