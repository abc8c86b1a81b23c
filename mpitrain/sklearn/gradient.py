"""scikit-learn estimators of mpitrain's gradient models: :class:`MPIClassifier` (mlp,
softmax, logistic or your own classification model) and :class:`MPIRegressor` (linear or
your own); their parameters are the :func:`mpitrain.train` options of the same names."""

from __future__ import annotations

from typing import Any, ClassVar

from mpi4py import MPI

from ..models import Model, ModelError
from ..models.dense import BUILTIN, Logistic
from ..models.registry import is_model_path, load_class
from .base import Classifies, MPIEstimator, Regresses

_SAME_NAMES = ("epochs", "batch_size", "lr", "optimizer", "momentum", "lr_schedule",
               "weight_decay", "seed", "dtype", "standardize", "shuffle")


class _GradientEstimator(MPIEstimator):
    """The parameters of both gradient estimators (:class:`MPIRegressor`'s; the
    classifier adds ``hidden``) and the check of ``model``."""

    _options: ClassVar[dict[str, str]] = {name: name for name in _SAME_NAMES}

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

    def _model_options(self) -> dict[str, Any]:
        self._check_model()
        options: dict[str, Any] = {"model": self.model}
        if "hidden" in self.get_params(deep=False):
            options["hidden"] = tuple(self.hidden)  # type: ignore[attr-defined]
        return options

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


class MPIClassifier(Classifies, _GradientEstimator):
    """A classifier trained with mpitrain over the ranks of ``comm`` (see the package
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

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        binary = self.model == "logistic" or isinstance(self.model, Logistic)
        tags.classifier_tags.multi_class = not binary
        return tags


class MPIRegressor(Regresses, _GradientEstimator):
    """A regressor trained with mpitrain over the ranks of ``comm`` (see the package
    docstring for which methods are collective).

    ``model``: ``'linear'`` (least squares) or a regression :class:`mpitrain.models.Model`
    object. The other parameters are those of :class:`MPIClassifier`. Targets are used as
    given: scale large ones (e.g. ``TransformedTargetRegressor``) to keep SGD stable.

    Fitted attributes: ``n_features_in_`` (``feature_names_in_``), ``model_``,
    ``history_``, ``n_iter_``.
    """
