"""The built-in models: dense networks on the fused kernels of :mod:`mpitrain.kernels`.

``linear`` (squared loss), ``logistic`` (sigmoid cross-entropy, binary labels), ``softmax``
(multinomial logistic regression) and ``mlp`` (ReLU hidden layers, softmax head) are one
network with different layer sizes and heads; they implement the model protocol like any
user model, with its optional hooks (one-call step with the message tail, and the
per-layer split behind ``--overlap``).
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import numpy as np

from mpitrain.kernels.dense import (
    dense_backward,
    dense_forward,
    dense_gradient,
    dense_loss,
    dense_predict,
    dense_step,
)
from mpitrain.kernels.network import BINARY_XENT, SOFTMAX_XENT, SQUARED, workspace_size

from .layout import Layout
from .protocol import Model


class DenseNetwork(Model):
    """A stack of dense layers with ReLU between them and a loss head (``loss_kind``)."""

    loss_kind: ClassVar[int] = SOFTMAX_XENT
    overwrites_gradient = True
    gradient_kernel = dense_gradient
    predict_kernel = dense_predict
    loss_kernel = dense_loss
    step_kernel = dense_step
    forward_kernel = dense_forward
    backward_kernel = dense_backward

    def dims(self, *, n_features: int, n_classes: int) -> tuple[int, ...]:
        """Layer sizes, input first."""
        return (n_features, n_classes)

    def shapes(self, *, n_features: int, n_classes: int) -> dict[str, tuple[int, ...]]:
        return dict(Layout.dense(self.dims(n_features=n_features,
                                           n_classes=n_classes)).shapes)

    def spec(self, *, n_features: int, n_classes: int) -> np.ndarray:
        dims = self.dims(n_features=n_features, n_classes=n_classes)
        return np.array([self.loss_kind, *dims], dtype=np.int64)

    def workspace(self, *, n_features: int, n_classes: int, rows: int) -> int:
        return workspace_size(self.dims(n_features=n_features, n_classes=n_classes), rows)

    def buckets(self, *, n_features: int, n_classes: int) -> list[tuple[int, int]]:
        dims = self.dims(n_features=n_features, n_classes=n_classes)
        out, start = [], 0
        for fan_in, fan_out in itertools.pairwise(dims):
            stop = start + fan_in * fan_out + fan_out
            out.append((start, stop))
            start = stop
        return out


class Linear(DenseNetwork):
    """Linear regression (squared loss)."""

    task = "regression"
    loss_kind = SQUARED

    def dims(self, *, n_features: int, n_classes: int) -> tuple[int, ...]:
        return (n_features, 1)


class Logistic(DenseNetwork):
    """Binary logistic regression (labels 0/1)."""

    loss_kind = BINARY_XENT

    def dims(self, *, n_features: int, n_classes: int) -> tuple[int, ...]:
        return (n_features, 1)

    def outputs(self, *, n_classes: int) -> int:
        return 2

    def check_data(self, *, n_features: int, n_classes: int) -> str | None:
        if n_classes > 2:
            return (f"--model logistic needs binary labels 0/1 but the data has "
                    f"{n_classes} classes; use --model softmax or mlp")
        return None


class Softmax(DenseNetwork):
    """Multinomial logistic regression."""


class MLP(DenseNetwork):
    """Multi-layer perceptron: ReLU hidden layers of sizes ``hidden``, softmax head."""

    def __init__(self, *, hidden: tuple[int, ...] = (128,)) -> None:
        self.hidden = hidden

    def dims(self, *, n_features: int, n_classes: int) -> tuple[int, ...]:
        return (n_features, *(int(h) for h in self.hidden), n_classes)


BUILTIN = {"linear": Linear, "logistic": Logistic, "softmax": Softmax, "mlp": MLP}
MODELS = tuple(BUILTIN)
