"""What every mpitrain scikit-learn estimator shares: parameters → ``train()`` options,
the rows' checks agreed over ``comm``, the collective fit, and the classifier's and the
regressor's ``fit``/``predict``/``score`` (see the package docstring for the conventions).

An estimator names its parameters in ``_options`` (parameter → ``train()`` option, the same
name for the gradient estimators, scikit-learn's names for the trees) and adds the options
no parameter sets in :meth:`MPIEstimator._model_options` (the model, its loss, ...).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
from mpi4py import MPI
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from ..config import FIELDS, flag
from ..errors import UserError, agree
from ..models.predict import predict as predict_saved
from ..models.predict import predict_proba as predict_proba_saved
from ..training import TrainResult, train

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


class MPIEstimator(BaseEstimator):
    """Parameters → ``train()``, rows → agreed checks, one collective ``train()`` per fit.

    Subclasses set ``_task`` (``classification``, ``regression`` or ``clustering``),
    ``_options`` and :meth:`_model_options`, and have the parameters ``train_options`` and
    ``comm``."""

    _task: ClassVar[str]
    #: estimator parameter → the ``train()`` option it sets.
    _options: ClassVar[dict[str, str]]
    #: ``train()`` option → the parameter it is derived from, when not by ``_options``.
    _derived: ClassVar[dict[str, str]] = {}
    train_options: dict[str, Any] | None
    comm: MPI.Comm | None

    def __sklearn_clone__(self) -> MPIEstimator:
        """scikit-learn's clone, sharing ``comm``: a communicator is a handle to the same
        ranks (and one made with ``Dup``/``Split`` cannot be copied)."""
        comm, self.comm = self.comm, None
        try:
            clone = super().__sklearn_clone__()
        finally:
            self.comm = comm
        clone.comm = comm
        return clone

    def _model_options(self) -> dict[str, Any]:
        """The ``train()`` options no parameter of the same name sets (``model``, ...),
        checked; a ValueError names a bad parameter."""
        raise NotImplementedError

    # -- fit -------------------------------------------------------------------------------
    def _communicator(self) -> MPI.Comm:
        if self.comm is None:
            return MPI.COMM_SELF if MPI.COMM_WORLD.Get_size() == 1 else MPI.COMM_WORLD
        if not isinstance(self.comm, MPI.Intracomm):
            raise ValueError(f"comm must be an mpi4py intracommunicator such as "
                             f"MPI.COMM_WORLD (got {self.comm!r})")
        return self.comm

    def _train(self, comm: MPI.Comm, X: np.ndarray | None, y: np.ndarray | None,
               options: dict[str, Any]) -> TrainResult:
        """Collective: train on every rank's rows and store the fitted attributes."""
        try:
            result = train(comm=comm, X=X, y=y, **options)
        except UserError as exc:  # agreed by every rank inside train()
            raise InputError(self._in_parameters(str(exc))) from None
        self.model_ = result.model
        self.history_ = result.history
        self.n_iter_ = len(result.history)
        if X is None:  # rank 0 passed every row: this rank learns the width from the model
            self.n_features_in_ = self.model_.n_features
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        return result

    def _in_parameters(self, message: str) -> str:
        """``train()``'s message with the options renamed by a parameter spelled as the
        parameter (``--trees must be >= 1`` → ``n_estimators must be >= 1``)."""
        renamed = [(param, option) for param, option in self._options.items()
                   if param != option] + [(param, option) for option, param
                                          in self._derived.items()]
        for param, option in renamed:
            message = re.sub(rf"--{flag(option)}\b", param, message)
        return message

    def _train_options(self) -> dict[str, Any]:
        """``train()`` keywords from the parameters (checked the same way on every rank)."""
        extra = {} if self.train_options is None else self.train_options
        if not isinstance(extra, dict):
            raise ValueError(f"train_options must be a dict of mpitrain.train options "
                             f"(got {extra!r})")
        params = self.get_params(deep=False)
        by_option = {**{option: param for param, option in self._options.items()},
                     **self._derived}
        fixed = self._model_options()
        for name in extra:
            param = name if name in params else by_option.get(name)
            instead = (f"set it as the estimator's parameter {param}=" if param else
                       f"{type(self).__name__} sets it" if name in fixed else
                       NOT_TRAIN_OPTIONS.get(name))
            if instead:
                raise ValueError(f"train_options[{name!r}]: {instead}")
            if name not in FIELDS:
                raise ValueError(f"train_options: {name!r} is not an option of "
                                 "mpitrain.train (see mpitrain.TrainConfig)")
        options = {option: params[param] for param, option in self._options.items()}
        return {**QUIET_RUN, **options, **fixed, **extra}

    def _checked(self, comm: MPI.Comm, X: Any, y: Any, **checks: Any
                 ) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
        """Collective: the parameters as ``train()`` options and scikit-learn's checks of
        this rank's rows, agreed over ``comm`` (on a communicator of several ranks, a rank
        may pass None for both: it has no rows). A rank whose checks fail raises
        scikit-learn's own error; the other ranks an :class:`InputError`. A clusterer's
        ``y`` is ignored (None is returned for it)."""
        failure, options = None, {}
        try:
            options = self._train_options()
            if not (X is None and (y is None or self._task == "clustering")
                    and comm.Get_size() > 1):
                if self._task == "clustering":
                    X, y = validate_data(self, X, dtype=FLOAT_DTYPES,
                                         ensure_min_samples=fewest_rows(comm), **checks), None
                else:
                    X, y = validate_data(self, X, y, dtype=FLOAT_DTYPES,
                                         ensure_min_samples=fewest_rows(comm), **checks)
                if self._task == "classification" and len(y):
                    check_classification_targets(y)
            else:
                y = None
        except (ValueError, TypeError) as exc:
            failure = exc
        agreed(comm, failure)
        return X, y, options

    # -- predict and score -----------------------------------------------------------------
    def _rows(self, X: Any) -> np.ndarray:
        """This rank's rows to predict, checked against the fitted ones (local)."""
        check_is_fitted(self)
        return validate_data(self, X, dtype=FLOAT_DTYPES, reset=False)

    def _scores(self, X: Any) -> np.ndarray:
        """The model's predict-kernel output for this rank's rows (local, no MPI)."""
        X = self._rows(X)
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
                                     ensure_min_samples=fewest_rows(comm))
                weights = row_weights(sample_weight, len(y))
                local = (self.predict(X) if len(y) else y, y, weights)
            except (ValueError, TypeError) as exc:
                failure = exc
        agreed(comm, failure)
        return comm, *local


