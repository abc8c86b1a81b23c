"""The dense network's kernels with the model protocol's argument lists.

:mod:`mpitrain.models.protocol` calls every model's kernels the same way, with the model's
settings in one ``spec`` array read at run time. For the built-in dense networks ``spec``
is the int64 array ``[loss_kind, d0, d1, ..., dL]`` (the head, then the layer sizes), and
each kernel here forwards to the fused kernels of :mod:`.network` and :mod:`.backward`
(numba inlines the call: no extra dispatch per step, the same numbers bit for bit).

Argument types are those of :mod:`.network`; ``rows`` are int64 indices into ``X``;
``out`` of :func:`dense_predict` is a C-contiguous 2-D array ``(len(rows), outputs)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .backward import backward_layer, forward_loss, layer_slice, step_gradient
from .network import (
    BINARY_XENT,
    SOFTMAX_XENT,
    _check_call,
    _exp_nonpositive,
    _forward,
    _gather_rows,
    _head,
    _input_view,
    _labels_view,
    _row_max,
    _sigmoid,
    network_grad,
)

_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "boundscheck": False}


@njit(**_JIT)
def dense_gradient(params, grad, X, y, rows, work, spec):
    """Protocol ``gradient_kernel``: overwrites ``grad[:n]``; returns (loss sum, correct)."""
    return network_grad(params, grad, spec[1:], spec[0], X, y, rows, work)


@njit(**_JIT)
def dense_step(params, message, X, y, rows, work, spec):
    """Protocol ``step_kernel``: gradient plus ``message[n:n+3] = loss, correct, rows``."""
    step_gradient(params, message, spec[1:], spec[0], X, y, rows, work)


@njit(**_JIT)
def dense_forward(params, message, X, y, rows, work, spec):
    """Protocol ``forward_kernel``: output deltas in ``work`` and the tail written."""
    forward_loss(params, message, spec[1:], spec[0], X, y, rows, work)


@njit(**_JIT)
def dense_backward(params, message, nrows, layer, work, spec):
    """Protocol ``backward_kernel``: gradient of ``layer`` into its slice of ``message``."""
    backward_layer(params, message, spec[1:], work, nrows, layer)


@njit(**_JIT)
def dense_bucket(spec, layer):
    """(start, stop) of ``layer``'s parameters in the flat buffer."""
    return layer_slice(spec[1:], layer)


@njit(**_JIT)
def _gather_chunk(params, dims, loss_kind, X, y, rows, work):
    """Gather ``X[rows]`` (and labels) into the workspace and run the forward pass."""
    nrows = rows.size
    _check_call(params, dims, loss_kind, X, nrows, work)
    labels = _labels_view(dims, work, nrows)
    _gather_rows(X, y, rows, _input_view(dims, work, nrows), labels)
    return _forward(params, dims, work, nrows), labels


@njit(**_JIT)
def dense_loss(params, X, y, rows, work, spec):
    """Protocol ``loss_kernel``: (loss sum, correct) of ``X[rows]``, forward only."""
    if rows.size == 0:
        return 0.0, 0.0
    logits, labels = _gather_chunk(params, spec[1:], spec[0], X, y, rows, work)
    return _head(logits, labels, spec[0], False)


@njit(**_JIT)
def dense_predict(params, X, rows, out, work, spec):
    """Protocol ``predict_kernel``: per row, class probabilities (softmax; ``[1 - p, p]``
    for the logistic head) or the regression value."""
    nrows = rows.size
    if nrows == 0:
        return
    dims = spec[1:]
    kind = spec[0]
    # labels are not needed: gather X[rows] with row indices as stand-in labels
    logits, _ = _gather_chunk(params, dims, kind, X, rows, rows, work)
    outputs_of_logits(logits, kind, out)


@njit(**_JIT)
def outputs_of_logits(logits, kind, out):
    """The predict kernel's outputs from the logits (which it overwrites): class
    probabilities (softmax; ``[1 - p, p]`` for the logistic head) or regression values."""
    nrows = logits.shape[0]
    if kind == SOFTMAX_XENT:
        for i in range(nrows):
            z = logits[i]
            m, _ = _row_max(z)
            for j in range(z.size):
                z[j] = z[j] - m
        _exp_nonpositive(logits.reshape(logits.size))
        for i in range(nrows):
            z = logits[i]
            s = 0.0
            for j in range(z.size):
                s += z[j]
            for j in range(z.size):
                out[i, j] = z[j] / s
    elif kind == BINARY_XENT:
        for i in range(nrows):
            p = _sigmoid(np.float64(logits[i, 0]))
            out[i, 0] = 1.0 - p
            out[i, 1] = p
    else:
        for i in range(nrows):
            out[i, 0] = logits[i, 0]
