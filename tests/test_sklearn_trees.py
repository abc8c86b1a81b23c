"""mpitrain.sklearn's tree ensembles and k-means: scikit-learn's own estimator checks,
model selection, the same model as ``train()`` and scikit-learn's estimators; under
mpiexec, the same model on every rank and as one process, however the rows are passed."""

from __future__ import annotations

import re

import numpy as np
import pytest
from cli_runner import ROOT, run_mpi
from mpi4py import MPI
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, make_blobs
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import r2_score
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from test_sklearn import own_rows

from mpitrain import predict, train
from mpitrain.sklearn import (
    MPIGradientBoostingClassifier,
    MPIGradientBoostingRegressor,
    MPIKMeans,
    MPIRandomForestClassifier,
    MPIRandomForestRegressor,
)

# Few, shallow trees keep scikit-learn's ~50 checks per estimator fast.
CHECKED = [
    MPIGradientBoostingClassifier(n_estimators=10, max_depth=3),
    MPIGradientBoostingRegressor(n_estimators=10, max_depth=3),
    MPIRandomForestClassifier(n_estimators=5, max_depth=6),
    MPIRandomForestRegressor(n_estimators=5, max_depth=6),
    MPIKMeans(),
]


@pytest.mark.timeout(600)
@parametrize_with_checks(CHECKED)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def arrays(estimator) -> dict[str, np.ndarray]:
    """The fitted model's arrays (trees or centers), as model.npz stores them."""
    return estimator.model_.arrays


def assert_same_model(one, other) -> None:
    mine, theirs = arrays(one), arrays(other)
    assert sorted(mine) == sorted(theirs)
    for name in mine:
        np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)


@pytest.fixture(scope="module")
def digits():
    return load_digits(return_X_y=True)


def test_same_trees_as_train_with_any_labels(digits):
    X, y = digits
    X, y = X[:500], y[:500] % 3
    names = np.array(["owl", "cat", "dog"])  # sorted: cat, dog, owl
    clf = MPIGradientBoostingClassifier(n_estimators=5, max_depth=3, learning_rate=0.2,
                                        l2_regularization=1.0, random_state=4).fit(X, names[y])
    np.testing.assert_array_equal(clf.classes_, ["cat", "dog", "owl"])
    codes = np.array([2, 0, 1])[y]  # owl → 2, cat → 0, dog → 1
    trained = train(comm=MPI.COMM_SELF, X=X, y=codes, model="gbdt", trees=5, max_depth=3,
                    lr=0.2, l2=1.0, seed=4, dtype="float64", test_fraction=0.0, quiet=True)
    for name, value in trained.model.arrays.items():
        np.testing.assert_array_equal(arrays(clf)[name], value, err_msg=name)
    assert clf.n_iter_ == 5 and len(clf.history_) == 5 and clf.n_features_in_ == 64
    predicted = clf.predict(X)
    np.testing.assert_array_equal(predicted, clf.classes_[predict(trained.model, X)])
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], predicted)
    assert clf.score(X, names[y]) == np.mean(predicted == names[y])
    importances = clf.feature_importances_
    assert importances.shape == (64,) and importances.sum() == pytest.approx(1.0)
    splits = arrays(clf)["feature"]
    assert importances[0] == 0.0 and np.all((importances > 0) == np.isin(
        np.arange(64), splits[splits >= 0]))  # pixel 0 is always blank: never split


def test_regressors_and_forest_match_train_and_scikit_learn(digits):
    X, y = digits
    target = y.astype(float)
    reg = MPIGradientBoostingRegressor(n_estimators=8, max_depth=4).fit(X, target)
    trained = train(comm=MPI.COMM_SELF, X=X, y=target, model="gbdt", loss="squared",
                    trees=8, max_depth=4, dtype="float64", test_fraction=0.0, quiet=True)
    np.testing.assert_array_equal(arrays(reg)["value"], trained.model.arrays["value"])
    np.testing.assert_array_equal(reg.predict(X), predict(trained.model, X))
    assert reg.score(X, target) == pytest.approx(r2_score(target, reg.predict(X)), rel=1e-12)
    forest = MPIRandomForestRegressor(n_estimators=5, max_depth=8).fit(X, target)
    assert forest.model_.info["max_features"] == 64  # 1.0: every feature, as scikit-learn
    assert forest.score(X, target) > 0.8
    # the classifier forest is about as accurate as scikit-learn's on held-out rows
    X_train, X_test, y_train, y_test = X[:1200], X[1200:], y[:1200], y[1200:]
    ours = MPIRandomForestClassifier(n_estimators=20).fit(X_train, y_train)
    assert ours.model_.info["max_features"] == 8  # sqrt(64)
    theirs = RandomForestClassifier(n_estimators=20, random_state=0).fit(X_train, y_train)
    assert ours.score(X_test, y_test) > theirs.score(X_test, y_test) - 0.05
    assert ours.n_iter_ == 20 and ours.feature_importances_.sum() == pytest.approx(1.0)


