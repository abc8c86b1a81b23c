"""Test your own model the way mpitrain tests its own (see :class:`mpitrain.models.Model`).

``check_gradient(model, X, y)`` compares the gradient kernel with central finite
differences of the loss it returns; ``check_model(model)`` checks the layout, both float
dtypes, determinism, the "sum over rows" contract, the optional kernels against the
required ones, and that no kernel allocates. Both raise ``AssertionError`` with a one-line
reason, so they drop into pytest. No MPI needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from .models import BoundModel, Model, ModelError
from .models.checks import smoke_test


def check_gradient(model: Model, X: np.ndarray, y: np.ndarray, *,
                   n_classes: int | None = None, params: np.ndarray | None = None,
                   seed: int = 0, eps: float = 1e-6, rtol: float = 1e-5,
                   atol: float = 1e-8, max_params: int = 300) -> float:
    """Central finite differences of the summed loss against ``gradient_kernel`` (float64),
    on up to ``max_params`` coordinates (all when fewer; a seeded sample otherwise).
    ``X`` may also be CSR rows (:class:`mpitrain.data.Csr`) for a sparse model.

    Returns the largest error relative to ``atol + rtol * |gradient|``'s scale (<= 1
    passes); raises AssertionError naming the worst coordinate when it does not match.
    """
    bound, X, y = _bind(model, X, y, n_classes)
    theta = (bound.init_params(seed=seed, dtype=np.float64) if params is None
             else np.array(params, dtype=np.float64))
    rows = np.arange(len(X), dtype=np.int64)
    work = bound.workspace(len(X), np.dtype(np.float64))
    grad = np.zeros(bound.size)

    def loss_at(point: np.ndarray) -> float:
        scratch = np.zeros(bound.size)
        return bound.gradient(point, scratch, X, y, rows, work)[0]

    bound.gradient(theta, grad, X, y, rows, work)
    rng = np.random.default_rng(seed)
    coords = (np.arange(bound.size) if bound.size <= max_params
              else np.sort(rng.choice(bound.size, max_params, replace=False)))
    names = _coordinate_names(bound)
    worst, worst_at, worst_fd = 0.0, 0, 0.0
    for i in coords:
        step = eps * max(1.0, abs(theta[i]))
        theta[i] += step
        up = loss_at(theta)
        theta[i] -= 2 * step
        down = loss_at(theta)
        theta[i] += step
        fd = (up - down) / (2 * step)
        error = abs(fd - grad[i]) / (atol + rtol * max(abs(fd), abs(grad[i])))
        if error > worst:
            worst, worst_at, worst_fd = error, int(i), fd
    if worst > 1.0:
        raise AssertionError(f"{bound.name}: the gradient of {names[worst_at]} is "
                             f"{grad[worst_at]!r} but finite differences give {worst_fd!r}")
    return worst


def check_model(model: Model, *, n_features: int = 5, n_classes: int = 3, rows: int = 8,
                seed: int = 0) -> None:
    """Check that ``model`` keeps the protocol, on random data of this size: layout and
    initialisation (seeded, finite), every kernel for float32 and float64 (compiles, writes
    only its own outputs, returns two numbers), determinism, the gradient being a SUM over
    rows (rows repeated twice give twice the gradient; no rows give zero), the loss kernel
    against the gradient kernel's loss, and no allocation inside any kernel."""
    rng = np.random.default_rng(seed)
    for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
        X = np.ascontiguousarray(rng.normal(size=(rows, n_features)), dtype=dtype)
        y = (rng.integers(0, n_classes, rows) if model.task == "classification"
             else rng.normal(size=rows)).astype(np.int64 if model.task == "classification"
                                                else dtype)
        bound, X, y = _bind(model, X, y, n_classes)
        first = bound.init_params(seed=seed, dtype=dtype)
        _require(np.array_equal(first, bound.init_params(seed=seed, dtype=dtype)),
                 f"{bound.name}: init() gives different parameters for the same seed")
        _require(bool(np.all(np.isfinite(first))), f"{bound.name}: init() left non-finite "
                 "or unset parameters")
        try:
            smoke_test(bound, first, X, y, rows=rows)
        except ModelError as exc:
            raise AssertionError(str(exc)) from None
        _check_sums(bound, first, X, y)
        _check_no_allocation(bound, first, X, y)


