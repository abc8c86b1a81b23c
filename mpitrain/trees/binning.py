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

from mpitrain.kernels.trees import bin_rows, keyed_uniform

#: Rows sampled to place the bin edges (scikit-learn samples 200 000 too).
SAMPLE_ROWS = 200_000
#: The keyed-uniform stream of the binning sample.
SAMPLE_STREAM = 0x5A


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
            bin_rows(np.ascontiguousarray(X), self.edges, self.offsets, self.missing, out)
        return out


def feature_edges(values: np.ndarray, max_bins: int) -> np.ndarray:
    """Edges (at most ``max_bins - 1``) splitting the present (not NaN) ``values`` into at
    most ``max_bins`` bins."""
    values = values[~np.isnan(values)]
    if not len(values):
        return np.empty(0)
    distinct = np.unique(values)
    if len(distinct) <= max_bins:
        return (distinct[:-1] + distinct[1:]) / 2.0
    quantiles = np.percentile(values, np.linspace(0, 100, max_bins + 1)[1:-1],
                              method="midpoint")
    return np.unique(quantiles)


def agree_bins(comm: MPI.Comm, X: np.ndarray, *, first_row: int, rows: int, seed: int,
               max_bins: int) -> Bins:
    """Collective: the bins of the training rows (``X`` holds this rank's rows, global rows
    ``first_row...``; ``rows`` in all), the same for any number of ranks."""
    if rows > SAMPLE_ROWS:
        draw = np.empty(len(X))
        keyed_uniform(seed, SAMPLE_STREAM, first_row, draw)
        mine = np.ascontiguousarray(X[draw < SAMPLE_ROWS / rows], dtype=np.float64)
    else:
        mine = np.ascontiguousarray(X, dtype=np.float64)
    d = X.shape[1]
    counts = np.array(comm.allgather(mine.size), dtype=np.int64)  # one int per rank
    sample = np.empty(int(counts.sum()), dtype=np.float64)
    displacements = np.concatenate([[0], np.cumsum(counts)[:-1]])
    comm.Allgatherv(mine.ravel(), [sample, counts, displacements, MPI.DOUBLE])
    sample = sample.reshape(-1, d)
    per_feature = [feature_edges(sample[:, j], max_bins) for j in range(d)]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in per_feature])]).astype(np.int64)
    edges = np.concatenate(per_feature) if per_feature else np.empty(0)
    return Bins(edges=edges.astype(np.float64), offsets=offsets)
