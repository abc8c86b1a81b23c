"""Compile (first run) or load from numba's on-disk cache every kernel before training.

mpitrain runs :func:`warm_up` on rank 0 first and then on the other ranks, so processes
never race on the cache. The arguments built here have exactly the types the training loop
passes (see the "Argument types" notes in :mod:`kernels.network` and
:mod:`kernels.optimizers`), so no compilation happens later.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from kernels.network import (
    LOSS_KINDS,
    SOFTMAX_XENT,
    as_dims,
    n_params,
    network_grad,
    network_loss,
    network_predict,
    workspace_size,
)
from kernels.optimizers import adam_update, momentum_update, proximal_sgd_update, sgd_update

_ROWS = 4
_TAIL = 3


def _warm_network(dtype: np.dtype, label_dtype: np.dtype, loss_kind: int) -> None:
    """Run the network kernels once on a tiny [2, 3, k] network (one hidden layer)."""
    k = 2 if loss_kind == SOFTMAX_XENT else 1
    dims = as_dims([2, 3, k])
    params = np.linspace(-1.0, 1.0, n_params(dims)).astype(dtype)
    grad = np.zeros(n_params(dims) + _TAIL, dtype=dtype)
    X = np.arange(2 * _ROWS, dtype=dtype).reshape(_ROWS, 2)
    y = (np.arange(_ROWS) % 2).astype(label_dtype)
    rows = np.arange(_ROWS, dtype=np.int64)
    work = np.empty(workspace_size(dims, _ROWS), dtype=dtype)
    out = np.empty(_ROWS, dtype=dtype)
    network_grad(params, grad, dims, int(loss_kind), X, y, rows, work)
    network_loss(params, dims, int(loss_kind), X, y, work, _ROWS)
    network_predict(params, dims, int(loss_kind), X, out, work, _ROWS)


def _warm_optimizers(dtype: np.dtype) -> None:
    """Run every optimizer once; hyper-parameters are Python floats, ``t`` a Python int."""
    params = np.zeros(4, dtype=dtype)
    grad = np.ones(4 + _TAIL, dtype=dtype)
    state = [np.zeros(4, dtype=dtype) for _ in range(3)]
    sgd_update(params, grad, 1.0, 0.1, 0.0)
    momentum_update(params, grad, state[0], 1.0, 0.1, 0.9, 0.0, False)
    adam_update(params, grad, state[1], state[2], 1.0, 0.1, 0.9, 0.999, 1e-8, 0.0, 1)
    proximal_sgd_update(params, grad, state[0], 1.0, 0.1, 0.0, 0.01)


def warm_up(*, dtype: DTypeLike, label_dtype: DTypeLike, loss_kind: int | None = None) -> None:
    """Compile or load every kernel for data ``dtype`` and labels ``label_dtype``.

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
    kinds = LOSS_KINDS if loss_kind is None else (loss_kind,)
    for kind in kinds:
        _warm_network(dtype, label_dtype, kind)
    _warm_optimizers(dtype)
