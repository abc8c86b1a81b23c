"""Plain numpy references for the numba kernels.

Idiomatic vectorised numpy (one matrix product per layer over the whole batch, allocating
as numpy does). They define what the kernels must compute (tests) and are the "plain numpy
step" that the numba kernels are benchmarked against, so keep them honest and efficient.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from .network import BINARY_XENT, SOFTMAX_XENT, n_params


def unpack(params: np.ndarray, dims: Sequence[int] | np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Views ``[(W0, b0), (W1, b1), ...]`` into a flat parameter (or gradient) buffer."""
    layers = []
    p = 0
    for din, dout in pairwise(int(v) for v in dims):
        W = params[p : p + din * dout].reshape(din, dout)
        b = params[p + din * dout : p + din * dout + dout]
        layers.append((W, b))
        p += din * dout + dout
    return layers


def _forward(
    params: np.ndarray, dims: Sequence[int] | np.ndarray, A: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    """Input activations of every layer and the output logits for the rows ``A``."""
    layers = unpack(params, dims)
    inputs = []
    for l, (W, b) in enumerate(layers):
        inputs.append(A)
        Z = A @ W + b
        A = np.maximum(Z, 0) if l < len(layers) - 1 else Z
    return inputs, A


def _head(
    Z: np.ndarray, y: np.ndarray, loss_kind: int
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-batch head: (dloss/dZ, predictions, loss_sum, correct) for logits ``Z``."""
    if loss_kind == SOFTMAX_XENT:
        labels = np.asarray(y, dtype=np.int64)
        m = Z.max(axis=1, keepdims=True)
        E = np.exp(Z - m)
        s = E.sum(axis=1, keepdims=True)
        picked = Z[np.arange(len(Z)), labels]
        loss = np.sum(m[:, 0] + np.log(s[:, 0]) - picked, dtype=np.float64)
        delta = E / s
        delta[np.arange(len(Z)), labels] -= 1
        pred = Z.argmax(axis=1)
        return delta, pred, float(loss), float(np.sum(pred == labels))
    z = Z[:, 0]
    yf = y.astype(Z.dtype)
    if loss_kind == BINARY_XENT:
        loss = np.sum(np.maximum(z, 0) - z * yf + np.log1p(np.exp(-np.abs(z))), dtype=np.float64)
        prob = np.exp(-np.logaddexp(0, -z))
        correct = float(np.sum((z > 0) == (yf == 1)))
        return (prob - yf)[:, None], prob, float(loss), correct
    r = z - yf
    return (2 * r)[:, None], z, float(np.sum(r * r, dtype=np.float64)), 0.0


def reference_grad(
    params: np.ndarray,
    dims: Sequence[int] | np.ndarray,
    loss_kind: int,
    X: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray,
) -> tuple[np.ndarray, float, float]:
    """Summed gradient (new array of ``n_params`` elements), loss sum and correct count."""
    inputs, Z = _forward(params, dims, X[rows])
    delta, _, loss, correct = _head(Z, y[rows], loss_kind)
    grad = np.empty(n_params(dims), dtype=params.dtype)
    layers = unpack(params, dims)
    grad_layers = unpack(grad, dims)
    for l in range(len(layers) - 1, -1, -1):
        gW, gb = grad_layers[l]
        A = inputs[l]
        np.matmul(A.T, delta, out=gW)
        delta.sum(axis=0, out=gb)
        if l > 0:
            delta = (delta @ layers[l][0].T) * (A > 0)
    return grad, loss, correct


def reference_loss(
    params: np.ndarray, dims: Sequence[int] | np.ndarray, loss_kind: int, X: np.ndarray,
    y: np.ndarray,
) -> tuple[float, float]:
    """Loss sum and correct count over all rows of ``X`` (one shot, no chunking)."""
    _, Z = _forward(params, dims, X)
    _, _, loss, correct = _head(Z, y, loss_kind)
    return loss, correct


def reference_predict(
    params: np.ndarray, dims: Sequence[int] | np.ndarray, loss_kind: int, X: np.ndarray
) -> np.ndarray:
    """Regression value / probability of class 1 / arg-max class for every row of ``X``."""
    _, Z = _forward(params, dims, X)
    dummy = np.zeros(len(X), dtype=np.int64)
    return _head(Z, dummy, loss_kind)[1].astype(np.float64)


def _decayed(params: np.ndarray, grad: np.ndarray, scale: float, weight_decay: float):
    return grad[: params.size] * scale + weight_decay * params


def reference_sgd(
    params: np.ndarray, grad: np.ndarray, scale: float, lr: float, weight_decay: float
) -> None:
    """In place: ``params -= lr * (grad * scale + weight_decay * params)``."""
    params -= lr * _decayed(params, grad, scale, weight_decay)


def reference_momentum(
    params: np.ndarray, grad: np.ndarray, velocity: np.ndarray, scale: float, lr: float,
    momentum: float, weight_decay: float, nesterov: bool,
) -> None:
    """In place, PyTorch convention: ``v = momentum*v + g``; step ``g + momentum*v`` or ``v``."""
    g = _decayed(params, grad, scale, weight_decay)
    velocity *= momentum
    velocity += g
    params -= lr * (g + momentum * velocity if nesterov else velocity)


def reference_adam(
    params: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, scale: float,
    lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, t: int,
) -> None:
    """In place Adam with bias correction (torch.optim.Adam with L2 ``weight_decay``)."""
    g = _decayed(params, grad, scale, weight_decay)
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    params -= lr * m_hat / (np.sqrt(v_hat) + eps)


def reference_proximal_sgd(
    params: np.ndarray, grad: np.ndarray, anchor: np.ndarray, scale: float, lr: float,
    weight_decay: float, mu: float,
) -> None:
    """In place FedProx step: SGD on ``g + mu * (params - anchor)``."""
    params -= lr * (_decayed(params, grad, scale, weight_decay) + mu * (params - anchor))
