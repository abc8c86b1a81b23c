"""scikit-learn estimators that train with mpitrain: :class:`MPIClassifier`,
:class:`MPIRegressor` (gradient models), :class:`MPIGradientBoostingClassifier`,
:class:`MPIGradientBoostingRegressor`, :class:`MPIRandomForestClassifier`,
:class:`MPIRandomForestRegressor` (tree ensembles) and :class:`MPIKMeans`.

They follow scikit-learn's conventions (keyword-only constructor parameters stored as
given, no logic in ``__init__``, fitted attributes ending in ``_``), so they drop into
pipelines, ``cross_val_score`` and ``GridSearchCV``. Importing this package needs
scikit-learn (the ``[datasets]`` extra); ``import mpitrain`` alone does not. Its modules
may import scikit-learn, mpi4py and any mpitrain package (they sit on top, beside
:mod:`mpitrain.training`, whose ``train()`` every ``fit`` calls).

Where the work happens:

- ``fit`` is **collective** over ``comm``: every rank calls it, with its own rows, or rank 0
  with all rows and the other ranks with ``None`` (as :func:`mpitrain.train` takes ``X=``,
  ``y=``). Every rank ends with the same model. ``comm=None`` means ``MPI.COMM_SELF`` when
  the job has one process and ``MPI.COMM_WORLD`` otherwise.
- ``score`` is **collective** too: it sums the rank's counts over ``comm``, so every rank
  gets the score of all rows (``GridSearchCV`` and ``cross_val_score`` with the default
  scoring then pick the same parameters on every rank). Ranks without rows pass ``None``.
- ``predict``, ``predict_proba`` and ``transform`` are **local**: no MPI, each rank
  predicts its own rows.

Labels may be anything scikit-learn accepts (numbers, strings, booleans): ``classes_`` are
the sorted distinct labels over all ranks, trained as the indices ``0..k-1``.
"""

from .base import InputError
from .gradient import MPIClassifier, MPIRegressor
from .kmeans import MPIKMeans
from .trees import (
    MPIGradientBoostingClassifier,
    MPIGradientBoostingRegressor,
    MPIRandomForestClassifier,
    MPIRandomForestRegressor,
)

# the public path (repr, pickles, documentation): mpitrain.sklearn.MPIClassifier
for _cls in (InputError, MPIClassifier, MPIRegressor, MPIGradientBoostingClassifier,
             MPIGradientBoostingRegressor, MPIRandomForestClassifier,
             MPIRandomForestRegressor, MPIKMeans):
    _cls.__module__ = __name__
del _cls

__all__ = ["InputError", "MPIClassifier", "MPIGradientBoostingClassifier",
           "MPIGradientBoostingRegressor", "MPIKMeans", "MPIRandomForestClassifier",
           "MPIRandomForestRegressor", "MPIRegressor"]
