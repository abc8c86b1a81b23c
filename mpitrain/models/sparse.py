"""The built-in one-layer models on sparse rows: ``linear``, ``logistic`` and ``softmax``
whose kernels take the rank's rows as CSR (:mod:`mpitrain.kernels.sparse`).

A run whose rows are kept sparse (``--sparse``) binds the sparse variant of its built-in
model: the same class hierarchy, layout, spec, initialisation and saved model, only the
kernels (and the much smaller workspace) differ. The hooks hand the kernels the CSR
triple ``X.arrays``; there is no per-layer split (``--overlap``) on one layer.
"""

from __future__ import annotations

from mpitrain.kernels.sparse import (
    sparse_gradient,
    sparse_loss,
    sparse_predict,
    sparse_step,
    sparse_workspace_size,
)

from .dense import Linear, Logistic, Softmax
from .protocol import Model


def _gradient(params, grad, X, y, rows, work, spec):
    return sparse_gradient(params, grad, X.arrays, y, rows, work, spec)


def _step(params, message, X, y, rows, work, spec):
    sparse_step(params, message, X.arrays, y, rows, work, spec)


def _loss(params, X, y, rows, work, spec):
    return sparse_loss(params, X.arrays, y, rows, work, spec)


def _predict(params, X, rows, out, work, spec):
    sparse_predict(params, X.arrays, rows, out, work, spec)


class _SparseHooks:
    """The sparse kernels in place of a dense network's (mixed in before the model)."""

    gradient_kernel = staticmethod(_gradient)
    step_kernel = staticmethod(_step)
    loss_kernel = staticmethod(_loss)
    predict_kernel = staticmethod(_predict)
    forward_kernel = None
    backward_kernel = None

    def workspace(self, *, n_features: int, n_classes: int, rows: int) -> int:
        dims = self.dims(n_features=n_features, n_classes=n_classes)  # type: ignore[attr-defined]
        return sparse_workspace_size(int(dims[-1]), rows)

    def buckets(self, *, n_features: int, n_classes: int) -> list[tuple[int, int]]:
        return []


class SparseLinear(_SparseHooks, Linear):
    """``linear`` on CSR rows."""


class SparseLogistic(_SparseHooks, Logistic):
    """``logistic`` on CSR rows."""


class SparseSoftmax(_SparseHooks, Softmax):
    """``softmax`` on CSR rows."""


SPARSE = {Linear: SparseLinear, Logistic: SparseLogistic, Softmax: SparseSoftmax}


def has_sparse_variant(model: Model) -> bool:
    """Whether ``model`` (exactly a built-in class) can train on CSR rows."""
    return type(model) in SPARSE


def sparse_variant(model: Model) -> Model:
    """The sparse variant of a built-in ``linear``/``logistic``/``softmax`` object."""
    return SPARSE[type(model)]()  # type: ignore[index]
