"""Models that break the protocol on purpose, for tests/test_models.py."""

import numpy as np
from numba import njit

from mpitrain.models import Model


@njit(cache=False)
def _predict(params, X, rows, out, work, spec):
    for i in range(rows.size):
        out[i, 0] = 1.0
        out[i, 1] = 0.0


@njit(cache=False)
def _no_compile(params, grad, X, y, rows, work, spec):
    return undefined_name + 1.0, 0.0  # noqa: F821


@njit(cache=False)
def _too_long(params, grad, X, y, rows, work, spec):
    for i in range(params.size + 2):
        grad[i] += 1.0
    return 0.0, 0.0


@njit(cache=False)
def _nan_loss(params, grad, X, y, rows, work, spec):
    return np.nan, 0.0


class _Base(Model):
    predict_kernel = _predict

    def shapes(self, *, n_features, n_classes):
        return {"w": (n_features,)}


class NoCompile(_Base):
    gradient_kernel = _no_compile


class TooLong(_Base):
    gradient_kernel = _too_long


class NanLoss(_Base):
    gradient_kernel = _nan_loss


class NotAModel:
    pass


class ShapesRaise(_Base):
    gradient_kernel = _nan_loss

    def shapes(self, *, n_features, n_classes):
        return {"w": (self.width,)}  # no such attribute: a bug in the user's code
