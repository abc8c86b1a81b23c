"""Run a model's kernels once on a few real rows and check they keep the protocol.

Called at start-up (this is also when numba compiles them) and by
:func:`mpitrain.testing.check_model`. Each problem becomes one :class:`ModelError` line
naming the class and the reason: a kernel numba cannot compile, a kernel that raises,
writes past the gradient it declared, returns something other than two numbers, or a
non-finite loss at the initial parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from .bound import BoundModel, ModelError

HOOK_NAMES = ("step", "split", "gradient", "loss", "predict")
"""What a strategy may ask to warm: the one-call step (``step_kernel``, or the gradient
kernel plus the tail), the ``--overlap`` split, the plain gradient kernel, the forward-only
loss (``loss_kernel``, or the gradient kernel) and the predict kernel."""
GUARD = 8  # sentinel slots after each output buffer: a write there is out of bounds
SENTINEL = 1234.5  # exact in float32; a kernel adding to it changes it
TAIL = 3


def smoke_test(model: BoundModel, params: np.ndarray, X: np.ndarray, y: np.ndarray, *,
               hooks: Collection[str] = HOOK_NAMES, rows: int = 4) -> None:
    """Call the kernels ``hooks`` names on up to ``rows`` rows of ``X``, ``y`` (the exact
    argument types training uses, so they are compiled now) and check the results."""
    n = model.size
    dtype = params.dtype
    order = np.arange(min(rows, len(X)), dtype=np.int64)
    work = model.workspace(max(1, len(order)), dtype)
    name = model.name
    wanted = set(hooks)
    if wanted & {"step", "gradient"} or ("loss" in wanted and not model.hook("loss_kernel")):
        grad = _guarded(n, dtype)
        result = _call(name, "gradient_kernel", model.gradient, params, grad, X, y, order, work)
        loss = _loss_pair(name, "gradient_kernel", result)[0]
        _check_guard(name, "gradient_kernel", grad, n)
        if not np.all(np.isfinite(grad[:n])):
            raise ModelError(f"{name}: gradient_kernel wrote non-finite gradient entries at "
                             "the initial parameters")
        if not math.isfinite(loss):
            raise ModelError(f"{name}: gradient_kernel returned a non-finite loss ({loss}) on "
                             "the first rows at the initial parameters")
    step = model.hook("step_kernel")
    if "step" in wanted and step is not None:
        message = _guarded(n + TAIL, dtype)
        _call(name, "step_kernel", step, params, message, X, y, order, work, model.spec)
        _check_guard(name, "step_kernel", message, n + TAIL)
    if "step" in wanted and model.hook("touched_kernel") is not None:
        _smoke_rows_step(model, params, X, y, order, work)
    if "split" in wanted and model.can_split:
        message = _guarded(n + TAIL, dtype)
        _call(name, "forward_kernel", model.hook("forward_kernel"), params, message, X, y,
              order, work, model.spec)
        backward = model.hook("backward_kernel")
        for layer in range(len(model.model.buckets(**model.counts)) - 1, -1, -1):
            _call(name, "backward_kernel", backward, params, message, order.size, layer, work,
                  model.spec)
        _check_guard(name, "forward_kernel/backward_kernel", message, n + TAIL)
    loss_kernel = model.hook("loss_kernel")
    if "loss" in wanted and loss_kernel is not None:
        result = _call(name, "loss_kernel", loss_kernel, params, X, y, order, work, model.spec)
        _loss_pair(name, "loss_kernel", result)
    if "predict" in wanted:
        out = np.full((len(order) + 1, model.outputs), SENTINEL, dtype=dtype)
        _call(name, "predict_kernel", model.predict_kernel, params, X, order,
              out[:len(order)], work, model.spec)
        if not np.all(out[-1] == dtype.type(SENTINEL)):
            raise ModelError(f"{name}: predict_kernel wrote past the end of out (it must "
                             f"write len(rows) rows of {model.outputs} values)")


def _smoke_rows_step(model: BoundModel, params: np.ndarray, X: np.ndarray, y: np.ndarray,
                     order: np.ndarray, work: np.ndarray) -> None:
    """Call the ``touched_kernel`` and ``rows_step_kernel`` (when the model has them) the
    way :meth:`~mpitrain.models.gradient.BatchGradient.step_rows` does."""
    name, n = model.name, model.size
    features = int(model.counts["n_features"])
    mark, touched = np.zeros(features, np.uint8), np.zeros(features, np.int64)
    _call(name, "touched_kernel", model.hook("touched_kernel"), X, order, mark, touched)
    rows_step = model.hook("rows_step_kernel")
    if rows_step is not None:
        message = _guarded(n + TAIL, params.dtype)
        _call(name, "rows_step_kernel", rows_step, params, message, X, y, order, work,
              model.spec, mark, touched, -1)
        _check_guard(name, "rows_step_kernel", message, n + TAIL)


def _guarded(size: int, dtype: np.dtype) -> np.ndarray:
    buf = np.full(size + GUARD, SENTINEL, dtype=dtype)
    buf[:size] = 0
    return buf[:size + GUARD]


def _check_guard(name: str, hook: str, buf: np.ndarray, size: int) -> None:
    if not np.all(buf[size:] == buf.dtype.type(SENTINEL)):
        raise ModelError(f"{name}: {hook} wrote past the end of its gradient: the layout "
                         f"from shapes() and the message tail have {size} entries, and the "
                         "kernel must write only those")


def _call(name: str, hook: str, kernel: Callable[..., Any] | None, *args: Any) -> Any:
    if kernel is None:
        raise ModelError(f"{name}: the class has no {hook}")
    try:
        return kernel(*args)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{name}: {hook} {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    """One line: why a kernel call failed (numba's compile errors are many lines long)."""
    try:
        from numba.core.errors import NumbaError
    except ImportError:  # pragma: no cover - numba is a dependency
        NumbaError = ()
    if isinstance(exc, NumbaError):
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        useful = [line for line in lines if not line.startswith(("During:", "File", "^"))]
        text = useful[0] if useful else type(exc).__name__
        if len(useful) > 1 and useful[0].endswith(":"):
            text += " " + useful[1]
        return f"does not compile: {text}"
    return f"raised {type(exc).__name__}: {exc}"


def _loss_pair(name: str, hook: str, result: Any) -> tuple[float, float]:
    try:
        loss, correct = result
        return float(loss), float(correct)
    except (TypeError, ValueError):
        raise ModelError(f"{name}: {hook} must return (loss_sum, correct) as two numbers "
                         f"(got {result!r})") from None
