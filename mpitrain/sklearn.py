"""scikit-learn estimators that train with mpitrain: :class:`MPIClassifier`, :class:`MPIRegressor`.

They follow scikit-learn's conventions (keyword-only constructor parameters stored as
given, no logic in ``__init__``, fitted attributes ending in ``_``), so they drop into
pipelines, ``cross_val_score`` and ``GridSearchCV``. Importing this module needs
scikit-learn (the ``[datasets]`` extra); ``import mpitrain`` alone does not.

Where the work happens:

- ``fit`` is **collective** over ``comm``: every rank calls it, with its own rows, or rank 0
  with all rows and the other ranks with ``None`` (as :func:`mpitrain.train` takes ``X=``,
  ``y=``). Every rank ends with the same model. ``comm=None`` means ``MPI.COMM_SELF`` when
  the job has one process and ``MPI.COMM_WORLD`` otherwise.
- ``score`` is **collective** too: it sums the rank's counts over ``comm``, so every rank
  gets the score of all rows (``GridSearchCV`` and ``cross_val_score`` with the default
  scoring then pick the same parameters on every rank). Ranks without rows pass ``None``.
- ``predict`` and ``predict_proba`` are **local**: no MPI, each rank predicts its own rows.

Labels may be anything scikit-learn accepts (numbers, strings, booleans): ``classes_`` are
the sorted distinct labels over all ranks, trained as the indices ``0..k-1``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from mpi4py import MPI
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from .config import FIELDS
from .errors import UserError, agree
from .models import Model, ModelError
from .models.dense import BUILTIN, Logistic
from .models.predict import predict as predict_saved
from .models.predict import predict_proba as predict_proba_saved
from .models.registry import is_model_path, load_class
from .training import train

#: Options an estimator never passes through ``train_options``, and what to do instead.
NOT_TRAIN_OPTIONS = {"data": "pass the rows to fit(X, y)", "test_data": "pass the rows to "
                     "fit(X, y)", "model_options": "pass a model object as model="}
#: ``train()`` options of every fit, unless ``train_options`` says otherwise: no holdout,
#: no progress lines (and no files: ``out`` is None by default).
QUIET_RUN = {"test_fraction": 0.0, "quiet": True}
#: dtypes ``fit`` and ``predict`` keep; anything else becomes float64 (then ``dtype``).
FLOAT_DTYPES = (np.float64, np.float32)


class InputError(UserError, ValueError):
    """Bad input to an estimator, raised on every rank of ``comm``: a ValueError, as
    scikit-learn expects, and an agreed :class:`mpitrain.errors.UserError`."""

    agreed = True


class _MPIEstimator(BaseEstimator):
    """What both estimators share: parameters → ``train()``, rows → agreed checks; the
    parameters are :class:`MPIRegressor`'s (the classifier adds ``hidden``)."""

    _task: ClassVar[str]
    #: The explicit parameters that are ``train()`` options of the same name.
    _options: ClassVar[tuple[str, ...]] = (
        "epochs", "batch_size", "lr", "optimizer", "momentum", "lr_schedule", "weight_decay",
        "seed", "dtype", "standardize", "shuffle")

    def __init__(self, *, model: str | Model = "linear", epochs: int = 10,
                 batch_size: int = 64, lr: float = 0.1, optimizer: str = "sgd",
                 momentum: float = 0.9, lr_schedule: str = "constant",
                 weight_decay: float = 0.0, seed: int = 0, dtype: str = "float32",
                 standardize: bool = True, shuffle: str = "global",
                 train_options: dict[str, Any] | None = None,
                 comm: MPI.Comm | None = None) -> None:
        self.model = model
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.lr_schedule = lr_schedule
        self.weight_decay = weight_decay
        self.seed = seed
        self.dtype = dtype
        self.standardize = standardize
        self.shuffle = shuffle
        self.train_options = train_options
        self.comm = comm

    def __sklearn_clone__(self) -> _MPIEstimator:
        """scikit-learn's clone, sharing ``comm``: a communicator is a handle to the same
        ranks (and one made with ``Dup``/``Split`` cannot be copied)."""
        comm, self.comm = self.comm, None
        try:
            clone = super().__sklearn_clone__()
        finally:
            self.comm = comm
        clone.comm = comm
        return clone

    # -- fit -------------------------------------------------------------------------------
    def _communicator(self) -> MPI.Comm:
        if self.comm is None:
            return MPI.COMM_SELF if MPI.COMM_WORLD.Get_size() == 1 else MPI.COMM_WORLD
        if not isinstance(self.comm, MPI.Intracomm):
            raise ValueError(f"comm must be an mpi4py intracommunicator such as "
                             f"MPI.COMM_WORLD (got {self.comm!r})")
        return self.comm

    def _train(self, comm: MPI.Comm, X: np.ndarray | None, y: np.ndarray | None,
               options: dict[str, Any]) -> None:
        """Collective: train on every rank's rows and store the fitted attributes."""
        try:
            result = train(comm=comm, X=X, y=y, **options)
        except UserError as exc:  # agreed by every rank inside train()
            raise InputError(str(exc)) from None
        self.model_ = result.model
        self.history_ = result.history
        self.n_iter_ = len(result.history)
        if X is None:  # rank 0 passed every row: this rank learns the width from the model
            self.n_features_in_ = self.model_.n_features
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_

    def _train_options(self) -> dict[str, Any]:
        """``train()`` keywords from the parameters (checked the same way on every rank)."""
        extra = {} if self.train_options is None else self.train_options
        if not isinstance(extra, dict):
            raise ValueError(f"train_options must be a dict of mpitrain.train options "
                             f"(got {extra!r})")
        params = self.get_params(deep=False)
        for name in extra:
            instead = (f"set it as the estimator's parameter {name}=" if name in params
                       else NOT_TRAIN_OPTIONS.get(name))
            if instead:
                raise ValueError(f"train_options[{name!r}]: {instead}")
            if name not in FIELDS:
                raise ValueError(f"train_options: {name!r} is not an option of "
                                 "mpitrain.train (see mpitrain.TrainConfig)")
        self._check_model()
        options = {name: params[name] for name in self._options}
        options["model"] = self.model
        if "hidden" in params:
            options["hidden"] = tuple(self.hidden)
        return {**QUIET_RUN, **options, **extra}

    def _check_model(self) -> None:
        """``model`` is a built-in name, ``module:Class`` or a model object, for the task."""
        model = self.model
        try:
            if isinstance(model, Model):
                task, shown = model.task, type(model).__name__
            elif isinstance(model, str) and (model in BUILTIN or is_model_path(model)):
                cls = BUILTIN[model] if model in BUILTIN else load_class(model)
                task, shown = cls.task, repr(model)
            else:
                raise ValueError(f"model must be one of {', '.join(BUILTIN)}, "
                                 f"'package.module:Class' or a mpitrain.models.Model "
                                 f"(got {model!r})")
        except ModelError as exc:
            raise ValueError(f"model={model!r}: {exc}") from None
        if task != self._task:
            other = "MPIRegressor" if task == "regression" else "MPIClassifier"
            raise ValueError(f"{type(self).__name__} needs a {self._task} model, but model="
                             f"{shown} is a {task} model (use {other})")

    def _checked(self, comm: MPI.Comm, X: Any, y: Any, **checks: Any
                 ) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
        """Collective: the parameters as ``train()`` options and scikit-learn's checks of
        this rank's rows, agreed over ``comm`` (on a communicator of several ranks, a rank
        may pass None for both: it has no rows). A rank whose checks fail raises
        scikit-learn's own error; the other ranks an :class:`InputError`."""
        failure, options = None, {}
        try:
            options = self._train_options()
            if not (X is None and y is None and comm.Get_size() > 1):
                X, y = validate_data(self, X, y, dtype=FLOAT_DTYPES,
                                     ensure_min_samples=_fewest_rows(comm), **checks)
                if self._task == "classification" and len(y):
                    check_classification_targets(y)
        except (ValueError, TypeError) as exc:
            failure = exc
        _agreed(comm, failure)
        return X, y, options

    # -- predict and score -----------------------------------------------------------------
    def _scores(self, X: Any) -> np.ndarray:
        """The model's predict-kernel output for this rank's rows (local, no MPI)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=FLOAT_DTYPES, reset=False)
        outputs = predict_proba_saved if self._task == "classification" else predict_saved
        return outputs(self.model_, X)

    def _score_sums(self, X: Any, y: Any, sample_weight: Any) -> tuple[MPI.Comm, Any, Any, Any]:
        """Collective: this rank's predictions, labels and weights (checked and agreed)."""
        check_is_fitted(self)
        comm = self._communicator()
        local: tuple[Any, Any, Any] = (np.empty(0), np.empty(0), np.empty(0))
        failure = None
        if not (X is None and y is None and comm.Get_size() > 1):
            try:
                X, y = validate_data(self, X, y, dtype=FLOAT_DTYPES, reset=False,
                                     ensure_min_samples=_fewest_rows(comm))
                weights = (np.ones(len(y)) if sample_weight is None else
                           np.asarray(sample_weight, dtype=np.float64).reshape(-1))
                if len(weights) != len(y):
                    raise ValueError(f"sample_weight has {len(weights)} values but y has "
                                     f"{len(y)}")
                local = (self.predict(X) if len(y) else y, y, weights)
            except (ValueError, TypeError) as exc:
                failure = exc
        _agreed(comm, failure)
        return comm, *local


