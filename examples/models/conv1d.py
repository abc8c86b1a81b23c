"""A small 1-D convolutional network written through mpitrain's model protocol.

Each row is a signal of ``n_features`` samples. ``filters`` convolution filters of width
``width`` (valid positions, stride 1) with ReLU, global average pooling over positions, a
dense layer to one logit per class, softmax cross-entropy. Direct loops in numba; the
workspace holds every activation, so the kernels allocate nothing.

    mpiexec -n 2 python -m mpitrain train --model conv1d.py:Conv1D \
        --model-options '{"filters": 8, "width": 5}' --data signals.npz
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mpitrain.models import Model

JIT = {"cache": True, "nogil": True, "boundscheck": False}


@njit(**JIT)
def _offsets(spec, d):
    """Offsets of Wc (C, K), bc (C,), Wd (C, k), bd (k,) and the positions T."""
    C, K, k = spec[0], spec[1], spec[2]
    wc = 0
    bc = wc + C * K
    wd = bc + C
    bd = wd + C * k
    return C, K, k, d - K + 1, wc, bc, wd, bd


@njit(**JIT)
def _forward(params, X, r, spec, work):
    """Activations of row ``r`` into ``work``: ReLU maps (C*T), pooled (C), logits (k)."""
    C, K, k, T, wc, bc, wd, bd = _offsets(spec, X.shape[1])
    pooled = work[C * T:C * T + C]
    logits = work[C * T + C:C * T + C + k]
    for c in range(C):
        total = 0.0
        for t in range(T):
            z = params[bc + c]
            for j in range(K):
                z += params[wc + c * K + j] * X[r, t + j]
            z = z if z > 0.0 else 0.0
            work[c * T + t] = z
            total += z
        pooled[c] = total / T
    for m in range(k):
        z = params[bd + m]
        for c in range(C):
            z += pooled[c] * params[wd + c * k + m]
        logits[m] = z
    return pooled, logits


@njit(**JIT)
def _softmax(logits):
    """Softmax in place; returns log of the normaliser (logsumexp)."""
    top = logits[0]
    for m in range(1, logits.size):
        top = max(top, logits[m])
    total = 0.0
    for m in range(logits.size):
        logits[m] = math.exp(logits[m] - top)
        total += logits[m]
    for m in range(logits.size):
        logits[m] /= total
    return top + math.log(total)


@njit(**JIT)
def conv_gradient(params, grad, X, y, rows, work, spec):
    """Adds the gradient of the summed cross-entropy; returns (loss sum, correct)."""
    C, K, k, T, wc, bc, wd, bd = _offsets(spec, X.shape[1])
    dpool = work[C * T + C + k:C * T + C + k + C]
    loss = 0.0
    correct = 0.0
    for r in rows:
        pooled, logits = _forward(params, X, r, spec, work)
        label = y[r]
        best = 0
        for m in range(1, k):
            if logits[m] > logits[best]:
                best = m
        correct += 1.0 if best == label else 0.0
        z_label = logits[label]
        loss += _softmax(logits) - z_label
        logits[label] -= 1.0  # now dloss/dlogits
        for c in range(C):
            total = 0.0
            for m in range(k):
                grad[wd + c * k + m] += pooled[c] * logits[m]
                total += params[wd + c * k + m] * logits[m]
            dpool[c] = total / T
        for m in range(k):
            grad[bd + m] += logits[m]
        for c in range(C):
            for t in range(T):
                if work[c * T + t] <= 0.0:
                    continue
                g = dpool[c]
                grad[bc + c] += g
                for j in range(K):
                    grad[wc + c * K + j] += g * X[r, t + j]
    return loss, correct


@njit(**JIT)
def conv_predict(params, X, rows, out, work, spec):
    """Class probabilities per row."""
    for i in range(rows.size):
        _, logits = _forward(params, X, rows[i], spec, work)
        _softmax(logits)
        for m in range(logits.size):
            out[i, m] = logits[m]


class Conv1D(Model):
    """Conv (``filters`` x ``width``) → ReLU → global average pool → dense → softmax."""

    task = "classification"
    gradient_kernel = conv_gradient
    predict_kernel = conv_predict

    def __init__(self, *, filters: int = 8, width: int = 5) -> None:
        self.filters = filters
        self.width = width

    def shapes(self, *, n_features, n_classes):
        return {"Wc": (self.filters, self.width), "bc": (self.filters,),
                "Wd": (self.filters, n_classes), "bd": (n_classes,)}

    def spec(self, *, n_features, n_classes):
        return np.array([self.filters, self.width, n_classes], dtype=np.int64)

    def workspace(self, *, n_features, n_classes, rows):
        positions = n_features - self.width + 1
        return self.filters * positions + 2 * self.filters + n_classes

    def init(self, params, rng):
        for name, fan_in in (("Wc", self.width), ("bc", self.width),
                             ("Wd", self.filters), ("bd", self.filters)):
            bound = 1.0 / math.sqrt(fan_in)
            params[name][...] = rng.uniform(-bound, bound, params[name].shape)

    def check_data(self, *, n_features, n_classes):
        if self.width > n_features:
            return (f"Conv1D(width={self.width}) needs rows of at least {self.width} "
                    f"samples (the data has {n_features} features)")
        return None


def make_signals(path: str, *, rows: int = 3000, length: int = 48, seed: int = 0) -> None:
    """Synthetic signals: a bump, a dip or a short oscillation at a random position, in
    noise (class 0, 1, 2). The position varies, so a linear model on the raw samples does
    poorly while a convolution with pooling does well."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    y = rng.integers(0, 3, rows)
    centre = rng.integers(6, length - 6, rows)
    X = 0.5 * rng.normal(size=(rows, length))
    shape = np.exp(-0.5 * ((t[None, :] - centre[:, None]) / 2.0) ** 2)
    wave = np.sin(1.6 * (t[None, :] - centre[:, None])) * shape
    X += np.where(y[:, None] == 0, 2 * shape, np.where(y[:, None] == 1, -2 * shape, 2 * wave))
    np.savez(path, X=X, y=y.astype(np.int64))
