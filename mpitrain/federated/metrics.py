"""Metrics of the global model in federated mode: test loss/accuracy and per-client accuracy.

Per-client test accuracy is the accuracy of the global model on the test set re-weighted by
each client's label histogram, ``acc_c = Σ_k h_ck · acc_k / Σ_k h_ck`` (classes absent from
the test set left out): the accuracy client c can expect on fresh data from its own label
distribution. It needs only per-class test counts, so one forward pass and ONE small
``Allreduce`` give the global metrics and the min / median / max over all K clients.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mpi4py import MPI

from mpitrain.kernels.network import BINARY_XENT, network_loss, network_predict, workspace_size

from ..data import Shard
from ..evaluation import EVAL_ROWS, summarize
from ..models import Layout


class FederatedEvaluator:
    """Global test metrics plus per-client accuracy for a classification model."""

    def __init__(self, layout: Layout, *, loss_kind: int, shard: Shard, comm: MPI.Comm,
                 n_classes: int, histograms: np.ndarray) -> None:
        self.dims = layout.dims_array
        self.loss_kind = loss_kind
        self.shard = shard
        self.comm = comm
        self.n_classes = n_classes
        self.histograms = histograms.astype(np.float64)
        rows = max(1, min(EVAL_ROWS, len(shard.y)))
        self.max_rows = rows
        self.work = np.empty(workspace_size(layout.dims, rows), dtype=shard.X.dtype)
        self.predictions = np.empty(len(shard.y), dtype=shard.X.dtype)
        self.sums = np.zeros(3 + 2 * n_classes, dtype=np.float64)

    def __call__(self, params: np.ndarray) -> dict[str, Any]:
        """Collective: {loss, accuracy, client_accuracy_min/median/max}."""
        sums, k = self.sums, self.n_classes
        sums[:] = 0.0
        y = self.shard.y
        if len(y):
            loss, correct = network_loss(params, self.dims, self.loss_kind, self.shard.X, y,
                                         self.work, self.max_rows)
            network_predict(params, self.dims, self.loss_kind, self.shard.X, self.predictions,
                            self.work, self.max_rows)
            predicted = (self.predictions > 0.5 if self.loss_kind == BINARY_XENT
                         else self.predictions).astype(np.int64)
            sums[0], sums[1] = loss, correct
            sums[3:3 + k] = np.bincount(y[predicted == y], minlength=k)[:k]
            sums[3 + k:] = np.bincount(y, minlength=k)[:k]
        sums[2] = len(y)
        self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        out: dict[str, Any] = summarize(sums[0], sums[1], sums[2], label_stats=None)
        out.update(client_accuracy(self.histograms, sums[3:3 + k], sums[3 + k:]))
        return out


def client_accuracy(histograms: np.ndarray, class_correct: np.ndarray,
                    class_count: np.ndarray) -> dict[str, float]:
    """min / median / max over clients of the label-reweighted test accuracy."""
    present = class_count > 0
    if not present.any():
        return {}
    per_class = np.where(present, class_correct / np.maximum(class_count, 1), 0.0)
    weight = histograms[:, present].sum(axis=1)
    acc = (histograms @ per_class)[weight > 0] / weight[weight > 0]
    if len(acc) == 0:
        return {}
    return {"client_accuracy_min": float(acc.min()),
            "client_accuracy_median": float(np.median(acc)),
            "client_accuracy_max": float(acc.max())}
