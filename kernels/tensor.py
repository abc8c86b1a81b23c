"""Kernels of a tensor-parallel dense network (``--tensor-parallel T``, Megatron-style).

Each hidden layer pair ``(2p, 2p + 1)`` of an MLP is split over the ``T`` ranks of a
tensor-parallel group: the first weight matrix by columns (each rank computes its block of
the hidden activation, ReLU stays local), the second by rows (each rank multiplies its
block of the activation by its rows, giving a partial sum of the layer's output). The
caller (:mod:`mpitrain.strategies.tensor`) sums the partial outputs over the group between
:func:`tp_matmul` and :func:`tp_bias_act` (forward), and the partial input deltas of a
column-split layer between :func:`tp_input_delta` and :func:`tp_relu_backward` (backward).

Pure functions on 2-D C-contiguous blocks of the float dtype; no MPI, no allocation. The
per-block arithmetic is that of :mod:`.network` (the same head, bias, ReLU and gradient
code), so one rank with ``T = 1`` computes what :func:`.network.network_grad` does.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .network import _add_bias, _add_bias_relu, _bias_grad, _head, _relu_backward

_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "boundscheck": False}


@njit(**_JIT)
def tp_pack(X, y, rows, vote, message):
    """This rank's message of the group's row gather: ``[len(rows), vote]``, then ``X[r]``
    and ``y[r]`` for each ``r`` in ``rows`` (``d + 1`` elements a row)."""
    n, d = X.shape
    message[0] = rows.size
    message[1] = vote
    at = 2
    for i in range(rows.size):
        r = rows[i]
        if r < 0 or r >= n:
            raise IndexError("row index out of range")
        for j in range(d):
            message[at + j] = X[r, j]
        message[at + d] = y[r]
        at += d + 1


@njit(**_JIT)
def tp_unpack(messages, b, A, labels):
    """The gathered messages of :func:`tp_pack`, rank ``t``'s at ``messages[t, b]``: their
    rows, in rank order, into the input block ``A`` and ``labels``; returns (rows, the
    largest vote)."""
    d = A.shape[1]
    n = 0
    vote = 0.0
    for t in range(messages.shape[0]):
        message = messages[t, b]
        vote = max(vote, message[1])
        at = 2
        for _ in range(int(message[0])):
            for j in range(d):
                A[n, j] = message[at + j]
            labels[n] = message[at + d]
            n += 1
            at += d + 1
    return n, vote


@njit(**_JIT)
def tp_matmul(A, W, Z):
    """``Z = A @ W`` (a row-split layer's partial output, before the group sum)."""
    np.dot(A, W, Z)


@njit(**_JIT)
def tp_bias_act(Z, b, relu):
    """``Z += b`` and, for a hidden layer, ReLU in place."""
    if relu:
        _add_bias_relu(Z, b)
    else:
        _add_bias(Z, b)


@njit(**_JIT)
def tp_linear(A, W, b, Z, relu):
    """A whole (or column-split) layer: ``Z = act(A @ W + b)``."""
    np.dot(A, W, Z)
    tp_bias_act(Z, b, relu)


@njit(**_JIT)
def tp_head(Z, labels, loss_kind, want_delta):
    """(loss sum, correct) of the logits; with ``want_delta`` ``Z <- dloss/dZ``."""
    return _head(Z, labels, loss_kind, want_delta)


@njit(**_JIT)
def tp_layer_grad(A, D, gW, gb):
    """``gW = A^T D`` and ``gb = sum_rows D`` (this rank's block of a layer's gradient)."""
    np.dot(A.T, D, gW)
    _bias_grad(D, gb)


@njit(**_JIT)
def tp_input_delta(D, W, T):
    """``T = D W^T``: the delta at the layer's input (partial for a column-split layer)."""
    np.dot(D, W.T, T)


@njit(**_JIT)
def tp_backprop(D, W, T, A):
    """``A <- (D W^T) * (A > 0)`` through the scratch block ``T``: a layer whose input
    delta needs no group sum (row-split or whole)."""
    np.dot(D, W.T, T)
    _relu_backward(T, A)


@njit(**_JIT)
def tp_relu_backward(T, A):
    """``A <- T * (A > 0)``: the pre-activation delta of the layer below."""
    _relu_backward(T, A)


def warm_up(dtype: np.dtype, label_dtype: np.dtype) -> None:
    """Run every kernel once with the argument types the strategy passes."""
    rows, d, h, k = 3, 2, 4, 2
    X = np.arange(rows * d, dtype=dtype).reshape(rows, d)
    y = (np.arange(rows) % k).astype(label_dtype)
    messages = np.zeros((1, 2, 2 + rows * (d + 1)), dtype=dtype)
    tp_pack(X, y, np.arange(rows, dtype=np.int64), 0.0, messages[0, 1])
    A = np.zeros((rows, d), dtype=dtype)
    labels = np.zeros(rows, dtype=dtype)
    tp_unpack(messages, 1, A, labels)
    flat = np.linspace(-1.0, 1.0, d * h + h * k).astype(dtype)
    W0, W1 = flat[:d * h].reshape(d, h), flat[d * h:].reshape(h, k)
    b0, b1 = np.zeros(h, dtype=dtype), np.zeros(k, dtype=dtype)
    H, Z = np.zeros((rows, h), dtype=dtype), np.zeros((rows, k), dtype=dtype)
    tp_linear(A, W0, b0, H, True)
    tp_matmul(H, W1, Z)
    tp_bias_act(Z, b1, False)
    tp_head(Z, labels, 2, True)
    gW1, gW0 = np.zeros((h, k), dtype=dtype), np.zeros((d, h), dtype=dtype)
    tp_layer_grad(H, Z, gW1, b1)
    delta = np.zeros((rows, h), dtype=dtype)
    tp_input_delta(Z, W1, delta)
    tp_relu_backward(delta, H)
    tp_backprop(Z, W1, delta, H)
    tp_layer_grad(A, H, gW0, b0)
