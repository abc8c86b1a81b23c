"""Tree ensembles and k-means under MPI (run by `make test` on 2, 3 and 4 ranks): the same
trees (splits and leaf values, bit for bit) and the same centers for any rank count."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitrain import train

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(240)]

DATA = dict(data="synthetic", samples=701, features=5, noise=2.0, clusters_per_class=2,
            quiet=True)


def reference(**options):
    """The run on one rank (COMM_SELF on rank 0): its model arrays, broadcast."""
    comm = MPI.COMM_WORLD
    arrays = train(comm=MPI.COMM_SELF, **options).params if comm.Get_rank() == 0 else None
    return comm.bcast(arrays, root=0)  # test helper: small dict of arrays


def assert_same(got, expected):
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.mark.parametrize("extra", [
    dict(classes=3, loss="auto"),  # softmax: one tree per class and round
    dict(classes=3, max_leaves=6, max_depth=0),  # best-first, no depth limit
    dict(classes=2, loss="logistic", max_leaves=5, max_depth=2, min_samples_leaf=3),
    dict(classes=2, loss="logistic", l2=1.0, min_samples_leaf=5),
    dict(classes=2, loss="squared", dtype="float64"),
])
def test_gbdt_same_trees_for_any_number_of_ranks(extra):
    options = {**DATA, "model": "gbdt", "trees": 4, "max_depth": 3, "max_bins": 32, **extra}
    expected = reference(**options)
    for algorithm in ("auto", "mpi", "ring", "shm"):  # shm: allreduce, then a block
        assert_same(train(reduce=algorithm, **options).params, expected)


def test_tied_features_on_different_ranks_split_on_the_lowest():
    """Copies of one feature gain exactly the same wherever their block of features sits:
    the agreed split is the lowest feature's, as a one-rank scan picks."""
    rng = np.random.default_rng(6)
    base = rng.normal(size=(400, 1))
    X = np.hstack([rng.normal(size=(400, 1)), base, base, base, base, base])
    y = (base[:, 0] + 0.3 * rng.normal(size=400) > 0).astype(float)
    mine = MPI.COMM_WORLD.Get_rank() == 0
    options = dict(model="gbdt", trees=3, max_depth=3, max_bins=16, quiet=True)
    expected = (train(comm=MPI.COMM_SELF, X=X, y=y, **options).params if mine else None)
    expected = MPI.COMM_WORLD.bcast(expected, root=0)
    for algorithm in ("auto", "shm"):
        got = train(X=X if mine else None, y=y if mine else None, reduce=algorithm, **options)
        assert_same(got.params, expected)
    assert expected["feature"][0, 0] == 1  # the first copy


@pytest.mark.parametrize("model", ["gbdt", "forest"])
def test_fewer_features_than_ranks_same_trees(model):
    """Ranks past the last feature search no split; the trees are still the one-rank ones."""
    options = {**DATA, "features": 1, "model": model, "trees": 3, "max_depth": 3,
               "max_bins": 16, "classes": 3}
    expected = reference(**options)
    assert_same(train(**options).params, expected)


def test_gbdt_early_stopping_same_for_any_number_of_ranks():
    options = {**DATA, "model": "gbdt", "classes": 3, "trees": 40, "max_depth": 4,
               "lr": 0.5, "early_stopping": 2, "noise": 4.0}
    expected = reference(**options)
    assert_same(train(**options).params, expected)


@pytest.mark.parametrize("extra", [dict(classes=3), dict(loss="squared", max_features="all"),
                                   dict(classes=3, max_leaves=8)])
def test_forest_same_trees_for_any_number_of_ranks(extra):
    options = {**DATA, "model": "forest", "trees": 4, "max_depth": 5, "min_samples_leaf": 2,
               "max_bins": 64, "oob_score": True, **extra}
    comm = MPI.COMM_WORLD
    one = train(comm=MPI.COMM_SELF, **options) if comm.Get_rank() == 0 else None
    expected = comm.bcast(None if one is None else (one.params, one.summary["model"]), root=0)
    got = train(**options)
    assert_same(got.params, expected[0])
    assert got.summary["model"]["oob_score"] == expected[1]["oob_score"] is not None


def test_missing_values_same_trees_for_any_number_of_ranks():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(500, 4))
    y = (X[:, 0] - X[:, 1] > 0).astype(float)
    X[(X[:, 0] > 0.3) & (rng.random(500) < 0.7), 0] = np.nan
    X[rng.random(500) < 0.2, 3] = np.nan
    mine = MPI.COMM_WORLD.Get_rank() == 0
    for options in (dict(model="gbdt", trees=4, max_depth=3, max_bins=16),
                    dict(model="gbdt", trees=3, max_leaves=7, max_depth=0),
                    dict(model="forest", trees=3, max_depth=4, min_samples_leaf=2,
                         max_leaves=9)):
        comm = MPI.COMM_WORLD
        expected = (train(comm=MPI.COMM_SELF, X=X, y=y, quiet=True, **options).params
                    if mine else None)
        expected = comm.bcast(expected, root=0)
        got = train(X=X if mine else None, y=y if mine else None, quiet=True, **options)
        assert_same(got.params, expected)
        assert expected["missing_left"].any()


def test_kmeans_same_centers_for_any_number_of_ranks():
    options = {**DATA, "model": "kmeans", "clusters": 5, "max_iter": 15, "tol": 0.0}
    expected = reference(**options)
    assert_same(train(**options).params, expected)
    assert_same(train(reduce="ring", dtype="float64", **options).params,
                reference(dtype="float64", **options))


def test_partition_kmeans_same_clients_for_any_number_of_ranks():
    options = dict(data="digits", model="softmax", mode="fedavg", partition="kmeans",
                   clients=6, rounds=2, client_fraction=0.5, local_epochs=1, quiet=True)
    comm = MPI.COMM_WORLD
    one = (train(comm=MPI.COMM_SELF, **options).summary["federated"]
           if comm.Get_rank() == 0 else None)
    one = comm.bcast(one, root=0)
    many = train(**options)
    got = many.summary["federated"]
    assert got["client_sizes"] == one["client_sizes"]
    assert got["label_histograms"] == one["label_histograms"]
    # non-IID by feature space: most clients hold few classes
    histograms = np.array(got["label_histograms"])
    assert np.mean(histograms.max(axis=1) / histograms.sum(axis=1)) > 0.3
