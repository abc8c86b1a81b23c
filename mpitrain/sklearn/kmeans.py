"""scikit-learn's k-means interface on mpitrain's ``--model kmeans``: :class:`MPIKMeans`.

``fit`` runs k-means|| and Lloyd over the ranks of ``comm`` (one allreduce per iteration,
the same centers for any number of ranks), then one more pass over this rank's rows for
``labels_`` and, summed over the ranks, ``inertia_``. ``predict`` and ``transform`` are
local; ``score`` (``-inertia``) is collective like every estimator's score here.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np
from mpi4py import MPI
from sklearn.base import ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ..kernels.trees import nearest
from .base import (
    FLOAT_DTYPES,
    InputError,
    MPIEstimator,
    agreed,
    allreduce_sums,
    fewest_rows,
    row_weights,
)


class MPIKMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin,
                MPIEstimator):
    """k-means (Lloyd, k-means|| initialisation) as a scikit-learn clusterer and
    transformer, trained over the ranks of ``comm`` (see the package docstring).

    Parameters → ``train()`` options: ``n_clusters``, ``max_iter``, ``tol`` (stop when the
    squared center shift is below ``tol`` × the mean feature variance, scikit-learn's
    rule) and ``standardize`` by the same names, ``random_state`` → ``seed``. One
    initialisation (k-means||, no ``n_init``). ``standardize=True`` clusters the features
    scaled to zero mean and unit variance over all ranks' rows: ``transform``,
    ``inertia_`` and ``score`` then measure distances in that space, while
    ``cluster_centers_`` are given in the input's units.

    Methods: ``fit`` and ``score`` (``-inertia`` of every rank's rows) are collective;
    ``predict`` (nearest center), ``transform`` (distance to each center), ``fit_predict``
    and ``fit_transform`` (after the collective fit) are local.

    Fitted attributes: ``cluster_centers_`` (k, features), ``labels_`` (this rank's rows;
    empty on a rank that passed None), ``inertia_`` (sum of squared distances of all
    ranks' rows to their nearest center), ``n_iter_`` (Lloyd iterations),
    ``n_features_in_`` (``feature_names_in_``), ``model_``, ``history_``.
    """

    _task = "clustering"
    _options: ClassVar[dict[str, str]] = {
        "n_clusters": "n_clusters", "max_iter": "max_iter", "tol": "tol",
        "random_state": "seed", "standardize": "standardize"}

    def __init__(self, *, n_clusters: int = 8, max_iter: int = 300, tol: float = 1e-4,
                 random_state: int = 0, standardize: bool = False,
                 train_options: dict[str, Any] | None = None,
                 comm: MPI.Comm | None = None) -> None:
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.standardize = standardize
        self.train_options = train_options
        self.comm = comm

    def _model_options(self) -> dict[str, Any]:
        return {"model": "kmeans", "dtype": "float64"}

    def fit(self, X: Any, y: Any = None) -> MPIKMeans:
        """Collective: cluster every rank's rows (or rank 0's, the others passing None);
        ``y`` is ignored."""
        comm = self._communicator()
        X, _, options = self._checked(comm, X, y)
        rows = int(allreduce_sums(comm, [0 if X is None else len(X)])[0])
        k = self.n_clusters
        if isinstance(k, numbers.Integral) and rows < k:  # the same on every rank
            raise InputError(f"n_samples={rows} should be >= n_clusters={k}")
        self._train(comm, X, None if X is None else np.zeros(len(X)), options)
        centers, saved = self.model_.arrays["centers"], self.model_
        self.cluster_centers_ = (centers * saved.std + saved.mean
                                 if saved.mean is not None else centers.copy())
        labels, distances = (self._nearest(X) if X is not None else
                             (np.empty(0, np.int64), np.empty(0)))
        self.labels_ = labels
        self.inertia_ = float(allreduce_sums(comm, [distances.sum()])[0])
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Local: the index of each row's nearest center (the lowest on ties)."""
        return self._nearest(self._rows(X))[0]

    def transform(self, X: Any) -> np.ndarray:
        """Local: each row's Euclidean distance to every center (rows, n_clusters), in
        the space the model clusters (standardised features with ``standardize=True``)."""
        Z, centers = self._clustered(self._rows(X)), self.model_.arrays["centers"]
        out = np.empty((len(Z), len(centers)))
        for c, center in enumerate(centers):
            out[:, c] = np.sqrt(np.square(Z - center).sum(axis=1))
        return out

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Collective: minus the (weighted) inertia of every rank's rows (ranks without
        rows pass None); ``y`` is ignored."""
        check_is_fitted(self)
        comm = self._communicator()
        local, failure = 0.0, None
        if not (X is None and comm.Get_size() > 1):
            try:
                X = validate_data(self, X, dtype=FLOAT_DTYPES, reset=False,
                                  ensure_min_samples=fewest_rows(comm))
                local = float(np.sum(row_weights(sample_weight, len(X)) * self._nearest(X)[1]))
            except (ValueError, TypeError) as exc:
                failure = exc
        agreed(comm, failure)
        return -float(allreduce_sums(comm, [local])[0])

    @property
    def _n_features_out(self) -> int:
        """Columns of ``transform`` (for ``get_feature_names_out``: ``mpikmeans0``, ...)."""
        return int(self.cluster_centers_.shape[0])

    def _clustered(self, X: np.ndarray) -> np.ndarray:
        """Checked rows as the model clusters them: float64, standardised when trained so."""
        saved = self.model_
        X = np.asarray(X, dtype=np.float64)
        if saved.mean is not None and saved.std is not None:
            X = (X - saved.mean) / saved.std
        return np.ascontiguousarray(X)

    def _nearest(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each checked row's nearest center and squared distance to it (local)."""
        Z = self._clustered(X)
        labels, distances = np.empty(len(Z), np.int64), np.empty(len(Z))
        nearest(Z, self.model_.arrays["centers"], labels, distances)
        return labels, distances