def test_best_first_growth_and_out_of_bag_score_as_train(digits):
    """max_leaf_nodes → --max-leaves (max_depth=None: no depth limit) and oob_score →
    --oob-score give train()'s trees and score."""
    X, y = digits
    clf = MPIGradientBoostingClassifier(n_estimators=4, max_depth=None, max_leaf_nodes=7,
                                        random_state=2).fit(X, y % 2)
    trained = train(comm=MPI.COMM_SELF, X=X, y=y % 2, model="gbdt", trees=4, max_depth=0,
                    max_leaves=7, seed=2, dtype="float64", test_fraction=0.0, quiet=True)
    for name, value in trained.model.arrays.items():
        np.testing.assert_array_equal(arrays(clf)[name], value, err_msg=name)
    leaves = arrays(clf)["feature"] < 0
    assert leaves.sum() <= 4 * 7  # at most 7 leaves a tree
    forest = MPIRandomForestClassifier(n_estimators=10, oob_score=True, random_state=1)
    forest.fit(X, y)
    trained = train(comm=MPI.COMM_SELF, X=X, y=y, model="forest", trees=10, max_depth=12,
                    max_features="sqrt", min_samples_leaf=1, oob_score=True, seed=1,
                    dtype="float64", test_fraction=0.0, quiet=True)
    assert forest.oob_score_ == trained.history[-1]["oob_score"]
    assert 0.8 < forest.oob_score_ < 1.0
    assert not hasattr(MPIRandomForestClassifier(n_estimators=2).fit(X, y), "oob_score_")


def test_early_stopping_keeps_the_best_rounds(digits):
    X, y = digits
    clf = MPIGradientBoostingClassifier(n_estimators=200, max_depth=2, learning_rate=0.5,
                                        n_iter_no_change=2, validation_fraction=0.3)
    clf.fit(X[:400], y[:400] % 2)
    assert "test_loss" in clf.history_[-1] and len(clf.history_) < 200
    best = int(np.argmin([row["test_loss"] for row in clf.history_])) + 1
    assert clf.n_iter_ == best == clf.model_.info["rounds"]


def test_kmeans_matches_scikit_learn_and_its_own_definitions():
    X, _ = make_blobs(n_samples=600, centers=5, n_features=3, random_state=1)
    km = MPIKMeans(n_clusters=5, tol=0.0).fit(X)
    theirs = KMeans(n_clusters=5, n_init=5, random_state=0).fit(X)
    assert km.inertia_ == pytest.approx(theirs.inertia_, rel=1e-6)
    assert km.score(X) == pytest.approx(-km.inertia_, rel=1e-12)
    np.testing.assert_array_equal(km.labels_, km.predict(X))
    np.testing.assert_array_equal(km.fit_predict(X), km.labels_)
    distances = km.transform(X)
    np.testing.assert_allclose(distances, euclidean_distances(X, km.cluster_centers_),
                               rtol=1e-9)
    np.testing.assert_array_equal(distances.argmin(axis=1), km.labels_)
    assert km.inertia_ == pytest.approx(np.sum(distances.min(axis=1) ** 2), rel=1e-12)
    for c in range(5):  # converged (tol 0): each center is the mean of its rows
        np.testing.assert_allclose(km.cluster_centers_[c], X[km.labels_ == c].mean(axis=0),
                                   rtol=1e-9, atol=1e-9)
    assert km.n_iter_ == len(km.history_) >= 1
    assert list(km.get_feature_names_out()) == [f"mpikmeans{c}" for c in range(5)]
    # standardize=True clusters scaled features; the centers come back in input units
    scaled = MPIKMeans(n_clusters=5, tol=0.0, standardize=True).fit(X * [1.0, 100.0, 0.01])
    for c in range(5):
        rows = (X * [1.0, 100.0, 0.01])[scaled.labels_ == c]
        np.testing.assert_allclose(scaled.cluster_centers_[c], rows.mean(axis=0), rtol=1e-9)


