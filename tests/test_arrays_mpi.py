"""``train(X=..., y=...)`` on several ranks: rows numbered in rank order, the same shards
and the same model as a file with the same rows, for any number of ranks and any way of
passing them; one clear error on every rank for inconsistent arrays."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from test_data import example, load, write
from test_data_mpi import assert_same_as_one_rank, on_rank0

from mpitrain.data import Arrays
from mpitrain.errors import UserError
from mpitrain.training import train

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(180)]

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()


def own_rows(X: np.ndarray, y: np.ndarray) -> Arrays:
    """This rank's rows when the rows are split unevenly, in rank order (rank 1: none)."""
    if SIZE > 2:  # rank 1's rows go to rank 0, so rank 1 has none and order is kept
        cuts = np.sort(np.random.default_rng(5).choice(np.arange(1, len(y)), size=SIZE - 2,
                                                       replace=False))
        parts = [np.array([], dtype=np.int64), *np.split(np.arange(len(y)), cuts)]
        parts[0], parts[1] = parts[1], parts[0]
    else:
        parts = np.split(np.arange(len(y)), [len(y) // 3])
    rows = parts[RANK]
    return Arrays(X[rows], y[rows])


@pytest.mark.parametrize("labels", ["numbers", "names"])
@pytest.mark.parametrize("fraction", [0.0, 0.3])
def test_arrays_give_the_shards_of_a_file(mpi_tmp_path, labels, fraction):
    X, y = example(101)
    path = on_rank0(lambda: write("npz", mpi_tmp_path, X, y))
    named = np.array(["ant", "bee", "cat"])[y] if labels == "names" else y
    options = {"test_fraction": fraction, "seed": 4}
    serial = load(path, MPI.COMM_SELF, **options)
    everyone = load("synthetic", arrays=own_rows(X, named), **options)
    root_only = load("synthetic", arrays=Arrays(X, named) if RANK == 0 else Arrays(None, None),
                     **options)
    for data in (everyone, root_only):
        assert_same_as_one_rank(data, serial)
        assert data.name == "arrays(101x5)"
        if labels == "names":
            assert data.classes.tolist() == ["ant", "bee", "cat"]


def test_test_arrays_give_the_test_set(mpi_tmp_path):
    X, y = example(60)
    Xt, yt = example(13, seed=3)
    train_path, test_path = on_rank0(lambda: (write("npz", mpi_tmp_path, X, y),
                                              write("csv", mpi_tmp_path, Xt, yt, name="t")))
    serial = load(train_path, MPI.COMM_SELF, test_source=test_path)
    root = Arrays(Xt, yt, names=("test_X", "test_y")) if RANK == 0 else Arrays(
        None, None, names=("test_X", "test_y"))
    data = load(train_path, test_arrays=root)
    assert_same_as_one_rank(data, serial)


def test_train_on_arrays_gives_the_model_of_the_file(mpi_tmp_path):
    X, y = example(180, 6)
    path = on_rank0(lambda: write("npz", mpi_tmp_path, X, y))
    options = dict(model="mlp", hidden=(8,), epochs=2, batch_size=16, dtype="float64",
                   quiet=True, test_fraction=0.2, seed=3)
    reference = train(data=path, comm=MPI.COMM_SELF, **options).flat
    mine = own_rows(X, y)
    parallel = train(X=mine.X, y=mine.y, **options)
    scattered = train(X=X if RANK == 0 else None, y=y if RANK == 0 else None, **options)
    np.testing.assert_allclose(parallel.flat, reference, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(scattered.flat, reference, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", ["missing on rank 0", "features differ", "y only on last",
                                  "names on one rank are fine"])
def test_inconsistent_arrays_are_one_error_on_every_rank(case):
    X, y = np.ones((8, 3)), np.arange(8) % 2
    last = RANK == SIZE - 1
    if case == "missing on rank 0":  # (given on rank 0 only would be the scatter form)
        given = dict(X=None, y=None) if RANK == 0 else dict(X=X, y=y)
        others = ", ".join(map(str, range(1, SIZE)))
        message = (f"X= and y= were given on rank(s) {others} but not on rank(s) 0: "
                   "pass them on every rank (each its own rows) or on rank 0 only (all rows, "
                   "which mpitrain scatters)")
    elif case == "features differ":
        given = dict(X=np.ones((8, 4)) if last else X, y=y)
        detail = ", ".join(f"{4 if r == SIZE - 1 else 3} on rank {r}" for r in range(SIZE))
        message = f"X= must have the same number of features on every rank ({detail})"
    elif case == "y only on last":
        given = dict(X=X, y=None if last else y)
        message = f"X= is given but y= is not (on rank {SIZE - 1})"
    else:
        labels = np.where(y == 1, "one", "0") if last else y
        result = train(X=X, y=labels, model="softmax", epochs=1, quiet=True)
        assert result.summary["data"]["class_names"] == ["0", "1", "one"]
        return
    with pytest.raises(UserError) as info:
        train(model="softmax", epochs=1, quiet=True, **given)
    assert str(info.value) == message and info.value.agreed


@pytest.mark.parametrize("how", ["own rows", "rank 0"])
def test_sparse_arrays_train_the_model_of_one_rank_without_dense_rows(how):
    import scipy.sparse as sp

    X = sp.random(150, 300, density=0.03, random_state=6, format="csr")
    y = (X @ np.random.default_rng(2).standard_normal(300) > 0).astype(np.int64)
    options = {"model": "logistic", "epochs": 2, "batch_size": 8, "dtype": "float64",
               "standardize": False, "seed": 1, "quiet": True}
    serial = train(X=X.toarray(), y=y, comm=MPI.COMM_SELF, **options)
    if how == "rank 0":
        given = Arrays(X.tocoo(), y) if RANK == 0 else Arrays(None, None)
    else:
        given = own_rows(X, y)
    parallel = train(X=given.X, y=given.y, **options)
    assert parallel.config.sparse == "auto"
    np.testing.assert_allclose(parallel.flat, serial.flat, rtol=1e-10, atol=1e-13)
    data = load("synthetic", arrays=given, sparse="on")
    assert data.sparse and data.train.X.shape[1] == 300  # CSR shards, never dense


def test_sparse_on_some_ranks_and_dense_on_others_is_one_error():
    import scipy.sparse as sp

    X, y = example(30)
    mine = sp.csr_matrix(X) if RANK == 0 else X
    with pytest.raises(UserError) as caught:
        train(X=mine, y=y, model="logistic", quiet=True)
    kinds = ", ".join(f"{'sparse' if r == 0 else 'dense'} on rank {r}" for r in range(SIZE))
    assert str(caught.value) == (
        f"X= must be a scipy.sparse matrix on every rank or on none ({kinds})")
