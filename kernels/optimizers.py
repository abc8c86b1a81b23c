"""Optimizer updates on the flat parameter buffer, applied identically on every rank.

Every update loops over ``range(params.size)`` only: ``grad`` may be longer than
``params`` (tail slots: loss sum, counts, ...). ``scale`` multiplies the summed gradient
(the caller passes ``1 / global_row_count``) and L2 weight decay is added to the scaled
gradient: ``g = grad[i] * scale + weight_decay * params[i]``. Arithmetic is float64, each
result is stored once in the buffer dtype. All updates are in place and allocate nothing.

Argument types (keep them identical so numba compiles once per dtype): ``params``,
``grad`` and the state buffers (``velocity``, ``m``, ``v``, ``anchor``) are C-contiguous 1-D
arrays of the same float dtype; hyper-parameters are Python floats, ``nesterov`` a Python
bool and ``t`` a Python int.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "boundscheck": False}


@njit(**_JIT)
def _check_sizes(params, other):
    if other.size < params.size:
        raise ValueError("gradient/state buffer is shorter than params")


@njit(**_JIT)
def sgd_update(params, grad, scale, lr, weight_decay):
    """Plain SGD: ``params -= lr * g``."""
    _check_sizes(params, grad)
    for i in range(params.size):
        p = params[i]
        params[i] = p - lr * (grad[i] * scale + weight_decay * p)


@njit(**_JIT)
def sgd_update_rows(params, grad, rows, n, width, dense_start, scale, lr, weight_decay):
    """:func:`sgd_update` of only the rows ``rows[:n]`` (``width`` elements each, distinct)
    of the block ``params[:dense_start]`` and of everything from ``dense_start`` on: the
    same bits as the dense update wherever ``grad`` is 0 outside those rows and
    ``weight_decay`` is 0 (there the dense update computes ``p - lr * 0 == p``; for a
    finite ``p``: an infinite weight, which the dense update would make NaN, stays)."""
    _check_sizes(params, grad)
    if width == 1:
        for e in range(n):
            i = rows[e]
            p = params[i]
            params[i] = p - lr * (grad[i] * scale + weight_decay * p)
    for e in range(n if width != 1 else 0):
        base = rows[e] * width
        for c in range(width):
            i = base + c
            p = params[i]
            params[i] = p - lr * (grad[i] * scale + weight_decay * p)
    for i in range(dense_start, params.size):
        p = params[i]
        params[i] = p - lr * (grad[i] * scale + weight_decay * p)


@njit(**_JIT)
def momentum_update(params, grad, velocity, scale, lr, momentum, weight_decay, nesterov):
    """Heavy-ball / Nesterov momentum, PyTorch convention.

    ``v = momentum * v + g``; the step is ``g + momentum * v`` (Nesterov) or ``v``.
    """
    _check_sizes(params, grad)
    _check_sizes(params, velocity)
    for i in range(params.size):
        p = params[i]
        g = grad[i] * scale + weight_decay * p
        v = momentum * velocity[i] + g
        velocity[i] = v
        step = g + momentum * v if nesterov else v
        params[i] = p - lr * step


@njit(**_JIT)
def adam_update(params, grad, m, v, scale, lr, beta1, beta2, eps, weight_decay, t):
    """Adam with bias correction; ``t >= 1`` is the 1-based step number.

    Same formula as ``torch.optim.Adam`` with L2 ``weight_decay`` (not AdamW):
    ``params -= lr * m_hat / (sqrt(v_hat) + eps)``.
    """
    if t < 1:
        raise ValueError("adam step number t must be >= 1")
    _check_sizes(params, grad)
    _check_sizes(params, m)
    _check_sizes(params, v)
    bias1 = 1.0 - beta1**t
    bias2 = 1.0 - beta2**t
    for i in range(params.size):
        p = params[i]
        g = grad[i] * scale + weight_decay * p
        mi = beta1 * m[i] + (1.0 - beta1) * g
        vi = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i] = mi
        v[i] = vi
        params[i] = p - lr * (mi / bias1) / (np.sqrt(vi / bias2) + eps)


@njit(**_JIT)
def proximal_sgd_update(params, grad, anchor, scale, lr, weight_decay, mu):
    """FedProx local step: SGD on ``g + mu * (params - anchor)``."""
    _check_sizes(params, grad)
    _check_sizes(params, anchor)
    for i in range(params.size):
        p = params[i]
        g = grad[i] * scale + weight_decay * p + mu * (p - anchor[i])
        params[i] = p - lr * g
