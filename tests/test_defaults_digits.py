"""Defaults that train well: ``mpitrain train --data digits --model mlp`` with no other
options reaches the test accuracy of scikit-learn's ``MLPClassifier()`` defaults on the same
split (the 20% holdout of ``--seed 0``)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from cli_runner import run_train

from mpitrain.config import TrainConfig
from mpitrain.data.holdout import make_holdout

pytestmark = pytest.mark.timeout(240)


def sklearn_default_accuracy() -> tuple[float, int]:
    """``MLPClassifier(random_state=0)`` (every other parameter its default: 100 ReLU units,
    Adam lr 1e-3, batch 200, up to 200 epochs, L2 1e-4) trained on mpitrain's training rows
    of digits and scored on its test rows; and the number of test rows."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    defaults = TrainConfig()
    X, y = load_digits(return_X_y=True)
    test = make_holdout(len(y), defaults.test_fraction, defaults.seed).test
    train = np.setdiff1d(np.arange(len(y)), test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(random_state=0).fit(X[train], y[train])
    return float(model.score(X[test], y[test])), len(test)


def test_digits_mlp_defaults_reach_mlpclassifier_defaults(tmp_path):
    done = run_train(["--data", "digits", "--model", "mlp", "--out", str(tmp_path / "run")],
                     ranks=2, timeout=180)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    ours = summary["final"]["test_accuracy"]
    theirs, test_rows = sklearn_default_accuracy()
    assert summary["data"]["test_rows"] == test_rows  # the same split
    assert ours >= theirs and ours >= 0.97, (ours, theirs)


def test_the_defaults_are_momentum_sgd_on_one_hidden_layer_of_128():
    defaults = TrainConfig()
    assert (defaults.optimizer, defaults.momentum, defaults.lr, defaults.hidden,
            defaults.epochs, defaults.batch_size) == ("momentum", 0.9, 0.1, (128,), 10, 64)
