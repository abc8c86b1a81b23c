"""Global loss and accuracy (or R²) of a split: per-rank sums, one small Allreduce."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.kernels.network import SQUARED, network_loss, workspace_size

from .data import Shard
from .models import Layout

EVAL_ROWS = 4096  # rows per forward chunk: bounds the evaluation workspace


class Evaluator:
    """Evaluates a model on one split; holds the workspace and the split's label sums."""

    def __init__(self, layout: Layout, *, loss_kind: int, shard: Shard,
                 comm: MPI.Comm) -> None:
        self.dims = layout.dims_array
        self.loss_kind = loss_kind
        self.shard = shard
        self.comm = comm
        rows = max(1, min(EVAL_ROWS, len(shard.y)))
        self.max_rows = rows
        self.work = np.empty(workspace_size(layout.dims, rows), dtype=shard.X.dtype)
        self.sums = np.zeros(5, dtype=np.float64)
        self.label_stats = label_stats(shard, comm) if loss_kind == SQUARED else None

    def __call__(self, params: np.ndarray) -> dict[str, float]:
        """{'loss', 'accuracy'} for classification, {'loss', 'r2'} for regression."""
        sums = self.sums
        sums[:] = 0.0
        if len(self.shard.y):
            loss, correct = network_loss(params, self.dims, self.loss_kind, self.shard.X,
                                         self.shard.y, self.work, self.max_rows)
            sums[0], sums[1] = loss, correct
        sums[2] = len(self.shard.y)
        self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        return summarize(sums[0], sums[1], sums[2], label_stats=self.label_stats)


def summarize(loss_sum: float, correct: float, count: float, *,
              label_stats: tuple[float, float] | None) -> dict[str, float]:
    """Mean loss plus accuracy, or R² when ``label_stats`` (n, SST) is given."""
    if count <= 0:
        return {"loss": float("nan")}
    out = {"loss": float(loss_sum / count)}
    if label_stats is None:
        out["accuracy"] = float(correct / count)
    else:
        _, total_ss = label_stats
        out["r2"] = float(1.0 - loss_sum / total_ss) if total_ss > 0 else float("nan")
    return out


def label_stats(shard: Shard, comm: MPI.Comm) -> tuple[float, float]:
    """(n, total sum of squares of y about its global mean), for R²."""
    y = np.asarray(shard.y, dtype=np.float64)
    sums = np.array([len(y), y.sum()], dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
    mean = sums[1] / sums[0] if sums[0] else 0.0
    total = np.array([np.square(y - mean).sum()])
    comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
    return float(sums[0]), float(total[0])
