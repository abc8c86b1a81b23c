"""Global loss and accuracy (or R²) of a split: per-rank sums, one small Allreduce."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from mpi4py import MPI

from .data import Shard
from .models import BoundModel

EVAL_ROWS = 4096  # rows per forward chunk: bounds the evaluation workspace


class ChunkedLoss:
    """Loss sum and correct count of a model over all rows of a shard, in chunks (the
    model's ``loss_kernel``, or its gradient kernel into scratch space without one)."""

    def __init__(self, model: BoundModel, shard: Shard) -> None:
        self.model = model
        self.shard = shard
        n = len(shard.y)
        self.max_rows = max(1, min(EVAL_ROWS, n))
        self.work = model.workspace(self.max_rows, shard.X.dtype)
        self.order = np.arange(n, dtype=np.int64)
        self._loss = model.hook("loss_kernel")
        self._scratch = (None if self._loss is not None
                         else np.empty(model.size, dtype=shard.X.dtype))

    def chunks(self) -> Iterator[np.ndarray]:
        """Row indices of each chunk, in order."""
        for start in range(0, len(self.order), self.max_rows):
            yield self.order[start:start + self.max_rows]

    def __call__(self, params: np.ndarray) -> tuple[float, float]:
        loss_sum = correct = 0.0
        X, y, model = self.shard.X, self.shard.y, self.model
        for rows in self.chunks():
            if self._loss is not None:
                loss, right = self._loss(params, X, y, rows, self.work, model.spec)
            else:
                loss, right = model.gradient(params, self._scratch, X, y, rows, self.work)
            loss_sum += loss
            correct += right
        return loss_sum, correct


class Evaluator:
    """Evaluates a model on one split; holds the workspace and the split's label sums."""

    def __init__(self, model: BoundModel, *, shard: Shard, comm: MPI.Comm) -> None:
        self.shard = shard
        self.comm = comm
        self.loss = ChunkedLoss(model, shard)
        self.sums = np.zeros(5, dtype=np.float64)
        self.label_stats = label_stats(shard, comm) if model.regression else None

    def __call__(self, params: np.ndarray) -> dict[str, float]:
        """{'loss', 'accuracy'} for classification, {'loss', 'r2'} for regression."""
        sums = self.sums
        sums[:] = 0.0
        if len(self.shard.y):
            sums[0], sums[1] = self.loss(params)
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
