"""mpitrain.sklearn's tree ensembles and k-means: scikit-learn's own estimator checks,
model selection, the same model as ``train()`` and scikit-learn's estimators; under
mpiexec, the same model on every rank and as one process, however the rows are passed."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

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
