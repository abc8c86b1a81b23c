"""The model protocol: what mpitrain needs of a model, built-in or a user's own.

A model is a class with keyword constructor options (its hyperparameters, stored as
attributes of the same names, as in scikit-learn) that says

- its **task**: ``"classification"`` (int64 labels ``0..k-1``) or ``"regression"``;
- its **layout**: :meth:`Model.shapes`, named tensor shapes for the data's feature and class
  counts, laid out in that order in one flat buffer (parameters, gradients and optimizer
  state alike, so a whole gradient is one message);
- its **initialisation**: :meth:`Model.init`, seeded, so every rank starts identical;
- its **spec**: :meth:`Model.spec`, a 1-D int64 or float64 array of the settings its kernels
  read at run time (one compiled kernel then serves every size);
- its **kernels**, numba-jitted functions stored as class attributes:

  ``gradient_kernel(params, grad, X, y, rows, work, spec) -> (loss_sum, correct)``
      adds the gradient of the SUM of the per-row losses over ``X[rows]`` into
      ``grad[:size]`` (mpitrain zeroes it first, unless the class sets
      ``overwrites_gradient = True``) and returns the loss sum and, for classifiers, the
      number of rows predicted right (0.0 for regression);
  ``predict_kernel(params, X, rows, out, work, spec)``
      writes one row of ``out`` per entry of ``rows``: class probabilities (``out`` has
      ``n_classes`` columns) or the regression value (one column);

  and optionally ``loss_kernel(params, X, y, rows, work, spec) -> (loss_sum, correct)``
  (forward only; without it evaluation runs the gradient kernel into scratch space).

``params``, ``grad``, ``work`` are C-contiguous 1-D float arrays (float32 or float64, the
run's ``--dtype``), ``X`` a C-contiguous 2-D array of that dtype, ``y`` int64 (classification)
or the float dtype (regression), ``rows`` int64 row indices (any order, repeats allowed,
possibly empty). ``work`` has :meth:`Model.workspace` elements; kernels must not allocate.

Optional hooks let a model do more where it can (the built-in dense networks use them):
``step_kernel(params, message, X, y, rows, work, spec)`` computes the gradient AND writes
``message[size:size+3] = loss, correct, rows`` in one call; ``forward_kernel`` +
``backward_kernel(params, message, nrows, layer, work, spec)`` + :meth:`Model.buckets`
split the gradient by layer, top first, so ``--overlap`` can reduce a layer's slice while
the layers below are computed. ``touched_kernel(X, rows, mark, out) -> count`` with
:meth:`Model.row_width` says which rows of the first ``n_features * row_width`` elements
(one row per input feature) a step on ``X[rows]`` can make non-zero: their sorted distinct
indices into ``out`` (int64, ``n_features`` long; ``mark`` is a zeroed uint8 array of
``n_features`` it must leave zeroed), so the sync strategy reduces only those rows
(the built-in sparse models, :mod:`mpitrain.models.sparse`).
``rows_step_kernel(params, message, X, y, rows, work, spec, mark, touched, held) -> count``
is ``step_kernel`` + ``touched_kernel`` in time that grows with the batch, not the row
block: the block of ``message`` is zero outside the rows ``touched[:held]`` (what the
kernel reported for this message last time; ``held < 0``: unknown) and is left zero
outside the rows it reports now (in any order, distinct) in ``touched``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

TASKS = ("classification", "regression")
INIT_STREAM = 0x1A17  # distinguishes the init stream from data and shuffle streams
KERNEL_HOOKS = ("gradient_kernel", "predict_kernel", "loss_kernel", "step_kernel",
                "forward_kernel", "backward_kernel", "touched_kernel", "rows_step_kernel")


class Model:
    """Base class of every model mpitrain trains (see the module docstring).

    Subclasses set :attr:`task`, implement :meth:`shapes` and provide ``gradient_kernel``
    and ``predict_kernel``; everything else has a default. Constructor parameters must be
    keyword arguments stored unchanged as attributes of the same name (no logic in
    ``__init__``): :meth:`get_params` reads them back to save and re-create the model.
    """

    task: ClassVar[str] = "classification"
    overwrites_gradient: ClassVar[bool] = False
    gradient_kernel: ClassVar[Callable[..., Any]]
    predict_kernel: ClassVar[Callable[..., Any]]

    # -- what subclasses implement ---------------------------------------------------------
    def shapes(self, *, n_features: int, n_classes: int) -> dict[str, tuple[int, ...]]:
        """Named tensor shapes, in buffer order, for data with these counts."""
        raise NotImplementedError(f"{type(self).__name__} must implement shapes()")

    def spec(self, *, n_features: int, n_classes: int) -> np.ndarray:
        """Settings the kernels read at run time (default: ``[n_features, n_classes]``)."""
        return np.array([n_features, n_classes], dtype=np.int64)

    def workspace(self, *, n_features: int, n_classes: int, rows: int) -> int:
        """Float elements of scratch space the kernels need for up to ``rows`` rows."""
        return 0

    def init(self, params: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        """Fill the named views ``params`` in place (default: PyTorch's ``nn.Linear`` rule,
        uniform in ±1/sqrt(fan_in); fan_in is a tensor's first dimension, and a 1-D tensor
        uses the fan_in of the tensor before it)."""
        fan_in = 1
        for view in params.values():
            if view.ndim >= 2:
                fan_in = view.shape[0]
            bound = 1.0 / np.sqrt(fan_in)
            view[...] = rng.uniform(-bound, bound, view.shape)

    def check_data(self, *, n_features: int, n_classes: int) -> str | None:
        """Why this model cannot train on such data (None: it can)."""
        return None

    def outputs(self, *, n_classes: int) -> int:
        """Columns of the predict kernel's output."""
        return n_classes if self.task == "classification" else 1

    def buckets(self, *, n_features: int, n_classes: int) -> list[tuple[int, int]]:
        """(start, stop) of each ``backward_kernel`` layer in the flat buffer, layer 0 first
        (only models with the split hooks)."""
        return []

    def row_width(self, *, n_features: int, n_classes: int) -> int:
        """Elements per input feature of the row block a ``touched_kernel`` reports on
        (0: the model has none)."""
        return 0

    # -- provided --------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [name for name, p in signature.parameters.items()
                if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor options of this model (what model.npz and config.toml store);
        ``deep`` is there for scikit-learn (``clone``, ``GridSearchCV`` over
        ``model__option``) and changes nothing."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Model:
        """Change constructor options; returns the model."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no option {name!r}; its "
                                 f"options are {', '.join(sorted(valid)) or 'none'}")
            setattr(self, name, value)
        return self

    @classmethod
    def kernel(cls, hook: str) -> Callable[..., Any] | None:
        """The class's kernel for ``hook`` (one of :data:`KERNEL_HOOKS`), or None."""
        return getattr(cls, hook, None)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({options})"


def model_name(model: Model) -> str:
    """``module:Class`` of a model object (how config files and model.npz name it)."""
    cls = type(model)
    return f"{cls.__module__}:{cls.__qualname__}"
