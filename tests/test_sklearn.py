"""mpitrain.sklearn: scikit-learn's own estimator checks, pipelines and model selection,
any labels, the same model as ``train()``, and errors; under mpiexec, the same model
however the rows are passed, and collective scores."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from cli_runner import ROOT, run_mpi
from mpi4py import MPI
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from mpitrain import predict, train
from mpitrain.models import MLP, Softmax
from mpitrain.sklearn import InputError, MPIClassifier, MPIRegressor

# Few epochs keep scikit-learn's ~55 checks per estimator fast (they fit on ~300 rows).
CHECKED = [
    MPIClassifier(epochs=5, hidden=(16,)),
    MPIClassifier(model="logistic", epochs=5, dtype="float64"),  # binary only (a tag says so)
    MPIClassifier(model=Softmax(), epochs=5),  # a model object as the parameter
    MPIRegressor(epochs=5),
]


@pytest.mark.timeout(300)
@parametrize_with_checks(CHECKED)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def flat(estimator: MPIClassifier | MPIRegressor) -> np.ndarray:
    """The fitted parameters as one buffer."""
    return np.concatenate([p.ravel() for p in estimator.model_.params.values()])


@pytest.fixture(scope="module")
def digits():
    return load_digits(return_X_y=True)


@pytest.mark.timeout(300)
def test_pipeline_grid_search_and_cross_validation_on_digits(digits):
    X, y = digits
    pipeline = make_pipeline(MinMaxScaler(), MPIClassifier(model="softmax", epochs=3))
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85
    search = GridSearchCV(pipeline, {"mpiclassifier__lr": [0.001, 0.1]}, cv=3).fit(X, y)
    assert search.best_params_ == {"mpiclassifier__lr": 0.1}
    assert search.best_score_ > 0.85 and search.score(X, y) > 0.9
    # a model object's own options are nested parameters (scikit-learn's deep get_params)
    mlp = MPIClassifier(model=MLP(hidden=(4,)), epochs=3)
    assert mlp.get_params()["model__hidden"] == (4,)
    search = GridSearchCV(mlp, {"model__hidden": [(1,), (32,)]}, cv=2).fit(X, y)
    assert search.best_params_ == {"model__hidden": (32,)}
    assert search.best_estimator_.model_.options == {"hidden": [32]}


def test_same_model_as_train_and_any_labels(digits):
    X, y = digits
    X, y = X[:400], y[:400] % 3
    options = {"model": "mlp", "hidden": (8,), "epochs": 2, "seed": 3, "dtype": "float64",
               "optimizer": "sgd"}
    reference = train(comm=MPI.COMM_SELF, X=X, y=y, test_fraction=0.0, quiet=True, **options)
    for labels in (np.array(["owl", "cat", "dog"]), np.array([-1.0, 2.0, 7.0]),
                   np.array([10, 20, 30])):
        sorted_labels = np.sort(labels)
        order = np.argsort(labels)  # label i of y becomes class index rank of labels[i]
        clf = MPIClassifier(**options).fit(X, labels[y])
        np.testing.assert_array_equal(clf.classes_, sorted_labels)
        codes = np.argsort(order)[y]
        trained = train(comm=MPI.COMM_SELF, X=X, y=codes, test_fraction=0.0, quiet=True,
                        **options)
        np.testing.assert_array_equal(flat(clf), trained.flat)
        predicted = clf.predict(X)
        assert predicted.dtype == labels.dtype
        np.testing.assert_array_equal(predicted, sorted_labels[predict(clf.model_, X)])
        proba = clf.predict_proba(X)
        np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], predicted)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert clf.score(X, labels[y]) == np.mean(predicted == labels[y])
    # numeric labels 0..k-1 give train()'s model itself
    clf = MPIClassifier(**options).fit(X, y)
    np.testing.assert_array_equal(clf.model_.params["W0"], reference.params["W0"])
    assert clf.n_features_in_ == 64 and clf.n_iter_ == 2 and len(clf.history_) == 2
    assert "test_accuracy" not in clf.history_[-1]  # nothing held out
    held_out = MPIClassifier(**options, train_options={"test_fraction": 0.25}).fit(X, y)
    assert "test_accuracy" in held_out.history_[-1]


def test_regressor_matches_train_and_r2():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=300)
    options = {"epochs": 5, "lr": 0.05, "dtype": "float64", "optimizer": "momentum"}
    reg = MPIRegressor(**options).fit(X, y)
    trained = train(comm=MPI.COMM_SELF, X=X, y=y, model="linear", test_fraction=0.0,
                    quiet=True, **options)
    np.testing.assert_array_equal(reg.model_.params["W0"], trained.params["W0"])
    from sklearn.metrics import r2_score

    weights = rng.uniform(size=300)
    assert reg.score(X, y, sample_weight=weights) == pytest.approx(
        r2_score(y, reg.predict(X), sample_weight=weights), rel=1e-12)
    assert reg.score(X, y) > 0.9


def test_clone_shares_the_communicator():
    comm = MPI.COMM_SELF.Dup()  # a communicator that cannot be copied
    try:
        clf = MPIClassifier(comm=comm, epochs=1)
        assert clone(clf).comm is comm and clf.comm is comm
        X, y = load_digits(return_X_y=True)
        assert cross_val_score(clf, X[:200], y[:200], cv=2).shape == (2,)
    finally:
        comm.Free()


@pytest.mark.parametrize(("estimator", "message"), [
    (MPIRegressor(model="mlp"), "MPIRegressor needs a regression model, but model='mlp' is a "
                                r"classification model \(use MPIClassifier\)"),
    (MPIClassifier(model="linear"), "MPIClassifier needs a classification model"),
    (MPIClassifier(model="nope"), "model must be one of linear, logistic, softmax, mlp"),
    (MPIClassifier(model="no_such_module:Model"), "cannot import 'no_such_module'"),
    (MPIClassifier(train_options={"lr": 1.0}),
     r"train_options\['lr'\]: set it as the estimator's parameter lr="),
    (MPIClassifier(train_options={"data": "digits"}),
     r"train_options\['data'\]: pass the rows to fit\(X, y\)"),
    (MPIClassifier(train_options={"learning_rate": 1.0}),
     "'learning_rate' is not an option of mpitrain.train"),
    (MPIClassifier(lr=-1.0), "--lr must be a positive number"),
    (MPIClassifier(comm="world"), "comm must be an mpi4py intracommunicator"),
])
def test_bad_parameters_are_value_errors(estimator, message):
    X, y = load_digits(return_X_y=True)
    y = y % 2 if isinstance(estimator, MPIClassifier) else y.astype(float)
    with pytest.raises(ValueError, match=message):
        estimator.fit(X[:50], y[:50])


def test_one_class_and_more_than_two_for_logistic():
    X = np.arange(20.0).reshape(10, 2)
    with pytest.raises(InputError, match="at least 2 classes, but y holds one class: 'a'"):
        MPIClassifier().fit(X, ["a"] * 10)
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        MPIClassifier(model="logistic").fit(X, np.arange(10) % 3)


def test_import_mpitrain_does_not_import_scikit_learn():
    code = ("import sys, mpitrain; mpitrain.train; mpitrain.predict; "
            "assert 'sklearn' not in sys.modules, 'sklearn imported'; "
            "assert mpitrain.MPIClassifier.__module__ == 'mpitrain.sklearn'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.timeout(300)
def test_grid_search_example_runs_under_mpiexec():
    done = run_mpi([str(ROOT / "examples" / "sklearn_digits.py")], ranks=2, timeout=240)
    assert done.returncode == 0, done.stderr
    best, scores, predicted = done.stdout.splitlines()  # rank 0 only
    assert best.startswith("best parameters {'mpiclassifier__hidden': ("), best
    found = re.fullmatch(r"cross-validated accuracy (\d\.\d{3}), training accuracy "
                         r"(\d\.\d{3})", scores)
    assert found and float(found.group(1)) > 0.8, scores
    assert predicted.startswith("rank 0 predicts ['"), predicted


# -- under mpiexec ---------------------------------------------------------------------------

COMM = MPI.COMM_WORLD


def own_rows(n: int) -> np.ndarray:
    """This rank's rows of ``n``, split unevenly in rank order (the last rank: none)."""
    size, rank = COMM.Get_size(), COMM.Get_rank()
    cuts = np.linspace(0, n, size, dtype=np.int64)  # size - 1 blocks for size ranks
    blocks = [*np.split(np.arange(n), cuts[1:-1]), np.arange(0)]
    return blocks[rank]


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(240)
def test_same_model_whichever_way_the_rows_are_passed(digits):
    X, y = digits
    X, labels = X[:360], np.array(["zero", "one", "two"])[y[:360] % 3]
    rows = own_rows(len(X))
    options = {"hidden": (8,), "epochs": 2, "dtype": "float64", "shuffle": "global",
               "batch_size": 32}
    each = MPIClassifier(**options).fit(X[rows], labels[rows])
    root = MPIClassifier(**options).fit(*((X, labels) if COMM.Get_rank() == 0 else
                                          (None, None)))
    alone = MPIClassifier(**options, comm=MPI.COMM_SELF).fit(X, labels)
    reference = flat(alone)
    for clf in (each, root):
        np.testing.assert_array_equal(clf.classes_, ["one", "two", "zero"])
        assert clf.n_features_in_ == 64
        np.testing.assert_allclose(flat(clf), reference,
                                   rtol=1e-9, atol=1e-11)
        np.testing.assert_array_equal(clf.predict(X), alone.predict(X))
        # score is collective: every rank gets the accuracy over all ranks' rows
        assert clf.score(X[rows], labels[rows]) == pytest.approx(alone.score(X, labels),
                                                                 abs=1e-12)
    # every rank its rows (here every rank has some): the folds are unions over the ranks
    rows = np.array_split(np.arange(len(X)), COMM.Get_size())[COMM.Get_rank()]
    if COMM.Get_rank() == 0:
        assert root.score(X, labels) == alone.score(X, labels)
    else:
        assert root.score(None, None) == alone.score(X, labels)
    scores = cross_val_score(MPIClassifier(**options), X[rows], labels[rows], cv=2)
    everyone = COMM.allgather(scores)
    for theirs in everyone:
        np.testing.assert_array_equal(theirs, everyone[0])


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(240)
def test_one_ranks_bad_rows_stop_every_rank(digits):
    X, y = digits
    X, y = X[:60].copy(), y[:60].astype(float)
    rank = COMM.Get_rank()
    if rank == 1:
        X[3, 5] = np.nan
    with pytest.raises(ValueError) as error:
        MPIRegressor(epochs=1).fit(X, y)
    if rank == 1:  # scikit-learn's own error where the bad value is
        assert "Input X contains NaN" in str(error.value)
    else:
        assert isinstance(error.value, InputError)
        assert "Input X contains NaN" in str(error.value) and "(on rank 1)" in str(error.value)
    X[3, 5] = 0.0
    mine = slice(0, 0) if rank == 1 else slice(0, 30)  # rank 1 has no rows
    reg = MPIRegressor(epochs=1).fit(X[mine], y[mine])
    with pytest.raises(ValueError, match="but MPIRegressor is expecting 64 features"):
        reg.score(X[:5, :3] if rank == 0 else X[:5], y[:5])
