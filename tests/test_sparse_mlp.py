"""The MLP with a sparse first layer computes what the dense MLP computes on the same rows
(float64, to 1e-10), its gradient matches finite differences, ``dW1`` touches only the
batch's columns, and ``--model mlp --sparse on`` trains the dense model of one rank on any
number of ranks (``--shuffle global``)."""

from __future__ import annotations

import numpy as np
import pytest
from cli_runner import run_train
from test_sparse_kernels import assert_forward_like_dense, random_csr
from test_sparse_train import COMMON, sparse_file

from mpitrain.data.csr import Csr
from mpitrain.kernels.dense import dense_gradient, dense_step
from mpitrain.kernels.network import SOFTMAX_XENT, n_params, workspace_size
from mpitrain.kernels.sparse_mlp import (
    sparse_mlp_gradient,
    sparse_mlp_loss,
    sparse_mlp_predict,
    sparse_mlp_step,
    sparse_mlp_workspace_size,
)
from mpitrain.models import load_model
from mpitrain.models.dense import MLP
from mpitrain.models.sparse import SparseMLP, sparse_variant
from mpitrain.testing import check_gradient

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("hidden", [(7,), (6, 4)])
def test_sparse_mlp_kernels_equal_the_dense_ones(hidden):
    rng = np.random.default_rng(3)
    n, d, k = 50, 30, 4
    X, dense = random_csr(rng, n, d, 0.15)
    dims = [d, *hidden, k]
    spec = np.array([SOFTMAX_XENT, *dims], dtype=np.int64)
    y = rng.integers(0, k, n).astype(np.int64)
    params = rng.standard_normal(n_params(dims)) * 0.5
    rows = np.array([3, 0, 7, 7, 49, 14, 21, 8, 1], dtype=np.int64)  # repeats, empty rows
    size = n_params(dims)
    dense_work = np.empty(workspace_size(dims, len(rows)))
    sparse_work = np.empty(sparse_mlp_workspace_size(dims, len(rows)))
    g_dense, g_sparse = np.full(size + 3, 9.0), np.full(size + 3, 9.0)
    expected = dense_gradient(params, g_dense, dense, y, rows, dense_work, spec)
    got = sparse_mlp_gradient(params, g_sparse, X, y, rows, sparse_work, spec)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_sparse, g_dense, rtol=1e-10, atol=1e-12)
    dense_step(params, g_dense, dense, y, rows, dense_work, spec)
    sparse_mlp_step(params, g_sparse, X, y, rows, sparse_work, spec)
    np.testing.assert_allclose(g_sparse, g_dense, rtol=1e-10, atol=1e-12)
    assert_forward_like_dense(sparse_mlp_loss, sparse_mlp_predict, params, X, dense, y, spec,
                              np.empty(sparse_mlp_workspace_size(dims, n)),
                              np.empty(workspace_size(dims, n)), k)


def test_dw1_touches_only_the_batch_columns_and_an_empty_batch_is_zero():
    rng = np.random.default_rng(1)
    d, h, k = 500, 5, 3
    X, _ = random_csr(rng, 30, d, 0.01)
    spec = np.array([SOFTMAX_XENT, d, h, k], dtype=np.int64)
    params = rng.standard_normal(n_params([d, h, k]))
    rows = np.arange(1, 6, dtype=np.int64)
    grad = np.full(params.size, 3.0)
    work = np.empty(sparse_mlp_workspace_size([d, h, k], 5))
    sparse_mlp_gradient(params, grad, X, rng.integers(0, k, 30), rows, work, spec)
    touched = np.unique(X[1][X[2][1] : X[2][6]])
    W1 = grad[: d * h].reshape(d, h)
    assert not W1[np.setdiff1d(np.arange(d), touched)].any()
    assert W1[touched].any()
    grad[:] = 3.0
    assert sparse_mlp_gradient(params, grad, X, np.zeros(30, np.int64), rows[:0], work,
                               spec) == (0.0, 0.0)
    assert not grad.any()


def test_sparse_mlp_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    (data, indices, indptr), _ = random_csr(rng, 12, 9, 0.4)
    X = Csr(data, indices, indptr, 9)
    y = rng.integers(0, 3, 12)
    model = SparseMLP(hidden=(6, 5))
    assert check_gradient(model, X, y, n_classes=3) <= 1.0


def test_the_sparse_variant_keeps_the_hidden_layers():
    variant = sparse_variant(MLP(hidden=(9, 4)))
    assert type(variant) is SparseMLP and variant.hidden == (9, 4)




@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_sparse_mlp_on_p_ranks_trains_the_dense_mlp_of_one_rank(tmp_path, ranks):
    path = sparse_file(tmp_path / "a.svm", 180, 120, 6, lambda i: i % 3)
    options = ["--data", path, "--model", "mlp", "--hidden", "8,5",
               "--shuffle", "global", *COMMON]
    models = {}
    for sparse, p in (("off", 1), ("on", ranks)):
        out = tmp_path / f"run-{sparse}"
        done = run_train([*options, "--sparse", sparse, "--out", str(out)], ranks=p)
        assert done.returncode == 0, done.stderr
        models[sparse] = load_model(out / "model.npz")
    for name, value in models["off"].params.items():
        np.testing.assert_allclose(models["on"].params[name], value, rtol=1e-10, atol=1e-12)
