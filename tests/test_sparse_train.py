"""--sparse: libsvm rows kept as CSR train the model the dense path trains (float64, 1e-10),
on any number of ranks, without ever being made dense; clear errors where it cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_train
from test_data import load, write_text

from mpitrain.data.csr import Csr
from mpitrain.errors import UserError
from mpitrain.models import load_model

pytestmark = pytest.mark.timeout(300)
FM = str(Path(__file__).parents[1] / "examples" / "models" / "fm.py") + ":FactorizationMachine"

COMMON = ["--epochs", "2", "--batch-size", "16", "--dtype", "float64", "--no-standardize",
          "--seed", "4", "--quiet"]


def sparse_file(path, rows: int, features: int, nnz: int, labels) -> str:
    rng = np.random.default_rng(7)
    lines = []
    for i in range(rows):
        cols = np.sort(rng.choice(features, nnz, replace=False))
        pairs = " ".join(f"{c + 1}:{rng.standard_normal():.6g}" for c in cols)
        lines.append(f"{labels(i)} {pairs}")
    return write_text(path, "\n".join(lines) + "\n")


@pytest.mark.parametrize("model,labels", [("logistic", lambda i: i % 2),
                                          ("softmax", lambda i: i % 3),
                                          ("linear", lambda i: (i % 5) / 2)])
def test_sparse_on_three_ranks_trains_the_dense_model_of_one_rank(tmp_path, model, labels):
    path = sparse_file(tmp_path / "a.svm", 240, 300, 5, labels)
    models = {}
    for sparse, ranks in (("off", 1), ("on", 3)):
        out = tmp_path / f"run-{sparse}"
        done = run_train(["--data", path, "--model", model, "--sparse", sparse, *COMMON,
                          "--out", str(out)], ranks=ranks)
        assert done.returncode == 0, done.stderr
        models[sparse] = load_model(out / "model.npz")
    for name, value in models["off"].params.items():
        np.testing.assert_allclose(models["on"].params[name], value, rtol=1e-10, atol=1e-12)


def test_a_million_features_train_without_dense_rows(tmp_path):
    """Dense, these 600 rows x 2^20 features would take 5 GB per rank."""
    path = sparse_file(tmp_path / "wide.svm", 600, 2**20, 8, lambda i: i % 2)
    done = run_train(["--data", path, "--model", "logistic", "--sparse", "auto", *COMMON,
                      "--out", str(tmp_path / "run")], ranks=2)
    assert done.returncode == 0, done.stderr


def test_load_keeps_csr_and_auto_decides_by_density(tmp_path):
    sparse = sparse_file(tmp_path / "s.svm", 50, 200, 4, lambda i: i % 2)
    dense = sparse_file(tmp_path / "d.svm", 50, 4, 4, lambda i: i % 2)
    data = load(sparse, sparse="on")
    assert data.sparse and isinstance(data.train.X, Csr) and data.train.X.shape[1] == 200
    assert data.train.X.dtype == np.float64 and data.mean is None
    assert load(sparse, sparse="auto").sparse
    assert not load(dense, sparse="auto").sparse
    assert not load(sparse).sparse  # off by default: the rows are dense as before
    on_dense = load(dense, sparse="on")
    np.testing.assert_array_equal(on_dense.train.X.dense(4, np.float64),
                                  load(dense, standardize=False).train.X)


def test_sparse_errors(tmp_path):
    csv = write_text(tmp_path / "a.csv", "".join(f"{i},{i % 2}\n" for i in range(20)))
    with pytest.raises(UserError, match="--sparse on needs libsvm data"):
        load(csv, sparse="on")
    with pytest.raises(UserError, match="--sparse must be one of auto, on, off"):
        load(csv, sparse="yes")
    svm = sparse_file(tmp_path / "s.svm", 40, 50, 3, lambda i: i % 2)
    for argv, message in [
        (["--model", FM], f"--sparse on: --model {FM} has no sparse kernels"),
        (["--model", "logistic", "--mode", "fedavg"], "--sparse on trains in --mode sync"),
    ]:
        done = run_train(["--data", svm, "--sparse", "on", *argv, "--epochs", "1"], ranks=2)
        assert done.returncode == 2
        assert done.stderr.strip().startswith(f"mpitrain: error: {message}")