class Classifies(ClassifierMixin, MPIEstimator):
    """``fit``/``predict``/``predict_proba``/``score`` of a classifier: any labels,
    ``classes_`` the sorted distinct labels over all ranks, trained as ``0..k-1``. Its
    collective ``score`` overrides ClassifierMixin's (local) one: list it first."""

    _task = "classification"

    def fit(self, X: Any, y: Any) -> Classifies:
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
                             f"{self.model!r}, but y holds {len(classes)} classes; use "  # type: ignore[attr-defined]
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

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Collective: accuracy over every rank's rows (ranks without rows pass None)."""
        comm, predicted, y, weights = self._score_sums(X, y, sample_weight)
        sums = allreduce_sums(comm, [np.sum(weights * (predicted == y)), np.sum(weights)])
        return float(sums[0] / sums[1]) if sums[1] else 0.0


class Regresses(RegressorMixin, MPIEstimator):
    """``fit``/``predict``/``score`` (R², collective, overriding RegressorMixin's) of a
    regressor: targets used as given."""

    _task = "regression"

    def fit(self, X: Any, y: Any) -> Regresses:
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
        total, weighted = allreduce_sums(comm, [np.sum(weights), np.sum(weights * y)])
        mean = weighted / total if total else 0.0
        residual, spread = allreduce_sums(comm, [np.sum(weights * (y - predicted) ** 2),
                                                 np.sum(weights * (y - mean) ** 2)])
        if spread == 0.0:  # scikit-learn's r2_score(force_finite=True)
            return 1.0 if residual == 0.0 else 0.0
        return float(1.0 - residual / spread)


def row_weights(sample_weight: Any, rows: int) -> np.ndarray:
    """``sample_weight`` as float64 weights of ``rows`` rows (None: ones)."""
    weights = (np.ones(rows) if sample_weight is None else
               np.asarray(sample_weight, dtype=np.float64).reshape(-1))
    if len(weights) != rows:
        raise ValueError(f"sample_weight has {len(weights)} values for {rows} rows")
    return weights


def fewest_rows(comm: MPI.Comm) -> int:
    """Rows a rank must pass: one when alone, none of several (others may hold them all)."""
    return 1 if comm.Get_size() == 1 else 0


def agreed(comm: MPI.Comm, failure: BaseException | None) -> None:
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


def allreduce_sums(comm: MPI.Comm, values: list[float]) -> np.ndarray:
    """Collective: the float64 sums of ``values`` over ``comm``."""
    local = np.array(values, dtype=np.float64)
    total = np.empty_like(local)
    comm.Allreduce(local, total, op=MPI.SUM)
    return total
