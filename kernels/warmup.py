"""Compile (first run) or load from numba's on-disk cache every kernel before training.

mpitrain runs :func:`warm_up` on rank 0 first and then on the other ranks, so processes
never race on the cache. The arguments built here have exactly the types the training loop
passes (see the "Argument types" notes in :mod:`mpitrain.kernels.network` and
:mod:`mpitrain.kernels.optimizers`), so no compilation happens later.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
from numpy.typing import DTypeLike

from . import compress, shared, tensor
from .backward import backward_layer, forward_loss, step_gradient
from .network import (
    LOSS_KINDS,
    SOFTMAX_XENT,
    as_dims,
    n_params,
    network_grad,
    network_loss,
    network_predict,
    workspace_size,
)
from .optimizers import (
    adam_update,
    momentum_update,
    proximal_sgd_update,
    sgd_update,
    sgd_update_rows,
)

_ROWS = 4
_TAIL = 3
KERNELS = ("network_grad", "network_loss", "network_predict", "step_gradient", "split_step",
           "sgd", "momentum", "adam", "proximal_sgd", "compress", "shared", "tensor")
"""Names :func:`warm_up` accepts: the network kernels (``split_step`` is forward_loss +
backward_layer), the optimizers, the 16-bit codecs, the shared-memory reduction and the
tensor-parallel layers (:mod:`.tensor`)."""


def _network_args(dtype: np.dtype, label_dtype: np.dtype, loss_kind: int) -> tuple:
    """Arguments for the network kernels on a tiny [2, 3, k] network (one hidden layer)."""
    k = 2 if loss_kind == SOFTMAX_XENT else 1
    dims = as_dims([2, 3, k])
    params = np.linspace(-1.0, 1.0, n_params(dims)).astype(dtype)
    grad = np.zeros(n_params(dims) + _TAIL, dtype=dtype)
    X = np.arange(2 * _ROWS, dtype=dtype).reshape(_ROWS, 2)
    y = (np.arange(_ROWS) % 2).astype(label_dtype)
    rows = np.arange(_ROWS, dtype=np.int64)
    work = np.empty(workspace_size(dims, _ROWS), dtype=dtype)
    return dims, params, grad, X, y, rows, work


def _warm_network(dtype: np.dtype, label_dtype: np.dtype, loss_kind: int,
                  kernels: Collection[str]) -> None:
    """Run the chosen network kernels once."""
    dims, params, grad, X, y, rows, work = _network_args(dtype, label_dtype, loss_kind)
    kind = int(loss_kind)
    if "network_grad" in kernels:
        network_grad(params, grad, dims, kind, X, y, rows, work)
    if "network_loss" in kernels:
        network_loss(params, dims, kind, X, y, work, _ROWS)
    if "network_predict" in kernels:
        network_predict(params, dims, kind, X, np.empty(_ROWS, dtype=dtype), work, _ROWS)
    if "step_gradient" in kernels:
        step_gradient(params, grad, dims, kind, X, y, rows, work)
    if "split_step" in kernels:
        forward_loss(params, grad, dims, kind, X, y, rows, work)
        for layer in range(dims.size - 2, -1, -1):
            backward_layer(params, grad, dims, work, _ROWS, layer)


def _warm_optimizers(dtype: np.dtype, kernels: Collection[str]) -> None:
    """Run the chosen optimizers once; hyper-parameters are Python floats, ``t`` an int."""
    params = np.zeros(4, dtype=dtype)
    grad = np.ones(4 + _TAIL, dtype=dtype)
    state = [np.zeros(4, dtype=dtype) for _ in range(3)]
    if "sgd" in kernels:
        sgd_update(params, grad, 1.0, 0.1, 0.0)
        rows = np.arange(2, dtype=np.int64)
        sgd_update_rows(params, grad, rows, rows.size, 1, 2, 1.0, 0.1, 0.0)
    if "momentum" in kernels:
        momentum_update(params, grad, state[0], 1.0, 0.1, 0.9, 0.0, False)
    if "adam" in kernels:
        adam_update(params, grad, state[1], state[2], 1.0, 0.1, 0.9, 0.999, 1e-8, 0.0, 1)
    if "proximal_sgd" in kernels:
        proximal_sgd_update(params, grad, state[0], 1.0, 0.1, 0.0, 0.01)


def warm_up(*, dtype: DTypeLike, label_dtype: DTypeLike, loss_kind: int | None = None,
            kernels: Collection[str] | None = None) -> None:
    """Compile or load every kernel (or those named in ``kernels``, see :data:`KERNELS`)
    for data ``dtype`` and labels ``label_dtype``.

    ``dtype`` is float32 or float64 (parameters, gradients, workspace, X); ``label_dtype``
    is int64 for classification or ``dtype`` for regression. ``loss_kind`` only chooses
    which heads get a smoke run (all of them when None): it is a run-time value, not part
    of the compiled signature.
    """
    dtype = np.dtype(dtype)
    label_dtype = np.dtype(label_dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64 (got {dtype})")
    if label_dtype not in (np.dtype(np.int64), dtype):
        raise ValueError(f"label_dtype must be int64 or {dtype} (got {label_dtype})")
    chosen = frozenset(KERNELS if kernels is None else kernels)
    unknown = sorted(chosen - frozenset(KERNELS))
    if unknown:
        raise ValueError(f"unknown kernels {unknown}; choose from {', '.join(KERNELS)}")
    kinds = LOSS_KINDS if loss_kind is None else (loss_kind,)
    for kind in kinds:
        _warm_network(dtype, label_dtype, kind, chosen)
    _warm_optimizers(dtype, chosen)
    if "compress" in chosen and dtype == np.dtype(np.float32):  # --compress needs float32
        compress.warm_up()
    if "shared" in chosen:
        shared.warm_up()
    if "tensor" in chosen:
        tensor.warm_up(dtype, label_dtype)
