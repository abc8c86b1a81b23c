"""The built-in models on sparse rows: ``linear``, ``logistic`` and ``softmax`` whose
kernels take the rank's rows as CSR (:mod:`mpitrain.kernels.sparse`), and ``mlp`` whose
first layer does (:mod:`mpitrain.kernels.sparse_mlp`; the layers above are dense).

A run whose rows are kept sparse (``--sparse``) binds the sparse variant of its built-in
model: the same class hierarchy, layout, spec, initialisation and saved model, only the
kernels (and the much smaller workspace) differ. The hooks hand the kernels the CSR
triple ``X.arrays``; there is no per-layer split (``--overlap``).

Their step touches only the rows of the first weight matrix (one row per input feature)
of the features present in the batch: the ``touched_kernel`` says which, and
:meth:`_SparseHooks.row_width` how wide a row is, so the sync strategy can reduce only
those rows (:mod:`mpitrain.collectives.sparse`). The one-layer models also have a
``rows_step_kernel``: the step that keeps its message zero outside the rows it wrote, so a
step never sweeps the whole ``W`` (:meth:`~mpitrain.models.gradient.BatchGradient.step_rows`).
"""

from __future__ import annotations

from mpitrain.kernels.sparse import (
    batch_columns,
    sparse_gradient,
    sparse_loss,
    sparse_predict,
    sparse_rows_step,
    sparse_step,
    sparse_workspace_size,
)
from mpitrain.kernels.sparse_mlp import (
    sparse_mlp_gradient,
    sparse_mlp_loss,
    sparse_mlp_predict,
    sparse_mlp_step,
    sparse_mlp_workspace_size,
)

from .dense import MLP, Linear, Logistic, Softmax
from .protocol import Model


def _on_csr(gradient, step, loss, predict):
    """The protocol's gradient, step, loss and predict hooks (static methods) that hand
    these CSR kernels the triple ``X.arrays`` of a :class:`~mpitrain.data.Csr`."""

    def gradient_kernel(params, grad, X, y, rows, work, spec):
        return gradient(params, grad, X.arrays, y, rows, work, spec)

    def step_kernel(params, message, X, y, rows, work, spec):
        step(params, message, X.arrays, y, rows, work, spec)

    def loss_kernel(params, X, y, rows, work, spec):
        return loss(params, X.arrays, y, rows, work, spec)

    def predict_kernel(params, X, rows, out, work, spec):
        predict(params, X.arrays, rows, out, work, spec)

    return tuple(staticmethod(f) for f in (gradient_kernel, step_kernel, loss_kernel,
                                           predict_kernel))


def _touched(X, rows, mark, out):
    return batch_columns(X.arrays, rows, mark, out)


def _rows_step(params, message, X, y, rows, work, spec, mark, touched, held):
    return sparse_rows_step(params, message, X.arrays, y, rows, work, spec, mark, touched,
                            held)


class _SparseHooks:
    """The sparse kernels in place of a dense network's (mixed in before the model)."""

    gradient_kernel, step_kernel, loss_kernel, predict_kernel = _on_csr(
        sparse_gradient, sparse_step, sparse_loss, sparse_predict)
    touched_kernel = staticmethod(_touched)
    rows_step_kernel = staticmethod(_rows_step)
    forward_kernel = None
    backward_kernel = None

    def row_width(self, *, n_features: int, n_classes: int) -> int:
        """A row of ``W`` (``W1`` of an MLP) per feature: its first hidden size or outputs."""
        return int(self.dims(n_features=n_features, n_classes=n_classes)[1])  # type: ignore[attr-defined]

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


class SparseMLP(_SparseHooks, MLP):
    """``mlp`` with its first layer on CSR rows (the layers above dense)."""

    rows_step_kernel = None  # (its step zeroes the whole gradient)

    gradient_kernel, step_kernel, loss_kernel, predict_kernel = _on_csr(
        sparse_mlp_gradient, sparse_mlp_step, sparse_mlp_loss, sparse_mlp_predict)

    def workspace(self, *, n_features: int, n_classes: int, rows: int) -> int:
        return sparse_mlp_workspace_size(self.dims(n_features=n_features,
                                                   n_classes=n_classes), rows)


SPARSE = {Linear: SparseLinear, Logistic: SparseLogistic, Softmax: SparseSoftmax,
          MLP: SparseMLP}


def has_sparse_variant(model: Model) -> bool:
    """Whether ``model`` (exactly a built-in class) can train on CSR rows."""
    return type(model) in SPARSE


def sparse_variant(model: Model) -> Model:
    """The sparse variant of a built-in ``linear``/``logistic``/``softmax``/``mlp`` object
    (with the same options)."""
    return SPARSE[type(model)](**model.get_params())  # type: ignore[index]
