"""The training step's gradient split into pieces the loop can interleave with communication.

:func:`mpitrain.kernels.network.network_grad` runs forward and backward in one call. The pieces here
compute exactly the same numbers (they call the same helpers in the same order), so a run
that uses them reproduces a run that does not, bit for bit:

- :func:`step_gradient`: the whole gradient plus the message tail (loss sum, correct count,
  row count) in one call, so the loop pays one kernel dispatch per step;
- :func:`forward_loss`: gather, forward and head (writes the tail and leaves the output
  deltas in the workspace);
- :func:`backward_layer`: the gradient of ONE layer, written into its slice of the flat
  buffer, and the deltas of the layer below. Called for ``layer = L-1, ..., 0`` in turn, so
  the caller can start reducing layer ``l``'s slice while layer ``l-1`` is computed.

Same argument types as :mod:`mpitrain.kernels.network` (``message`` is the flat gradient buffer of
the parameters' dtype followed by ``tail`` caller slots); nothing allocates.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .network import (
    _act_width,
    _backward,
    _bias_grad,
    _check_call,
    _check_labels,
    _forward,
    _gather_rows,
    _head,
    _input_view,
    _labels_view,
    _n_params,
    _relu_backward,
)

_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "boundscheck": False}


@njit(**_JIT)
def _write_tail(message, n, loss_sum, correct, nrows):
    """``message[n:n+3] = loss, correct, rows`` (a too large loss becomes inf, as a cast)."""
    if message.size < n + 3:
        raise ValueError("message needs 3 tail slots after the gradient")
    message[n] = loss_sum
    message[n + 1] = correct
    message[n + 2] = nrows


@njit(**_JIT)
def step_gradient(params, message, dims, loss_kind, X, y, rows, work):
    """``network_grad`` into ``message[:n]`` plus ``message[n:n+3] = loss, correct, rows``.

    Returns nothing: every result the loop needs is in the message.
    """
    forward_loss(params, message, dims, loss_kind, X, y, rows, work)
    if rows.size == 0:
        message[:params.size] = 0
        return
    _backward(params, message, dims, work, rows.size)


@njit(**_JIT)
def forward_loss(params, message, dims, loss_kind, X, y, rows, work):
    """First piece of a split step: deltas of the output layer in ``work``, tail written.

    Follow it with :func:`backward_layer` for every layer from the top down.
    """
    nrows = rows.size
    n = params.size
    _check_call(params, dims, loss_kind, X, nrows, work)
    _check_labels(X, y)
    if message.size < n:
        raise ValueError("message must have at least n_params(dims) slots")
    if nrows == 0:
        _write_tail(message, n, 0.0, 0.0, 0)
        return
    labels = _labels_view(dims, work, nrows)
    _gather_rows(X, y, rows, _input_view(dims, work, nrows), labels)
    logits = _forward(params, dims, work, nrows)
    loss_sum, correct = _head(logits, labels, loss_kind, True)
    _write_tail(message, n, loss_sum, correct, nrows)


@njit(**_JIT)
def layer_slice(dims, layer):
    """``(start, stop)`` of layer ``layer``'s ``W`` and ``b`` in the flat buffer."""
    start = 0
    for l in range(layer):
        start += dims[l] * dims[l + 1] + dims[l + 1]
    return start, start + dims[layer] * dims[layer + 1] + dims[layer + 1]


@njit(**_JIT)
def backward_layer(params, message, dims, work, nrows, layer):
    """Gradient of ``layer`` into its slice of ``message``; deltas of the layer below.

    Exactly the work :func:`mpitrain.kernels.network._backward` does for this layer. Layers must be
    processed from the top (``dims.size - 2``) down to 0 after :func:`forward_loss` with
    the same ``nrows``.
    """
    if layer < 0 or layer > dims.size - 2:
        raise ValueError("layer out of range")
    if message.size < _n_params(dims):
        raise ValueError("message must have at least n_params(dims) slots")
    w_start, p_end = layer_slice(dims, layer)
    din = dims[layer]
    dout = dims[layer + 1]
    b_start = p_end - dout
    if nrows == 0:
        message[w_start:p_end] = 0
        return
    a_start = 0
    for l in range(layer):
        a_start += nrows * dims[l]
    d_start = a_start + nrows * din
    D = work[d_start : d_start + nrows * dout].reshape((nrows, dout))
    A = work[a_start:d_start].reshape((nrows, din))
    np.dot(A.T, D, message[w_start:b_start].reshape((din, dout)))
    _bias_grad(D, message[b_start:p_end])
    if layer > 0:
        scratch = work[nrows * _act_width(dims) + nrows :]
        W = params[w_start:b_start].reshape((din, dout))
        T = scratch[: nrows * din].reshape((nrows, din))
        np.dot(D, W.T, T)
        _relu_backward(T, A)
