"""The MLP with a sparse first layer: CSR rows times a dense ``W1``, the rest of the network
dense, exactly as :mod:`.network` runs it.

``spec`` is the dense network's ``[loss_kind, d, h1, ..., k]`` (at least one hidden layer)
and the flat buffer the same ``W1 (d, h1), b1, W2, b2, ...``; ``X`` is the CSR triple
``(data, indices, indptr)`` of :mod:`.sparse`. The first layer costs time in the batch's
non-zeros times ``h1`` (not ``d``): ``H1 = relu(X[rows] @ W1 + b1)`` accumulated row by row
over each row's non-zeros; the layers above are :mod:`.network`'s own helpers on the
"tail" network ``[h1, ..., k]`` whose input is ``H1``; its backward pass leaves the deltas
of ``H1``'s layer, from which ``dW1 = X[rows]^T D1`` touches only the rows of ``W1`` of
the columns present in the batch (the others stay 0) and ``db1 = sum D1``.

Workspace for ``n`` rows (:func:`sparse_mlp_workspace_size`): the tail network's workspace
``[H1 | A_2 | ... | logits | labels | scratch]`` with a scratch block wide enough for
``(n, h1)`` (where ``D2 W2^T`` lands before the ReLU mask turns it into ``D1``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .backward import _write_tail
from .dense import outputs_of_logits
from .network import (
    _act_width,
    _backward,
    _bias_grad,
    _forward,
    _head,
    _labels_view,
    _n_params,
    _relu_backward,
    _widest_hidden,
    as_dims,
)
from .sparse import _logits, add_csr_outer, check_csr

_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "boundscheck": False}


def sparse_mlp_workspace_size(dims, rows: int) -> int:
    """Workspace elements for batches of up to ``rows`` rows of the network ``dims``
    (``[d, h1, ..., k]``, at least one hidden layer)."""
    arr = as_dims(dims)
    if arr.size < 3:
        raise ValueError("the sparse MLP needs at least one hidden layer")
    return max(1, rows) * int(_tail_width.py_func(arr))


@njit(**_JIT)
def _tail_width(dims):
    """Workspace elements per batch row: the tail network's, scratch at least ``h1``."""
    tail = dims[1:]
    return _act_width(tail) + 1 + max(_widest_hidden(tail), dims[1])


@njit(**_JIT)
def _check(params, X, spec, nrows, work):
    dims = spec[1:]
    if dims.size < 3:
        raise ValueError("sparse MLP kernels need spec = [loss_kind, d, h1, ..., k]")
    if params.size != _n_params(dims):
        raise ValueError("params.size must equal n_params(dims)")
    if work.size < nrows * _tail_width(dims):
        raise ValueError("work is smaller than sparse_mlp_workspace_size(dims, rows)")
    check_csr(X)


@njit(**_JIT)
def _first_layer(params, X, rows, work, spec):
    """``H1 = relu(X[rows] @ W1 + b1)`` into the start of the workspace (the one-layer
    sparse kernels' logits of ``W1, b1``, then the ReLU)."""
    H = _logits(params, X, rows, work, spec)  # (reads spec[1], spec[2]: d, h1)
    for i in range(H.shape[0]):
        for c in range(H.shape[1]):
            z = H[i, c]
            H[i, c] = 0 if z < 0 else z  # NaN propagates, like the dense ReLU
    return H


@njit(**_JIT)
def _forward_all(params, X, y, rows, work, spec):
    """First layer, labels and the dense layers above: the logits ``(n, k)``."""
    n = rows.size
    tail = spec[2:]
    start = spec[1] * spec[2] + spec[2]
    _first_layer(params, X, rows, work, spec)
    labels = _labels_view(tail, work, n)
    for i in range(n):
        labels[i] = y[rows[i]]
    return _forward(params[start:], tail, work, n), labels


@njit(**_JIT)
def sparse_mlp_gradient(params, grad, X, y, rows, work, spec):
    """Protocol ``gradient_kernel``: overwrites ``grad[:n_params]`` with the summed
    gradient; returns (loss sum, correct). Rows of ``W1`` of absent columns stay 0."""
    nrows = rows.size
    _check(params, X, spec, nrows, work)
    d, h = spec[1], spec[2]
    tail = spec[2:]
    start = d * h + h
    grad[: d * h] = 0
    if nrows == 0:
        grad[d * h : params.size] = 0
        return 0.0, 0.0
    logits, labels = _forward_all(params, X, y, rows, work, spec)
    loss, correct = _head(logits, labels, spec[0], True)
    _backward(params[start:], grad[start : params.size], tail, work, nrows)
    # D2 (the deltas of the second layer's output) are where _backward left them
    h2 = tail[1]
    H = work[: nrows * h].reshape((nrows, h))
    D2 = work[nrows * h : nrows * (h + h2)].reshape((nrows, h2))
    W2 = params[start : start + h * h2].reshape((h, h2))
    scratch = work[nrows * _act_width(tail) + nrows :]
    T = scratch[: nrows * h].reshape((nrows, h))
    np.dot(D2, W2.T, T)
    _relu_backward(T, H)  # H now holds D1
    add_csr_outer(grad[: d * h].reshape((d, h)), X, rows, H)
    _bias_grad(H, grad[d * h : start])
    return loss, correct


@njit(**_JIT)
def sparse_mlp_step(params, message, X, y, rows, work, spec):
    """Protocol ``step_kernel``: the gradient plus ``message[n:n+3] = loss, correct, rows``."""
    loss, correct = sparse_mlp_gradient(params, message, X, y, rows, work, spec)
    _write_tail(message, params.size, loss, correct, rows.size)


@njit(**_JIT)
def sparse_mlp_loss(params, X, y, rows, work, spec):
    """Protocol ``loss_kernel``: (loss sum, correct) of ``X[rows]``, forward only."""
    _check(params, X, spec, rows.size, work)
    if rows.size == 0:
        return 0.0, 0.0
    logits, labels = _forward_all(params, X, y, rows, work, spec)
    return _head(logits, labels, spec[0], False)


@njit(**_JIT)
def sparse_mlp_predict(params, X, rows, out, work, spec):
    """Protocol ``predict_kernel``: the dense predict kernel's outputs for ``X[rows]``."""
    _check(params, X, spec, rows.size, work)
    if rows.size == 0:
        return
    # labels are not needed: the row indices stand in for them
    logits, _ = _forward_all(params, X, rows, rows, work, spec)
    outputs_of_logits(logits, spec[0], out)
