"""scikit-learn estimators of mpitrain's tree ensembles (``--model gbdt``, ``--model
forest``): :class:`MPIGradientBoostingClassifier`, :class:`MPIGradientBoostingRegressor`,
:class:`MPIRandomForestClassifier`, :class:`MPIRandomForestRegressor`.

Their parameters carry scikit-learn's names (``n_estimators``, ``learning_rate``,
``random_state``, ...), each mapped to one :func:`mpitrain.train` option (the table in
docs/trees.md). The trees are the same for any number of ranks (fixed-point sums), so
``fit`` on P ranks gives the model one process fits on all rows, bit for bit.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from mpi4py import MPI
from sklearn.utils.validation import check_is_fitted

from ..training import TrainResult
from .base import Classifies, MPIEstimator, Regresses

#: ``max_features`` (scikit-learn's spelling) → ``--max-features``.
MAX_FEATURES = {"sqrt": "sqrt", "log2": "log2", None: "all", 1.0: "all"}


class _TreeEnsemble(MPIEstimator):
    """What the tree estimators share: the model and its loss as fixed options, float64
    rows (thresholds compare in float64), ``feature_importances_``."""

    _kind: ClassVar[str]  # gbdt or forest
    max_depth: int | None
    max_leaf_nodes: int | None

    def _model_options(self) -> dict[str, Any]:
        loss = "squared" if self._task == "regression" else "auto"
        depth, leaves = self.max_depth, self.max_leaf_nodes
        if depth is None and leaves is None:
            raise ValueError("max_depth=None (no depth limit) needs max_leaf_nodes (trees "
                             "then grow best-first up to that many leaves)")
        return {"model": self._kind, "loss": loss, "dtype": "float64",
                "max_depth": 0 if depth is None else depth,
                "max_leaves": 0 if leaves is None else leaves}

    @property
    def feature_importances_(self) -> np.ndarray:
        """The share of the splits on each feature (LightGBM's ``importance_type="split"``;
        not scikit-learn's impurity decrease, which the trees do not store); sums to 1
        unless no tree split."""
        check_is_fitted(self)
        feature = self.model_.arrays["feature"]
        counts = np.bincount(feature[feature >= 0],
                             minlength=self.n_features_in_).astype(np.float64)
        total = counts.sum()
        return counts / total if total else counts


class _Boosting(_TreeEnsemble):
    """The parameters of both gradient-boosting estimators."""

    _kind = "gbdt"
    _options: ClassVar[dict[str, str]] = {
        "n_estimators": "trees", "learning_rate": "lr",
        "min_samples_leaf": "min_samples_leaf", "l2_regularization": "l2",
        "min_child_weight": "min_child_weight", "max_bins": "max_bins",
        "random_state": "seed"}
    _derived: ClassVar[dict[str, str]] = {"early_stopping": "n_iter_no_change",
                                          "test_fraction": "validation_fraction",
                                          "max_depth": "max_depth",
                                          "max_leaves": "max_leaf_nodes"}

    def __init__(self, *, n_estimators: int = 100, learning_rate: float = 0.1,
                 max_depth: int | None = 6, max_leaf_nodes: int | None = None,
                 min_samples_leaf: int = 20,
                 l2_regularization: float = 0.0, min_child_weight: float = 1e-3,
                 max_bins: int = 255, n_iter_no_change: int | None = None,
                 validation_fraction: float = 0.1, random_state: int = 0,
                 train_options: dict[str, Any] | None = None,
                 comm: MPI.Comm | None = None) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.min_child_weight = min_child_weight
        self.max_bins = max_bins
        self.n_iter_no_change = n_iter_no_change
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.train_options = train_options
        self.comm = comm

    def _model_options(self) -> dict[str, Any]:
        options = super()._model_options()
        if self.n_iter_no_change is None:
            return options
        fraction = self.validation_fraction
        if not (isinstance(fraction, float | int) and 0.0 < fraction < 1.0):
            raise ValueError(f"validation_fraction must be in (0, 1) when n_iter_no_change "
                             f"is set (got {fraction!r})")
        return {**options, "early_stopping": self.n_iter_no_change, "test_fraction": fraction}

    def _train(self, comm: MPI.Comm, X: np.ndarray | None, y: np.ndarray | None,
               options: dict[str, Any]) -> TrainResult:
        result = super()._train(comm, X, y, options)
        self.n_iter_ = int(self.model_.info["rounds"])  # kept by early stopping
        return result


class MPIGradientBoostingClassifier(Classifies, _Boosting):
    """Gradient-boosted trees (``--model gbdt``) as a scikit-learn classifier, trained over
    the ranks of ``comm`` (see the package docstring for which methods are collective).

    Logistic loss for two classes, softmax (one tree per class and round) for more.
    Parameters → ``train()`` options: ``n_estimators`` → ``trees`` (boosting rounds),
    ``learning_rate`` → ``lr``, ``l2_regularization`` → ``l2``, ``random_state`` →
    ``seed`` (binning sample, holdout), ``n_iter_no_change`` → ``early_stopping`` (None:
    off; else hold out ``validation_fraction`` of the rows and keep the trees up to the
    best validation loss), the others the same names (``max_depth``,
    ``min_samples_leaf``, ``min_child_weight``, ``max_bins``). Trees grow level-wise to
    ``max_depth`` (default 6, as HistGradientBoosting's usual tuned depth), or best-first
    (leaf-wise, as LightGBM and HistGradientBoosting) to ``max_leaf_nodes`` → ``max_leaves``
    leaves, with ``max_depth`` as an extra limit or ``None`` for none.

    Fitted attributes: ``classes_``, ``n_features_in_`` (``feature_names_in_``),
    ``model_`` (a :class:`mpitrain.models.estimators.SavedEstimator`, what model.npz
    holds), ``history_`` (metrics per round), ``n_iter_`` (rounds in the model),
    ``feature_importances_`` (share of splits).
    """


class MPIGradientBoostingRegressor(Regresses, _Boosting):
    """Gradient-boosted trees (``--model gbdt --loss squared``) as a scikit-learn
    regressor; parameters and fitted attributes as :class:`MPIGradientBoostingClassifier`
    (without ``classes_``)."""


class _Forest(_TreeEnsemble):
    """The parameters of both random-forest estimators."""

    _kind = "forest"
    _options: ClassVar[dict[str, str]] = {
        "n_estimators": "trees", "min_samples_leaf": "min_samples_leaf",
        "max_bins": "max_bins", "oob_score": "oob_score", "random_state": "seed"}
    _derived: ClassVar[dict[str, str]] = {"max_features": "max_features",
                                          "max_depth": "max_depth",
                                          "max_leaves": "max_leaf_nodes"}

    def __init__(self, *, n_estimators: int = 100, max_depth: int | None = 12,
                 max_leaf_nodes: int | None = None, min_samples_leaf: int = 1,
                 max_features: str | float | None = "sqrt", max_bins: int = 255,
                 oob_score: bool = False, random_state: int = 0,
                 train_options: dict[str, Any] | None = None,
                 comm: MPI.Comm | None = None) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.max_bins = max_bins
        self.oob_score = oob_score
        self.random_state = random_state
        self.train_options = train_options
        self.comm = comm

    def _model_options(self) -> dict[str, Any]:
        rule = self.max_features
        if not isinstance(rule, str | float | int | type(None)) or rule not in MAX_FEATURES:
            raise ValueError(f"max_features must be 'sqrt', 'log2', 1.0 or None (all "
                             f"features) (got {rule!r})")
        return {**super()._model_options(), "max_features": MAX_FEATURES[rule]}

    def _train(self, comm: MPI.Comm, X: np.ndarray | None, y: np.ndarray | None,
               options: dict[str, Any]) -> TrainResult:
        result = super()._train(comm, X, y, options)
        if self.oob_score:  # the last tree's out-of-bag score (all trees)
            self.oob_score_ = result.history[-1]["oob_score"]
        return result


class MPIRandomForestClassifier(Classifies, _Forest):
    """A random forest (``--model forest``, Gini) as a scikit-learn classifier, trained
    over the ranks of ``comm`` (see the package docstring for which methods are
    collective); ``predict_proba`` averages the trees' class shares.

    Parameters → ``train()`` options: ``n_estimators`` → ``trees``, ``random_state`` →
    ``seed`` (bootstrap, feature draws, binning sample), ``max_features`` → the
    ``max_features`` rule (``'sqrt'``, ``'log2'``, ``None`` or ``1.0``: all features),
    ``max_leaf_nodes`` → ``max_leaves`` (best-first growth; then ``max_depth=None`` for
    no depth limit), ``oob_score`` → ``oob_score``, the others the same names.
    Differences from scikit-learn's forest: trees are depth-limited (``max_depth`` 12 by
    default; ``None`` only with ``max_leaf_nodes``), bootstrap is always on (Poisson(1)
    row weights), splits are between histogram bins (``max_bins``).

    Fitted attributes: ``classes_``, ``n_features_in_`` (``feature_names_in_``),
    ``model_``, ``history_`` (metrics per tree), ``n_iter_`` (trees),
    ``feature_importances_`` (share of splits), ``oob_score_`` (with ``oob_score=True``:
    accuracy, or R² for the regressor, of the out-of-bag predictions).
    """


class MPIRandomForestRegressor(Regresses, _Forest):
    """A random forest (``--model forest --loss squared``) as a scikit-learn regressor;
    parameters and fitted attributes as :class:`MPIRandomForestClassifier` (without
    ``classes_``; ``max_features`` defaults to ``1.0``: all features, scikit-learn's
    default)."""

    def __init__(self, *, n_estimators: int = 100, max_depth: int | None = 12,
                 max_leaf_nodes: int | None = None, min_samples_leaf: int = 1,
                 max_features: str | float | None = 1.0, max_bins: int = 255,
                 oob_score: bool = False, random_state: int = 0,
                 train_options: dict[str, Any] | None = None,
                 comm: MPI.Comm | None = None) -> None:
        super().__init__(n_estimators=n_estimators, max_depth=max_depth,
                         max_leaf_nodes=max_leaf_nodes, min_samples_leaf=min_samples_leaf,
                         max_features=max_features, max_bins=max_bins,
                         oob_score=oob_score, random_state=random_state,
                         train_options=train_options, comm=comm)
