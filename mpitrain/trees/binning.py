"""Shared binning: every rank bins its rows with the same edges, agreed from a sample.

The sample is the rows whose keyed uniform number (seed, global row) falls below
``SAMPLE_ROWS / rows``, so it is the same set of rows for any number of ranks; every rank
gathers it (rank order is global row order) and computes the same edges: midpoints between
the distinct values when there are at most ``max_bins`` of them, else midpoints at
``max_bins`` quantiles (scikit-learn's HistGradientBoosting rule), NaN left out. Codes are
uint8; a missing value gets its own code above every feature's (:attr:`Bins.missing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from mpitrain.kernels.trees import GRID_CELLS, bin_rows, edge_grid, keyed_uniform

#: Rows sampled to place the bin edges (scikit-learn samples 200 000 too).
SAMPLE_ROWS = 200_000
#: The keyed-uniform stream of the binning sample.
SAMPLE_STREAM = 0x5A
#: Rows copied into the sample at a time.
_COPY_ROWS = 1 << 14


@dataclass(frozen=True)
class Bins:
    """Bin edges of every feature: ``edges[offsets[j]:offsets[j + 1]]`` for feature ``j``."""

    edges: np.ndarray  # float64, sorted per feature
    offsets: np.ndarray  # int64 (d + 1,)

    @property
    def n_bins(self) -> int:
        """Codes of present values: ``0 .. n_bins - 1`` (the widest feature's)."""
        return int(np.diff(self.offsets).max(initial=0)) + 1

    @property
    def missing(self) -> int:
        """The code of a missing value (NaN): ``n_bins``, above every feature's codes, so
        histograms are ``n_bins + 1`` wide and the last bin counts the missing values."""
        return self.n_bins

    def feature_edges(self, j: int) -> np.ndarray:
        return self.edges[self.offsets[j]:self.offsets[j + 1]]

    def codes(self, X: np.ndarray) -> np.ndarray:
        """The uint8 codes of the rows of ``X`` (NaN: :attr:`missing`)."""
        out = np.empty(X.shape, dtype=np.uint8)
        if X.size:
            d = len(self.offsets) - 1
            starts = np.zeros((d, GRID_CELLS), np.int32)
            lows, scales = np.zeros(d), np.zeros(d)
            edge_grid(self.edges, self.offsets, starts, lows, scales)
            bin_rows(np.ascontiguousarray(X), self.edges, self.offsets, starts, lows, scales,
                     self.missing, out)
        return out


def feature_edges(present: np.ndarray, max_bins: int) -> np.ndarray:
    """Edges (at most ``max_bins - 1``) splitting the sorted present (not NaN) values
    ``present`` into at most ``max_bins`` bins: what ``np.unique`` and ``np.percentile(...,
    method="midpoint")`` give, bit for bit, read off the sorted values (no partitions)."""
    if not len(present):
        return np.empty(0)
    distinct = present[np.concatenate([[True], present[1:] != present[:-1]])]
    if len(distinct) <= max_bins:
        return (distinct[:-1] + distinct[1:]) / 2.0
    return np.unique(_midpoint_quantiles(present, max_bins))


def _midpoint_quantiles(ordered: np.ndarray, max_bins: int) -> np.ndarray:
    """``np.percentile(ordered, np.linspace(0, 100, max_bins + 1)[1:-1],
    method="midpoint")`` of sorted ``ordered``, with numpy's own arithmetic (index, weight,
    interpolation), so the same doubles."""
    quantiles = np.true_divide(np.linspace(0, 100, max_bins + 1)[1:-1], 100)
    n = len(ordered)
    virtual = 0.5 * (np.floor((n - 1) * quantiles) + np.ceil((n - 1) * quantiles))
    previous = np.floor(virtual).astype(np.intp)
    following = np.minimum(previous + 1, n - 1)
    previous = np.clip(previous, 0, n - 1)
    gamma = np.where(virtual % 1 == 0, 0.0, 0.5)
    a, b = ordered[previous], ordered[following]
    diff = b - a
    result = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5)
    return result


def agree_bins(comm: MPI.Comm, X: np.ndarray, *, first_row: int, rows: int, seed: int,
               max_bins: int) -> Bins:
    """Collective: the bins of the training rows (``X`` holds this rank's rows, global rows
    ``first_row...``; ``rows`` in all), the same for any number of ranks."""
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    dtype = X.dtype
    if rows > SAMPLE_ROWS:
        draw = np.empty(len(X))
        keyed_uniform(seed, SAMPLE_STREAM, first_row, draw)
        chosen = draw < SAMPLE_ROWS / rows
        del draw
    else:
        chosen = np.ones(len(X), dtype=bool)
    d = X.shape[1]
    counts = np.array(comm.allgather(int(chosen.sum()) * d), dtype=np.int64)  # one int a rank
    displacements = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # the sample is gathered in the rows' own dtype (float32 rows: half the bytes), this
    # rank's part written in place (no copy of it), then sorted one feature at a time in
    # float64 (exact): the sample is held once
    sample = np.empty(int(counts.sum()), dtype=dtype)
    start = int(displacements[comm.Get_rank()])
    mine = sample[start:start + int(counts[comm.Get_rank()])].reshape(-1, d)
    filled = 0
    for first in range(0, len(X), _COPY_ROWS):  # in blocks: no temporary as large as mine
        part = X[first:first + _COPY_ROWS][chosen[first:first + _COPY_ROWS]]
        mine[filled:filled + len(part)] = part
        filled += len(part)
    kind = MPI.FLOAT if dtype == np.float32 else MPI.DOUBLE
    comm.Allgatherv(MPI.IN_PLACE, [sample, counts, displacements, kind])
    sample = sample.reshape(-1, d)
    per_feature = []
    for j in range(d):
        column = np.sort(sample[:, j].astype(np.float64))  # NaN sorted last
        present = len(column) - int(np.isnan(column).sum())
        per_feature.append(feature_edges(column[:present], max_bins))
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in per_feature])]).astype(np.int64)
    edges = np.concatenate(per_feature) if per_feature else np.empty(0)
    return Bins(edges=edges.astype(np.float64), offsets=offsets)
