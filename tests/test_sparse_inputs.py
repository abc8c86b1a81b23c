"""scipy.sparse rows in the Python API and the predict command: ``predict`` and
``predict_proba`` on CSR/CSC/COO equal the dense results (CSR kernels for the one-layer
models, dense chunks for the others), ``mpitrain predict`` keeps libsvm rows sparse, and
``train(X=sparse)`` trains the dense model without making the rows dense."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from cli_runner import run_mpi
from test_sparse_train import COMMON, sparse_file

from mpitrain import predict, predict_proba
from mpitrain.models import ModelError, load_model
from mpitrain.training import train

pytestmark = pytest.mark.timeout(300)

OPTIONS = {"epochs": 2, "batch_size": 16, "dtype": "float64", "seed": 3, "quiet": True}


def problem(rows: int = 200, features: int = 400, classes: int = 2):
    rng = np.random.default_rng(1)
    X = sp.random(rows, features, density=0.02, random_state=2, format="csr")
    y = np.argmax(X @ rng.standard_normal((features, classes)), axis=1)
    return X, y


@pytest.mark.parametrize("model,standardize", [("logistic", False), ("softmax", False),
                                               ("linear", False), ("mlp", True),
                                               ("logistic", True)])
def test_predict_on_sparse_rows_equals_dense(model, standardize):
    X, y = problem(classes=3 if model in ("softmax", "mlp") else 2)
    target = y.astype(float) if model == "linear" else y
    dense = X.toarray()
    result = train(X=dense, y=target, model=model, standardize=standardize, hidden=(8,),
                   **OPTIONS)
    saved = result.model
    for form in (X, X.tocsc(), X.tocoo(), sp.csr_array(X)):
        np.testing.assert_allclose(predict(saved, form), predict(saved, dense), rtol=1e-12)
        if model != "linear":
            np.testing.assert_allclose(predict_proba(saved, form), predict_proba(saved, dense),
                                       rtol=1e-12, atol=1e-15)
    assert predict(saved, X[:1]).shape == (1,)
    with pytest.raises(ModelError, match="X has 399 features per row but the model was "
                                         "trained on 400"):
        predict(saved, X[:, :399])


def test_predict_on_sparse_rows_of_a_tree_model():
    X, y = problem()
    result = train(X=X.toarray(), y=y, model="gbdt", trees=3, quiet=True)
    np.testing.assert_array_equal(predict(result.model, X), predict(result.model, X.toarray()))


def test_repeated_entries_add_up_as_in_scipy():
    X, y = problem()
    result = train(X=X.toarray(), y=y, model="logistic", standardize=False, **OPTIONS)
    coo = X.tocoo()
    doubled = sp.coo_matrix((np.concatenate([coo.data / 2, coo.data / 2]),
                             (np.tile(coo.row, 2), np.tile(coo.col, 2))), shape=X.shape)
    raw = sp.csr_matrix((doubled.data, (doubled.row, doubled.col)), shape=X.shape)
    unsummed = sp.csr_matrix((raw.data, raw.indices, raw.indptr), shape=X.shape)
    np.testing.assert_allclose(predict_proba(result.model, doubled.tocsr()),
                               predict_proba(result.model, X), rtol=1e-12)
    np.testing.assert_allclose(predict_proba(result.model, unsummed),
                               predict_proba(result.model, X), rtol=1e-12)


def test_train_on_sparse_rows_defaults_to_sparse_and_matches_dense():
    X, y = problem()
    sparse = train(X=X, y=y, model="logistic", standardize=False, **OPTIONS)
    dense = train(X=X.toarray(), y=y, model="logistic", standardize=False, **OPTIONS)
    assert sparse.config.sparse == "auto" and dense.config.sparse == "off"
    np.testing.assert_allclose(sparse.flat, dense.flat, rtol=1e-10, atol=1e-13)
    forced = train(X=X.tocoo(), y=y, model="logistic", standardize=False, sparse="off",
                   **OPTIONS)
    assert forced.config.sparse == "off"
    np.testing.assert_allclose(forced.flat, dense.flat, rtol=1e-10, atol=1e-13)


def test_predict_command_keeps_libsvm_rows_sparse(tmp_path):
    """Dense, these 300 rows x 2^20 features would take 2.5 GB per rank."""
    path = sparse_file(tmp_path / "wide.svm", 300, 2**20, 8, lambda i: i % 2)
    done = run_mpi(["-m", "mpitrain", "train", "--data", path, "--model", "logistic",
                    "--sparse", "on", *COMMON, "--out", str(tmp_path / "run")], ranks=1)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "p.csv"
    done = run_mpi(["-m", "mpitrain", "predict", "--model", str(tmp_path / "run/model.npz"),
                    "--data", path, "--out", str(out), "--proba"], ranks=2)
    assert done.returncode == 0, done.stderr
    from sklearn.datasets import load_svmlight_file

    saved = load_model(tmp_path / "run/model.npz")
    X, _ = load_svmlight_file(path, n_features=saved.n_features)
    written = np.loadtxt(out, delimiter=",", skiprows=1)
    np.testing.assert_allclose(written[:, 1:], predict_proba(saved, X), rtol=1e-8)
    np.testing.assert_array_equal(written[:, 0], predict(saved, X))