def _bind(model: Model, X: np.ndarray, y: np.ndarray,
          n_classes: int | None) -> tuple[BoundModel, np.ndarray, np.ndarray]:
    if not hasattr(X, "arrays"):  # (CSR rows, mpitrain.data.Csr, are taken as they are)
        X = np.ascontiguousarray(X, dtype=np.float64 if np.asarray(X).dtype.kind != "f"
                                 else np.asarray(X).dtype)
    if model.task == "classification":
        y = np.ascontiguousarray(y, dtype=np.int64)
        k = int(y.max()) + 1 if n_classes is None and len(y) else int(n_classes or 2)
    else:
        y = np.ascontiguousarray(y, dtype=X.dtype)
        k = 1 if n_classes is None else n_classes
    try:
        problem = model.check_data(n_features=X.shape[1], n_classes=max(2, k))
        _require(problem is None, f"{type(model).__name__}: {problem}")
        return BoundModel(model, X.shape[1], max(2, k)), X, y
    except ModelError as exc:
        raise AssertionError(str(exc)) from None


def _check_sums(bound: BoundModel, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> None:
    """Deterministic, a sum over rows, and the loss kernel consistent with the gradient's."""
    dtype = params.dtype
    n = bound.size
    rows = np.arange(len(X), dtype=np.int64)
    work = bound.workspace(2 * len(X), dtype)
    once, again, twice = (np.zeros(n, dtype=dtype) for _ in range(3))
    loss1, right1 = bound.gradient(params, once, X, y, rows, work)
    bound.gradient(params, again, X, y, rows, work)
    _require(np.array_equal(once, again), f"{bound.name}: gradient_kernel gives different "
             "results for the same input (it must be deterministic)")
    loss2, right2 = bound.gradient(params, twice, X, y, np.concatenate([rows, rows]), work)
    tol = 1e-4 if dtype == np.float32 else 1e-9
    scale = max(1.0, float(np.abs(once).max(initial=0.0)))
    _require(np.allclose(twice, 2 * once, rtol=tol, atol=tol * scale)
             and np.isclose(loss2, 2 * loss1, rtol=tol) and right2 == 2 * right1,
             f"{bound.name}: gradient_kernel must return the SUM over rows (every row listed "
             "twice should double the gradient, the loss and the correct count)")
    empty = np.full(n, 7.0, dtype=dtype)
    loss0, _ = bound.gradient(params, empty, X, y, rows[:0], work)
    _require(loss0 == 0.0 and not np.any(empty), f"{bound.name}: gradient_kernel with no "
             "rows must give a zero gradient and zero loss")
    loss_kernel = bound.hook("loss_kernel")
    if loss_kernel is not None:
        loss, right = loss_kernel(params, X, y, rows, work, bound.spec)
        _require(np.isclose(loss, loss1, rtol=tol) and right == right1,
                 f"{bound.name}: loss_kernel gives ({loss}, {right}) but gradient_kernel "
                 f"gives ({loss1}, {right1}) for the same rows")


def _check_no_allocation(bound: BoundModel, params: np.ndarray, X: np.ndarray,
                         y: np.ndarray) -> None:
    """Count the numba runtime's allocations during one call of each kernel, against a
    do-nothing compiled function taking the same arguments (boxing arrays costs one each)."""
    try:
        from numba.core.runtime import _nrt_python, rtsys
        _nrt_python.memsys_enable_stats()
    except (ImportError, AttributeError):  # pragma: no cover - numba internals moved
        return
    n, dtype = bound.size, params.dtype
    rows = np.arange(len(X), dtype=np.int64)
    work = bound.workspace(len(X), dtype)
    message = np.zeros(n + 3, dtype=dtype)
    out = np.zeros((len(X), bound.outputs), dtype=dtype)
    calls = {
        "gradient_kernel": (params, message, X, y, rows, work, bound.spec),
        "predict_kernel": (params, X, rows, out, work, bound.spec),
        "loss_kernel": (params, X, y, rows, work, bound.spec),
        "step_kernel": (params, message, X, y, rows, work, bound.spec),
        "forward_kernel": (params, message, X, y, rows, work, bound.spec),
    }
    for hook, args in calls.items():
        kernel = bound.hook(hook)
        if kernel is None:
            continue
        _nothing(*args)
        before = rtsys.get_allocation_stats().alloc
        _nothing(*args)
        boxing = rtsys.get_allocation_stats().alloc - before
        before = rtsys.get_allocation_stats().alloc
        kernel(*args)
        extra = rtsys.get_allocation_stats().alloc - before - boxing
        _require(extra <= 0, f"{bound.name}: {hook} allocates memory ({extra} allocations per "
                 "call: np.empty, np.dot without out=, array arithmetic, ...); use the "
                 "workspace instead")


@njit
def _nothing(*args: Any) -> int:  # pragma: no cover - compiled
    return 0


def _coordinate_names(bound: BoundModel) -> list[str]:
    names: list[str] = []
    for name, shape, _ in bound.layout.tensors:
        names.extend(f"{name}{list(index)}" for index in np.ndindex(*shape))
    return names


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)
