"""A model bound to its data: layout, spec and kernels for these feature and class counts.

What the strategies, evaluators and saved models use: one object that knows the flat
buffer's layout, allocates workspaces, initialises parameters and calls the model's
kernels the protocol's way (zeroing the gradient first for kernels that add into it,
writing the message tail when the model has no one-call step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dense import BUILTIN, DenseNetwork
from .layout import Layout
from .protocol import INIT_STREAM, TASKS, Model, model_name


class ModelError(ValueError):
    """A model object breaks the protocol (bad shapes, missing kernel, ...)."""


def user_call(where: str, what: str, fn: Callable[..., Any], *args: Any,
              **kwargs: Any) -> Any:
    """Call a method of a (possibly user's) model: anything it raises becomes one
    ModelError line naming the model and the method, so every rank can report it."""
    try:
        return fn(*args, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{where}: {what} raised {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class BoundModel:
    """``model`` for data of ``n_features`` features and ``n_classes`` classes."""

    model: Model
    n_features: int
    n_classes: int
    label: str | None = None  # how the user named the model (default: from its class)
    layout: Layout = field(init=False)
    spec: np.ndarray = field(init=False)
    gradient_kernel: Callable[..., Any] = field(init=False)
    predict_kernel: Callable[..., Any] = field(init=False)

    def __post_init__(self) -> None:
        model, counts = self.model, self.counts
        where = self.name if isinstance(model, Model) else repr(model)
        if not isinstance(model, Model):
            raise ModelError(f"{where}: a model must be an instance of a subclass of "
                             "mpitrain.models.Model")
        if model.task not in TASKS:
            raise ModelError(f"{where}: task must be one of {', '.join(TASKS)} "
                             f"(got {model.task!r})")
        for hook in ("gradient_kernel", "predict_kernel"):
            kernel = type(model).kernel(hook)
            if not callable(kernel):
                raise ModelError(f"{where}: the class has no {hook} (a numba-jitted "
                                 "function, see mpitrain.models.Model)")
            object.__setattr__(self, hook, kernel)
        shapes = user_call(where, "shapes()", model.shapes, **counts)
        if not isinstance(shapes, dict) or not shapes:
            raise ModelError(f"{where}: shapes() must return a non-empty dict of name -> "
                             f"shape (got {shapes!r})")
        for name, shape in shapes.items():
            ok = (isinstance(name, str) and isinstance(shape, tuple | list)
                  and all(isinstance(d, int | np.integer) and d >= 1 for d in shape))
            if not ok:
                raise ModelError(f"{where}: shapes() entry {name!r}: {shape!r} is not a "
                                 "tuple of positive integers under a string name")
        object.__setattr__(self, "layout", Layout.of(shapes))
        spec = np.ascontiguousarray(user_call(where, "spec()", model.spec, **counts))
        if spec.ndim != 1 or spec.dtype not in (np.dtype(np.int64), np.dtype(np.float64)):
            raise ModelError(f"{where}: spec() must return a 1-D int64 or float64 array "
                             f"(got {spec.dtype} with shape {spec.shape})")
        object.__setattr__(self, "spec", spec)

    # -- descriptions ----------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """The keyword arguments every model method takes."""
        return {"n_features": self.n_features, "n_classes": self.n_classes}

    @property
    def name(self) -> str:
        """Built-in name (``mlp``) or ``module:Class`` (or ``/path/file.py:Class``)."""
        return self.label or builtin_name(self.model) or model_name(self.model)

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def regression(self) -> bool:
        return self.model.task == "regression"

    @property
    def size(self) -> int:
        return self.layout.size

    @property
    def outputs(self) -> int:
        return int(user_call(self.name, "outputs()", self.model.outputs,
                             n_classes=self.n_classes))

    def describe(self) -> dict[str, Any]:
        """The model section of summary.json."""
        out: dict[str, Any] = {"name": self.name, "parameters": self.size}
        if isinstance(self.model, DenseNetwork):
            out["dims"] = list(self.model.dims(**self.counts))
        else:
            out["options"] = self.model.get_params()
            out["tensors"] = {name: list(shape) for name, shape in self.layout.shapes}
        return out

    # -- buffers ---------------------------------------------------------------------------
    def init_params(self, *, seed: int, dtype: np.dtype | str) -> np.ndarray:
        """The flat parameter buffer, initialised from ``seed`` only (same on every rank)."""
        flat = np.zeros(self.size, dtype=dtype)
        user_call(self.name, "init()", self.model.init, self.layout.views(flat),
                  np.random.default_rng([seed, INIT_STREAM]))
        return flat

    def workspace(self, rows: int, dtype: np.dtype) -> np.ndarray:
        """Scratch space for batches of up to ``rows`` rows."""
        size = int(user_call(self.name, "workspace()", self.model.workspace, **self.counts,
                             rows=max(1, rows)))
        return np.empty(max(1, size), dtype=dtype)

    # -- kernels ---------------------------------------------------------------------------
    def hook(self, name: str) -> Callable[..., Any] | None:
        """An optional kernel of the model's class (None when it does not have it)."""
        return type(self.model).kernel(name)

    @property
    def can_split(self) -> bool:
        """Does the model have the per-layer hooks ``--overlap`` needs?"""
        return (self.hook("forward_kernel") is not None
                and self.hook("backward_kernel") is not None
                and bool(self.model.buckets(**self.counts)))

    def gradient(self, params: np.ndarray, grad: np.ndarray, X: np.ndarray, y: np.ndarray,
                 rows: np.ndarray, work: np.ndarray) -> tuple[float, float]:
        """Gradient SUM over ``X[rows]`` into ``grad[:size]``; (loss sum, correct)."""
        if not self.model.overwrites_gradient:
            grad[:self.size] = 0
        loss, correct = self.gradient_kernel(params, grad, X, y, rows, work, self.spec)
        return float(loss), float(correct)


def builtin_name(model: Model) -> str | None:
    """The built-in name of a model object (``mlp``), None for other classes."""
    for name, cls in BUILTIN.items():
        if type(model) is cls:
            return name
    return None
