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

from ..data import Shard
from ..evaluation import ChunkedLoss, summarize
from ..models import BoundModel


class FederatedEvaluator:
    """Global test metrics plus per-client accuracy for a classification model."""

    def __init__(self, model: BoundModel, *, shard: Shard, comm: MPI.Comm,
                 n_classes: int, histograms: np.ndarray) -> None:
        self.model = model
        self.shard = shard
        self.comm = comm
        self.n_classes = n_classes
        self.histograms = histograms.astype(np.float64)
        self.loss = ChunkedLoss(model, shard)
        self.scores = np.empty((self.loss.max_rows, model.outputs), dtype=shard.X.dtype)
        self.predicted = np.empty(len(shard.y), dtype=np.int64)
        self.sums = np.zeros(3 + 2 * n_classes, dtype=np.float64)

    def __call__(self, params: np.ndarray) -> dict[str, Any]:
        """Collective: {loss, accuracy, client_accuracy_min/median/max}."""
        sums, k = self.sums, self.n_classes
        sums[:] = 0.0
        y = self.shard.y
        if len(y):
            sums[0], sums[1] = self.loss(params)
            predicted = self._predict(params)
            sums[3:3 + k] = np.bincount(y[predicted == y], minlength=k)[:k]
            sums[3 + k:] = np.bincount(y, minlength=k)[:k]
        sums[2] = len(y)
        self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        out: dict[str, Any] = summarize(sums[0], sums[1], sums[2], label_stats=None)
        out.update(client_accuracy(self.histograms, sums[3:3 + k], sums[3 + k:]))
        return out

    def _predict(self, params: np.ndarray) -> np.ndarray:
        """Predicted class of every row of the shard (arg-max of the model's scores)."""
        kernel, model, loss = self.model.predict_kernel, self.model, self.loss
        for rows in loss.chunks():
            scores = self.scores[:rows.size]
            kernel(params, self.shard.X, rows, scores, loss.work, model.spec)
            self.predicted[rows] = np.argmax(scores, axis=1)
        return self.predicted


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