@pytest.mark.timeout(300)
def test_grid_search_and_cross_validation(digits):
    X, y = digits
    X, y = X[:600], y[:600]
    scores = cross_val_score(MPIRandomForestClassifier(n_estimators=10), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.75
    search = GridSearchCV(MPIGradientBoostingClassifier(n_estimators=5),
                          {"max_depth": [1, 4]}, cv=2).fit(X, y)
    assert search.best_params_ == {"max_depth": 4} and search.best_score_ > 0.7
    pipeline = make_pipeline(StandardScaler(), MPIGradientBoostingRegressor(
        n_estimators=20, learning_rate=0.3))
    # the digit as a value: a hard target for five trees
    assert cross_val_score(pipeline, X, y.astype(float), cv=2).min() > 0.3
    # k-means: score is -inertia, so more clusters score higher
    search = GridSearchCV(MPIKMeans(), {"n_clusters": [2, 10]}, cv=2).fit(X)
    assert search.best_params_ == {"n_clusters": 10}
    assert search.best_estimator_.cluster_centers_.shape == (10, 64)


@pytest.mark.parametrize(("estimator", "message"), [
    (MPIGradientBoostingClassifier(n_estimators=0), r"n_estimators must be >= 1 \(got 0\)"),
    (MPIGradientBoostingRegressor(learning_rate=-1.0),
     r"learning_rate must be a positive number \(got -1.0\)"),
    (MPIGradientBoostingClassifier(train_options={"trees": 5}),
     r"train_options\['trees'\]: set it as the estimator's parameter n_estimators="),
    (MPIGradientBoostingClassifier(train_options={"early_stopping": 5}),
     r"train_options\['early_stopping'\]: set it as the estimator's parameter "
     "n_iter_no_change="),
    (MPIGradientBoostingClassifier(train_options={"loss": "softmax"}),
     r"train_options\['loss'\]: MPIGradientBoostingClassifier sets it"),
    (MPIGradientBoostingClassifier(n_iter_no_change=3, validation_fraction=0.0),
     r"validation_fraction must be in \(0, 1\) when n_iter_no_change is set \(got 0.0\)"),
    (MPIRandomForestClassifier(max_features=0.5),
     r"max_features must be 'sqrt', 'log2', 1.0 or None \(all features\) \(got 0.5\)"),
    (MPIRandomForestRegressor(max_depth=0),
     r"max_depth must be >= 1 \(0: no limit, with max_leaf_nodes\) \(got 0\)"),
    (MPIGradientBoostingClassifier(max_depth=None),
     r"max_depth=None \(no depth limit\) needs max_leaf_nodes"),
    (MPIRandomForestClassifier(max_leaf_nodes=1),
     r"max_leaf_nodes must be >= 2 \(0: level-wise growth\) \(got 1\)"),
    (MPIKMeans(n_clusters=60), "n_samples=50 should be >= n_clusters=60"),
    (MPIKMeans(random_state=-1), r"random_state must be a non-negative integer \(got -1\)"),
    (MPIKMeans(train_options={"seed": 1}),
     r"train_options\['seed'\]: set it as the estimator's parameter random_state="),
])
def test_bad_parameters_are_value_errors(estimator, message, digits):
    X, y = digits
    y = y % 2 if "Classifier" in type(estimator).__name__ else y.astype(float)
    with pytest.raises(ValueError, match=message):
        estimator.fit(X[:50], y[:50])


@pytest.mark.timeout(300)
def test_example_runs_under_mpiexec():
    done = run_mpi([str(ROOT / "examples" / "sklearn_trees.py")], ranks=2, timeout=280)
    assert done.returncode == 0, done.stderr
    gbdt, forest, kmeans = done.stdout.splitlines()  # rank 0 only
    found = re.fullmatch(r"gbdt best parameters \{'learning_rate': 0\.\d, 'max_depth': \d\}, "
                         r"cross-validated accuracy (\d\.\d{3})", gbdt)
    assert found and float(found.group(1)) > 0.8, gbdt
    assert forest.startswith("forest training accuracy 0.9") or forest.startswith(
        "forest training accuracy 1.000"), forest
    assert re.fullmatch(r"kmeans inertia \d+\.\d after \d+ iterations, distances \(3, 10\)",
                        kmeans), kmeans


def test_public_names():
    import mpitrain

    for cls in (MPIGradientBoostingClassifier, MPIGradientBoostingRegressor,
                MPIRandomForestClassifier, MPIRandomForestRegressor, MPIKMeans):
        assert getattr(mpitrain, cls.__name__) is cls
        assert cls.__module__ == "mpitrain.sklearn"


# -- under mpiexec ---------------------------------------------------------------------------

COMM = MPI.COMM_WORLD
PER_RANK = [
    MPIGradientBoostingClassifier(n_estimators=4, max_depth=3),
    MPIGradientBoostingRegressor(n_estimators=4, max_depth=3),
    MPIRandomForestClassifier(n_estimators=3, max_depth=5),
    MPIRandomForestRegressor(n_estimators=3, max_depth=5),
    MPIKMeans(n_clusters=5),
    MPIKMeans(n_clusters=5, standardize=True),
]


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("estimator", PER_RANK, ids=lambda e: repr(e).replace(" ", ""))
def test_same_model_on_every_rank_and_as_one_process(estimator, digits):
    X, y = digits
    X, y = X[:300], y[:300]
    if "Classifier" in type(estimator).__name__:
        y = np.array(["zero", "one", "two"])[y % 3]
    elif "Regressor" in type(estimator).__name__:
        y = y.astype(float)
    else:
        y = None  # k-means: no labels
    rank = COMM.Get_rank()
    rows = own_rows(len(X))  # uneven; the last rank has none
    each = clone(estimator).fit(X[rows], None if y is None else y[rows])
    root = clone(estimator).fit(*((X, y) if rank == 0 else (None, None)))
    alone = clone(estimator).set_params(comm=MPI.COMM_SELF).fit(X, y)
    theirs = COMM.allgather(arrays(each))
    for fitted in (each, root):
        assert_same_model(fitted, alone)  # bit for bit: the model is P-independent
        assert fitted.n_features_in_ == 64 and fitted.n_iter_ == alone.n_iter_
        np.testing.assert_array_equal(fitted.predict(X), alone.predict(X))
    for name, value in arrays(each).items():  # every rank holds the same model
        for other in theirs:
            np.testing.assert_array_equal(other[name], value)
    if y is None:
        # the centers are the same bits; the standardisation (float sums over the ranks)
        # may differ in its last bits, so do the centers in input units and the distances
        exact = not estimator.standardize
        same = (np.testing.assert_array_equal if exact else
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12))
        same(each.cluster_centers_, alone.cluster_centers_)
        np.testing.assert_array_equal(each.labels_, alone.labels_[rows])  # its own rows
        assert len(root.labels_) == (len(X) if rank == 0 else 0)
        assert each.inertia_ == pytest.approx(alone.inertia_, rel=1e-12)
        assert root.inertia_ == pytest.approx(alone.inertia_, rel=1e-12)
        same(each.transform(X), alone.transform(X))
        # score is collective: minus the inertia of every rank's rows
        assert each.score(X[rows]) == pytest.approx(alone.score(X), rel=1e-12)
        assert root.score(*((X,) if rank == 0 else (None,))) == pytest.approx(alone.score(X),
                                                                            rel=1e-12)
        return
    if hasattr(alone, "classes_"):
        np.testing.assert_array_equal(each.classes_, ["one", "two", "zero"])
        np.testing.assert_array_equal(root.classes_, ["one", "two", "zero"])
        np.testing.assert_array_equal(each.predict_proba(X), alone.predict_proba(X))
    # score is collective: every rank gets the score over all ranks' rows
    assert each.score(X[rows], y[rows]) == pytest.approx(alone.score(X, y), abs=1e-12)
    assert root.score(*((X, y) if rank == 0 else (None, None))) == pytest.approx(
        alone.score(X, y), abs=1e-12)
    # model selection: every rank its rows, the same scores (hence choices) everywhere
    mine = np.array_split(np.arange(len(X)), COMM.Get_size())[rank]
    scores = cross_val_score(clone(estimator), X[mine], y[mine], cv=2)
    everyone = COMM.allgather(scores)
    for other in everyone:
        np.testing.assert_array_equal(other, everyone[0])
