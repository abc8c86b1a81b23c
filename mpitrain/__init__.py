"""mpitrain: data-parallel and federated training over MPI with numba kernels.

Python API (collective: call on every rank)::

    from mpitrain import train
    result = train(data="digits", model="mlp", hidden=(64,), epochs=20)
    result.params["W0"], result.history[-1]["test_accuracy"]
    predict("runs/x/model.npz", X), predict_proba(...)   # no MPI needed

scikit-learn estimators (collective ``fit``): ``mpitrain.sklearn.MPIClassifier``,
``MPIRegressor``, ``MPIGradientBoosting*``, ``MPIRandomForest*``, ``MPIKMeans``, also
``mpitrain.MPIClassifier`` etc. (the only names that need scikit-learn).

Your own model: subclass :class:`mpitrain.Model` (see ``docs/models.md``) and pass
``train(model=MyModel(...))``.

Importing :mod:`mpitrain` alone does not initialise MPI; the names below load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "train": "mpitrain.training",
    "TrainResult": "mpitrain.training",
    "TrainConfig": "mpitrain.config",
    "UserError": "mpitrain.errors",
    "allreduce": "mpitrain.collectives",
    "load_model": "mpitrain.models",
    "predict": "mpitrain.models.predict",
    "predict_proba": "mpitrain.models.predict",
    "Model": "mpitrain.models",
    "MPIClassifier": "mpitrain.sklearn",  # needs scikit-learn
    "MPIRegressor": "mpitrain.sklearn",
    "MPIGradientBoostingClassifier": "mpitrain.sklearn",
    "MPIGradientBoostingRegressor": "mpitrain.sklearn",
    "MPIRandomForestClassifier": "mpitrain.sklearn",
    "MPIRandomForestRegressor": "mpitrain.sklearn",
    "MPIKMeans": "mpitrain.sklearn",
}

__all__ = ["__version__", *_LAZY]


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mpitrain' has no attribute {name!r}")