class MPIClassifier(ClassifierMixin, _MPIEstimator):
    """A classifier trained with mpitrain over the ranks of ``comm`` (see the module
    docstring for which methods are collective).

    ``model``: ``'mlp'`` (ReLU hidden layers of sizes ``hidden``, softmax head),
    ``'softmax'``, ``'logistic'`` (two classes) or a classification
    :class:`mpitrain.models.Model` object (``'package.module:Class'`` names one by its
    default options). The other parameters are the :func:`mpitrain.train` options of the
    same name; ``train_options`` passes any other (e.g. ``{"reduce": "ring"}``). Training
    holds out no test rows (unless ``train_options={"test_fraction": ...}``), prints
    nothing and writes no files (unless ``train_options={"out": ...}``).

    Fitted attributes: ``classes_``, ``n_features_in_`` (``feature_names_in_``),
    ``model_`` (a :class:`mpitrain.models.SavedModel`: ``mpitrain.predict(clf.model_, X)``
    gives class indices), ``history_`` (metrics per epoch, or per evaluated round in a
    federated ``mode``), ``n_iter_`` (their number).
    """

    _task = "classification"

    def __init__(self, *, model: str | Model = "mlp", hidden: tuple[int, ...] = (128,),
                 epochs: int = 10, batch_size: int = 64, lr: float = 0.1,
                 optimizer: str = "sgd", momentum: float = 0.9,
                 lr_schedule: str = "constant", weight_decay: float = 0.0, seed: int = 0,
                 dtype: str = "float32", standardize: bool = True, shuffle: str = "global",
                 train_options: dict[str, Any] | None = None,
                 comm: MPI.Comm | None = None) -> None:
        super().__init__(model=model, epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, momentum=momentum, lr_schedule=lr_schedule,
                         weight_decay=weight_decay, seed=seed, dtype=dtype,
                         standardize=standardize, shuffle=shuffle,
                         train_options=train_options, comm=comm)
        self.hidden = hidden

    def fit(self, X: Any, y: Any) -> MPIClassifier:
        """Collective: train on every rank's rows (or rank 0's, the others passing None)."""
        comm = self._communicator()
        X, y, options = self._checked(comm, X, y)
        # the distinct labels of each rank: few, and of any type scikit-learn accepts
        # (strings, objects), so pickled like errors.agree's messages
        everyone = comm.allgather(np.array([]) if y is None else np.unique(y))
        everyone = [labels for labels in everyone if len(labels)]
        try:
            classes = unique_labels(*everyone)  # the same on every rank
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if len(classes) < 2:
            raise InputError(f"{type(self).__name__} needs rows of at least 2 classes, but "
                             f"y holds one class: {classes.tolist()[0]!r}")
        if len(classes) > 2 and not self.__sklearn_tags__().classifier_tags.multi_class:
            raise InputError(f"Only binary classification is supported by model="
                             f"{self.model!r}, but y holds {len(classes)} classes; use "
                             "model='softmax' or 'mlp'")
        self.classes_ = classes
        codes = None if y is None else LabelEncoder().fit(classes).transform(y)
        self._train(comm, X, codes, options)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Local: the class of each row (the arg-max of :meth:`predict_proba`)."""
        scores = self._scores(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Local: class probabilities, one column per class of ``classes_``."""
        return self._scores(X).astype(np.float64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        binary = self.model == "logistic" or isinstance(self.model, Logistic)
        tags.classifier_tags.multi_class = not binary
        return tags

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Collective: accuracy over every rank's rows (ranks without rows pass None)."""
        comm, predicted, y, weights = self._score_sums(X, y, sample_weight)
        sums = _allreduce(comm, [np.sum(weights * (predicted == y)), np.sum(weights)])
        return float(sums[0] / sums[1]) if sums[1] else 0.0


class MPIRegressor(RegressorMixin, _MPIEstimator):
    """A regressor trained with mpitrain over the ranks of ``comm`` (see the module
    docstring for which methods are collective).

    ``model``: ``'linear'`` (least squares) or a regression :class:`mpitrain.models.Model`
    object. The other parameters are those of :class:`MPIClassifier`. Targets are used as
    given: scale large ones (e.g. ``TransformedTargetRegressor``) to keep SGD stable.

    Fitted attributes: ``n_features_in_`` (``feature_names_in_``), ``model_``,
    ``history_``, ``n_iter_``.
    """

    _task = "regression"

    def fit(self, X: Any, y: Any) -> MPIRegressor:
        """Collective: train on every rank's rows (or rank 0's, the others passing None)."""
        comm = self._communicator()
        X, y, options = self._checked(comm, X, y, y_numeric=True)
        self._train(comm, X, y, options)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Local: the predicted value of each row."""
        return self._scores(X).astype(np.float64)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Collective: R² over every rank's rows (ranks without rows pass None)."""
        comm, predicted, y, weights = self._score_sums(X, y, sample_weight)
        total, weighted = _allreduce(comm, [np.sum(weights), np.sum(weights * y)])
        mean = weighted / total if total else 0.0
        residual, spread = _allreduce(comm, [np.sum(weights * (y - predicted) ** 2),
                                             np.sum(weights * (y - mean) ** 2)])
        if spread == 0.0:  # scikit-learn's r2_score(force_finite=True)
            return 1.0 if residual == 0.0 else 0.0
        return float(1.0 - residual / spread)


def _fewest_rows(comm: MPI.Comm) -> int:
    """Rows a rank must pass: one when alone, none of several (others may hold them all)."""
    return 1 if comm.Get_size() == 1 else 0


def _agreed(comm: MPI.Comm, failure: BaseException | None) -> None:
    """Collective: raise on every rank when any rank failed its local checks (the failing
    rank its own exception, the others an InputError naming the lowest failing rank)."""
    size = comm.Get_size()
    where = f" (on rank {comm.Get_rank()})" if size > 1 else ""
    try:
        agree(comm, None if failure is None else f"{failure}{where}")
    except UserError as exc:
        if failure is not None:
            raise failure from None
        raise InputError(str(exc)) from None


def _allreduce(comm: MPI.Comm, values: list[float]) -> np.ndarray:
    """Collective: the float64 sums of ``values`` over ``comm``."""
    local = np.array(values, dtype=np.float64)
    total = np.empty_like(local)
    comm.Allreduce(local, total, op=MPI.SUM)
    return total


__all__ = ["InputError", "MPIClassifier", "MPIRegressor"]
