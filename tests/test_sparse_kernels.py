"""The CSR kernels of linear, logistic and softmax compute what the dense kernels compute
on the same rows (float64, to 1e-10), without making the rows dense."""

from __future__ import annotations

import numpy as np
import pytest

from mpitrain.kernels.dense import dense_gradient, dense_loss, dense_predict, dense_step
from mpitrain.kernels.network import BINARY_XENT, SOFTMAX_XENT, SQUARED, workspace_size
from mpitrain.kernels.sparse import (
    sparse_gradient,
    sparse_loss,
    sparse_predict,
    sparse_step,
    sparse_workspace_size,
)

pytestmark = pytest.mark.timeout(120)

HEADS = {"linear": (SQUARED, 1, 1), "logistic": (BINARY_XENT, 1, 2),
         "softmax": (SOFTMAX_XENT, 5, 5)}


def random_csr(rng, n, d, density):
    """A CSR triple (sorted columns, some empty rows) and the same rows dense."""
    dense = np.where(rng.random((n, d)) < density, rng.standard_normal((n, d)), 0.0)
    dense[::7] = 0  # empty rows
    rows, cols = np.nonzero(dense)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
    return (dense[rows, cols].copy(), cols.astype(np.int32), indptr), dense


@pytest.mark.parametrize("name", sorted(HEADS))
def test_sparse_kernels_equal_the_dense_ones(name):
    kind, k, outputs = HEADS[name]
    rng = np.random.default_rng(4)
    n, d = 60, 40
    X, dense = random_csr(rng, n, d, 0.1)
    y = (rng.integers(0, 2 if k == 1 else k, n) if kind != SQUARED
         else rng.standard_normal(n)).astype(np.int64 if kind != SQUARED else np.float64)
    spec = np.array([kind, d, k], dtype=np.int64)
    params = rng.standard_normal(d * k + k)
    rows = np.array([3, 0, 7, 7, 59, 14, 21, 8, 1], dtype=np.int64)  # repeats, empty rows
    dense_work = np.empty(workspace_size([d, k], len(rows)))
    sparse_work = np.empty(sparse_workspace_size(k, len(rows)))
    assert sparse_work.size < dense_work.size
    g_dense, g_sparse = np.full(d * k + k + 3, 9.0), np.full(d * k + k + 3, 9.0)
    expected = dense_gradient(params, g_dense, dense, y, rows, dense_work, spec)
    got = sparse_gradient(params, g_sparse, X, y, rows, sparse_work, spec)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_sparse, g_dense, rtol=1e-10, atol=1e-12)
    dense_step(params, g_dense, dense, y, rows, dense_work, spec)
    sparse_step(params, g_sparse, X, y, rows, sparse_work, spec)
    np.testing.assert_allclose(g_sparse, g_dense, rtol=1e-10, atol=1e-12)
    assert_forward_like_dense(sparse_loss, sparse_predict, params, X, dense, y, spec,
                              np.empty(sparse_workspace_size(k, n)),
                              np.empty(workspace_size([d, k], n)), outputs)


def assert_forward_like_dense(loss, predict, params, X, dense, y, spec, work_sparse,
                              work_dense, outputs):
    """The sparse ``loss`` and ``predict`` kernels over every row give the dense ones'."""
    n = dense.shape[0]
    all_rows = np.arange(n, dtype=np.int64)
    np.testing.assert_allclose(loss(params, X, y, all_rows, work_sparse, spec),
                               dense_loss(params, dense, y, all_rows, work_dense, spec),
                               rtol=1e-10)
    out_dense, out_sparse = np.empty((n, outputs)), np.empty((n, outputs))
    dense_predict(params, dense, all_rows, out_dense, work_dense, spec)
    predict(params, X, all_rows, out_sparse, work_sparse, spec)
    np.testing.assert_allclose(out_sparse, out_dense, rtol=1e-10, atol=1e-14)


def test_gradient_of_w_touches_only_the_columns_in_the_batch():
    rng = np.random.default_rng(1)
    X, _ = random_csr(rng, 30, 1000, 0.01)
    d, k = 1000, 3
    spec = np.array([SOFTMAX_XENT, d, k], dtype=np.int64)
    rows = np.arange(5, dtype=np.int64)
    grad = np.empty(d * k + k)
    sparse_gradient(rng.standard_normal(d * k + k), grad, X, rng.integers(0, k, 30), rows,
                    np.empty(sparse_workspace_size(k, 5)), spec)
    touched = np.unique(X[1][X[2][0] : X[2][5]])
    untouched = np.setdiff1d(np.arange(d), touched)
    assert not grad[: d * k].reshape(d, k)[untouched].any()
    assert grad[: d * k].reshape(d, k)[touched].any()


def test_empty_batch_and_bad_calls():
    rng = np.random.default_rng(2)
    X, _ = random_csr(rng, 10, 8, 0.3)
    spec = np.array([SQUARED, 8, 1], dtype=np.int64)
    grad = np.full(12, 5.0)
    rows = np.empty(0, dtype=np.int64)
    assert sparse_gradient(np.ones(9), grad, X, np.zeros(10), rows, np.empty(1), spec) == (0, 0)
    assert not grad[:9].any()
    with pytest.raises(ValueError, match=r"params\.size"):
        sparse_gradient(np.ones(5), grad, X, np.zeros(10), rows, np.empty(1), spec)
    with pytest.raises(IndexError, match="row index"):
        sparse_loss(np.ones(9), X, np.zeros(10), np.array([10]), np.empty(4), spec)
