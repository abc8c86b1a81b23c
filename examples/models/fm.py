"""A factorization machine (Rendle 2010) written through mpitrain's model protocol.

    f(x) = w0 + sum_i w_i x_i + 1/2 sum_f [(sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2]

with the logistic loss on binary labels (click / no click). The kernels skip zero features,
so rows of one-hot user and item ids (recommendation, CTR) cost O(non-zeros x rank).

Train it with the CLI (from this folder) or from Python:

    mpiexec -n 2 python -m mpitrain train --model fm.py:FactorizationMachine \
        --model-options '{"rank": 8}' --data ctr.npz --no-standardize
    python -c "import mpitrain, fm; mpitrain.train(model=fm.FactorizationMachine(rank=8), ...)"
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mpitrain.models import Model

JIT = {"cache": True, "nogil": True, "boundscheck": False}


@njit(**JIT)
def _score(params, X, r, d, k, s):
    """f(x_r); leaves s_f = sum_i v_if x_ri in ``s``."""
    w0 = params[0]
    total = w0
    squares = 0.0
    for f in range(k):
        s[f] = 0.0
    for i in range(d):
        x = X[r, i]
        if x == 0.0:
            continue
        total += params[1 + i] * x
        base = 1 + d + i * k
        for f in range(k):
            v = params[base + f] * x
            s[f] += v
            squares += v * v
    pairs = 0.0
    for f in range(k):
        pairs += s[f] * s[f]
    return total + 0.5 * (pairs - squares)


@njit(**JIT)
def _sigmoid(z):
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@njit(**JIT)
def fm_gradient(params, grad, X, y, rows, work, spec):
    """Adds the gradient of the summed logistic loss; returns (loss sum, correct)."""
    d, k = X.shape[1], spec[0]
    s = work[:k]
    loss = 0.0
    correct = 0.0
    for r in rows:
        z = _score(params, X, r, d, k, s)
        t = float(y[r])
        loss += max(z, 0.0) - z * t + math.log1p(math.exp(-abs(z)))
        if (z > 0.0) == (t == 1.0):
            correct += 1.0
        g = _sigmoid(z) - t  # dloss/dz
        grad[0] += g
        for i in range(d):
            x = X[r, i]
            if x == 0.0:
                continue
            grad[1 + i] += g * x
            base = 1 + d + i * k
            for f in range(k):
                grad[base + f] += g * x * (s[f] - params[base + f] * x)
    return loss, correct


@njit(**JIT)
def fm_predict(params, X, rows, out, work, spec):
    """[P(no click), P(click)] per row."""
    d, k = X.shape[1], spec[0]
    s = work[:k]
    for j in range(rows.size):
        p = _sigmoid(_score(params, X, rows[j], d, k, s))
        out[j, 0] = 1.0 - p
        out[j, 1] = p


class FactorizationMachine(Model):
    """Binary classifier with pairwise feature interactions of rank ``rank``."""

    task = "classification"
    gradient_kernel = fm_gradient
    predict_kernel = fm_predict

    def __init__(self, *, rank: int = 8, init_scale: float = 0.01) -> None:
        self.rank = rank
        self.init_scale = init_scale

    def shapes(self, *, n_features, n_classes):
        return {"w0": (1,), "w": (n_features,), "V": (n_features, self.rank)}

    def spec(self, *, n_features, n_classes):
        return np.array([self.rank], dtype=np.int64)

    def workspace(self, *, n_features, n_classes, rows):
        return self.rank

    def init(self, params, rng):
        params["w0"][...] = 0.0
        params["w"][...] = 0.0
        params["V"][...] = rng.normal(0.0, self.init_scale, params["V"].shape)

    def outputs(self, *, n_classes):
        return 2

    def check_data(self, *, n_features, n_classes):
        if n_classes > 2:
            return (f"FactorizationMachine needs binary labels 0/1 but the data has "
                    f"{n_classes} classes")
        return None


def make_ctr(path: str, *, users: int = 60, items: int = 40, rows: int = 4000,
             rank: int = 3, seed: int = 0) -> None:
    """Synthetic click data: one-hot user and item ids; a click when the user's and the
    item's hidden tastes agree (an interaction no linear model can express)."""
    rng = np.random.default_rng(seed)
    taste_u = rng.normal(size=(users, rank))
    taste_i = rng.normal(size=(items, rank))
    u = rng.integers(0, users, rows)
    i = rng.integers(0, items, rows)
    X = np.zeros((rows, users + items))
    X[np.arange(rows), u] = 1.0
    X[np.arange(rows), users + i] = 1.0
    y = ((taste_u[u] * taste_i[i]).sum(axis=1) + 0.3 * rng.normal(size=rows) > 0)
    np.savez(path, X=X, y=y.astype(np.int64))
