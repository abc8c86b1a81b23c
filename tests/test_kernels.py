"""Serial tests of the numba kernels against numpy references and finite differences."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit, logsumexp

from mpitrain.kernels.network import (
    BINARY_XENT,
    LOSS_KINDS,
    SOFTMAX_XENT,
    SQUARED,
    as_dims,
    n_params,
    network_grad,
    network_loss,
    network_predict,
    workspace_size,
)
from mpitrain.kernels.optimizers import (
    adam_update,
    momentum_update,
    proximal_sgd_update,
    sgd_update,
)
from mpitrain.kernels.reference import (
    reference_adam,
    reference_grad,
    reference_loss,
    reference_momentum,
    reference_predict,
    reference_proximal_sgd,
    reference_sgd,
    unpack,
)
from mpitrain.kernels.warmup import warm_up

pytestmark = pytest.mark.timeout(120)

DTYPES = [np.float32, np.float64]
HIDDEN = {"0hidden": [], "1hidden": [5], "2hidden": [6, 4]}
N_FEATURES = 4
N_CLASSES = 3
N_ROWS = 17
TAIL = 3
SENTINEL = -12345.0
ROOT = Path(__file__).resolve().parents[1]


def _tol(dtype) -> dict:
    return {"rtol": 1e-10, "atol": 1e-10} if dtype == np.float64 else {"rtol": 2e-4, "atol": 2e-4}


def _problem(kind: int, hidden: list[int], dtype, seed: int = 0, n: int = N_ROWS):
    """Random network, data and labels of the right kinds for ``kind``."""
    rng = np.random.default_rng(seed)
    k = N_CLASSES if kind == SOFTMAX_XENT else 1
    dims = as_dims([N_FEATURES, *hidden, k])
    params = (0.7 * rng.standard_normal(n_params(dims))).astype(dtype)
    X = rng.standard_normal((n, N_FEATURES)).astype(dtype)
    if kind == SQUARED:
        y = rng.standard_normal(n).astype(dtype)
    else:
        y = rng.integers(0, k if kind == SOFTMAX_XENT else 2, n).astype(np.int64)
    return dims, params, X, y


def _grad(params, dims, kind, X, y, rows, max_rows=None):
    """Run network_grad with a tail-padded gradient buffer; return (grad, tail, loss, correct)."""
    P = n_params(dims)
    grad = np.full(P + TAIL, SENTINEL, dtype=params.dtype)
    work = np.empty(workspace_size(dims, max_rows or len(rows)), dtype=params.dtype)
    loss, correct = network_grad(params, grad, dims, kind, X, y, rows, work)
    return grad[:P], grad[P:], loss, correct


def _direct_loss(params, dims, kind, X, y):
    """Per-row losses and correct flags in float64, straight from the definitions."""
    A = X.astype(np.float64)
    layers = unpack(params.astype(np.float64), dims)
    for l, (W, b) in enumerate(layers):
        A = A @ W + b
        if l < len(layers) - 1:
            A = np.where(A > 0, A, 0.0)
    if kind == SQUARED:
        return (A[:, 0] - y) ** 2, np.zeros(len(y))
    if kind == BINARY_XENT:
        p = expit(A[:, 0])
        return -(y * np.log(p) + (1 - y) * np.log1p(-p)), ((A[:, 0] > 0) == (y == 1))
    return logsumexp(A, axis=1) - A[np.arange(len(y)), y], A.argmax(axis=1) == y


CASES = [
    pytest.param(kind, hidden, id=f"kind{kind}-{name}")
    for kind in LOSS_KINDS
    for name, hidden in HIDDEN.items()
]


# ----------------------------------------------------------------------------------------
# Layout helpers.


def test_sizes_follow_the_flat_layout():
    assert n_params([4, 5, 3]) == 4 * 5 + 5 + 5 * 3 + 3
    assert n_params(np.array([7, 1])) == 8
    # gathered input + all activations + the label + widest hidden layer, per row
    assert workspace_size([4, 5, 3], 10) == 10 * (4 + 5 + 3 + 1 + 5)
    assert workspace_size([4, 6, 9, 3], 2) == 2 * (4 + 6 + 9 + 3 + 1 + 9)
    assert workspace_size([4, 1], 8) == 8 * (5 + 1)
    with pytest.raises(ValueError):
        as_dims([4])
    with pytest.raises(ValueError):
        as_dims([4, 0, 2])


def test_unpack_views_follow_the_documented_order():
    dims = as_dims([2, 3, 1])
    flat = np.arange(n_params(dims), dtype=np.float64)
    (W0, b0), (W1, b1) = unpack(flat, dims)
    np.testing.assert_array_equal(W0, [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(b0, [6, 7, 8])
    np.testing.assert_array_equal(W1[:, 0], [9, 10, 11])
    np.testing.assert_array_equal(b1, [12])


# ----------------------------------------------------------------------------------------
# network_grad.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kind", "hidden"), CASES)
def test_grad_matches_reference(kind, hidden, dtype):
    dims, params, X, y = _problem(kind, hidden, dtype)
    rows = np.array([5, 0, 16, 5, 3, 3, 3, 11, 2], dtype=np.int64)  # any order, repeats
    grad, tail, loss, correct = _grad(params, dims, kind, X, y, rows)
    ref_grad, ref_loss, ref_correct = reference_grad(params, dims, kind, X, y, rows)
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, ref_grad, **_tol(dtype))
    assert loss == pytest.approx(ref_loss, rel=_tol(dtype)["rtol"])
    assert correct == ref_correct
    np.testing.assert_array_equal(tail, SENTINEL)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kind", "hidden"), CASES)
def test_loss_and_correct_follow_the_definitions(kind, hidden, dtype):
    dims, params, X, y = _problem(kind, hidden, dtype, seed=1)
    rows = np.arange(N_ROWS, dtype=np.int64)[::-1].copy()
    _, _, loss, correct = _grad(params, dims, kind, X, y, rows)
    losses, hits = _direct_loss(params, dims, kind, X, y)
    assert loss == pytest.approx(losses.sum(), rel=1e-12 if dtype == np.float64 else 1e-5)
    assert correct == hits.sum()
    if kind != SQUARED:
        assert 0 < correct < N_ROWS  # random labels: a real count, not a constant


@pytest.mark.parametrize(("kind", "hidden"), CASES)
def test_grad_matches_central_differences(kind, hidden):
    dims, params, X, y = _problem(kind, hidden, np.float64, seed=2)
    rows = np.array([1, 4, 4, 9, 12, 0], dtype=np.int64)
    grad, _, _, _ = _grad(params, dims, kind, X, y, rows)
    rng = np.random.default_rng(3)
    h = 1e-6
    for i in rng.choice(params.size, size=min(8, params.size), replace=False):
        plus, minus = params.copy(), params.copy()
        plus[i] += h
        minus[i] -= h
        numeric = (
            reference_loss(plus, dims, kind, X[rows], y[rows])[0]
            - reference_loss(minus, dims, kind, X[rows], y[rows])[0]
        ) / (2 * h)
        assert grad[i] == pytest.approx(numeric, rel=1e-5, abs=1e-6), f"parameter {i}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_empty_rows_zero_the_gradient_only(kind, dtype):
    dims, params, X, y = _problem(kind, [5], dtype)
    grad, tail, loss, correct = _grad(params, dims, kind, X, y, np.empty(0, np.int64), 4)
    np.testing.assert_array_equal(grad, 0)
    np.testing.assert_array_equal(tail, SENTINEL)
    assert (loss, correct) == (0.0, 0.0)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_grad_is_a_sum_over_rows(kind):
    dims, params, X, y = _problem(kind, [6, 4], np.float64, seed=4)
    rows = np.array([7, 2, 7, 13], dtype=np.int64)
    total, _, loss, correct = _grad(params, dims, kind, X, y, rows)
    parts = [_grad(params, dims, kind, X, y, np.array([r], np.int64)) for r in (2, 7, 13)]
    np.testing.assert_allclose(total, parts[0][0] + 2 * parts[1][0] + parts[2][0], rtol=1e-12)
    assert loss == pytest.approx(parts[0][2] + 2 * parts[1][2] + parts[2][2], rel=1e-12)
    assert correct == parts[0][3] + 2 * parts[1][3] + parts[2][3]
    shuffled, _, loss2, _ = _grad(params, dims, kind, X, y, rows[::-1].copy())
    np.testing.assert_allclose(shuffled, total, rtol=1e-12, atol=1e-14)
    assert loss2 == pytest.approx(loss, rel=1e-12)


def test_workspace_is_reused_across_batch_sizes():
    dims, params, X, y = _problem(SOFTMAX_XENT, [6, 4], np.float64, seed=5)
    P = n_params(dims)
    work = np.full(workspace_size(dims, N_ROWS), np.nan)
    grad = np.empty(P + TAIL)
    for rows in ([3, 1, 4, 1, 5, 9, 2, 6], [8], list(range(N_ROWS)), [0, 16]):
        rows = np.array(rows, dtype=np.int64)
        network_grad(params, grad, dims, SOFTMAX_XENT, X, y, rows, work)
        np.testing.assert_allclose(grad[:P], reference_grad(params, dims, SOFTMAX_XENT, X, y,
                                                            rows)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_is_stable_for_huge_logits(dtype):
    dims = as_dims([1, 3])
    params = np.array([1.0, 0.0, -1.0, 0.0, 0.0, 0.0], dtype=dtype)  # logits (x, 0, -x)
    X = np.array([[1000.0], [-1000.0], [30.0]], dtype=dtype)
    y = np.array([0, 0, 1], dtype=np.int64)
    grad, _, loss, correct = _grad(params, dims, SOFTMAX_XENT, X, y, np.array([0, 1, 2]))
    # row 0: ~0; row 1: logsumexp - z0 = 1000 + 1000; row 2: log(1 + e^-30 + e^-60) + 30
    assert loss == pytest.approx(2030.0, rel=1e-6)
    assert correct == 1.0
    # deltas (0, 0, 0), (-1, 0, 1), (~1, -1, ~0): dW = 1000*row1 ... + 30*row2, db = sum
    np.testing.assert_allclose(grad, [1000.0 + 30.0, -30.0, -1000.0, 0.0, -1.0, 1.0],
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_pick_the_first_class(dtype):
    X = np.ones((3, 1), dtype=dtype)
    softmax = np.array([0, 0, 0, 1, 1, 0], dtype=dtype)  # logits (1, 1, 0) for every row
    binary = np.zeros(2, dtype=dtype)  # logit 0: predicted class 0
    for kind, params, k, labels in ((SOFTMAX_XENT, softmax, 3, [0, 0, 1]),
                                    (BINARY_XENT, binary, 1, [0, 0, 1])):
        dims = as_dims([1, k])
        labels = np.array(labels, dtype=np.int64)
        _, _, _, correct = _grad(params, dims, kind, X, labels, np.array([0, 1, 2]))
        assert correct == 2.0  # the rows labelled 0
        out = np.full(3, np.nan, dtype=dtype)
        network_predict(params, dims, kind, X, out, np.empty(workspace_size(dims, 3), dtype), 3)
        np.testing.assert_array_equal(out, 0.0 if kind == SOFTMAX_XENT else 0.5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_exponentials_are_accurate_over_the_whole_range(dtype):
    """The head's own vectorised exp, checked through the loss and the deltas."""
    rng = np.random.default_rng(10)
    k = 50
    span = 80.0 if dtype == np.float32 else 700.0
    dims = as_dims([k, k])
    params = np.concatenate([np.eye(k).ravel(), np.zeros(k)]).astype(dtype)  # logits = X
    X = (-span * rng.random((40, k)) ** 3).astype(dtype)
    y = rng.integers(0, k, 40)
    grad, _, loss, _ = _grad(params, dims, SOFTMAX_XENT, X, y, np.arange(40, dtype=np.int64))
    Z = X.astype(np.float64)
    expected = logsumexp(Z, axis=1) - Z[np.arange(40), y]
    rtol = 1e-13 if dtype == np.float64 else 1e-6
    assert loss == pytest.approx(expected.sum(), rel=rtol)
    probs = np.exp(Z - logsumexp(Z, axis=1, keepdims=True))
    probs[np.arange(40), y] -= 1
    np.testing.assert_allclose(grad[k * k:], probs.sum(axis=0), rtol=rtol * 10, atol=rtol)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_nan_parameters_give_a_nan_loss(kind):
    dims, params, X, y = _problem(kind, [5], np.float32)
    params[0] = np.nan
    _, _, loss, _ = _grad(params, dims, kind, X, y, np.arange(4, dtype=np.int64))
    assert np.isnan(loss)
    work = np.empty(workspace_size(dims, 4), np.float32)
    assert np.isnan(network_loss(params, dims, kind, X, y, work, 4)[0])


def test_softmax_nan_in_one_logit_propagates():
    dims = as_dims([1, 3])
    params = np.array([0.0, np.nan, 0.0, 0.0, 0.0, 0.0])  # logits (0, nan, 0): max skips nan
    _, _, loss, _ = _grad(params, dims, SOFTMAX_XENT, np.ones((1, 1)), np.array([0]),
                          np.array([0]))
    assert np.isnan(loss)


def test_binary_is_stable_for_huge_logits():
    dims = as_dims([1, 1])
    params = np.array([1.0, 0.0])
    X = np.array([[800.0], [-800.0], [800.0]])
    y = np.array([1, 1, 0], dtype=np.int64)
    grad, _, loss, correct = _grad(params, dims, BINARY_XENT, X, y, np.array([0, 1, 2]))
    assert loss == pytest.approx(1600.0)
    assert correct == 1.0
    # deltas sigmoid(z) - y = (0, -1, 1): dW = 0*800 + (-1)(-800) + 1*800, db = 0 - 1 + 1
    np.testing.assert_allclose(grad, [1600.0, 0.0], atol=1e-12)


@pytest.mark.parametrize(
    ("bad", "error"),
    [("row", IndexError), ("negative_row", IndexError), ("label", ValueError),
     ("short_y", ValueError), ("work", ValueError), ("params", ValueError),
     ("kind", ValueError), ("dims", ValueError), ("grad", ValueError)],
)
def test_bad_arguments_raise(bad, error):
    dims, params, X, y = _problem(SOFTMAX_XENT, [5], np.float64)
    rows = np.array([0, 1, 2], dtype=np.int64)
    kind = SOFTMAX_XENT
    work = np.empty(workspace_size(dims, 3))
    grad = np.empty(n_params(dims))
    if bad == "row":
        rows[1] = N_ROWS
    elif bad == "negative_row":
        rows[1] = -1
    elif bad == "label":
        y = y.copy()
        y[2] = N_CLASSES
    elif bad == "short_y":
        y = y[:-1]
    elif bad == "grad":
        grad = grad[:-1]
    elif bad == "work":
        work = work[:-1]
    elif bad == "params":
        params = params[:-1]
    elif bad == "kind":
        kind = 7
    elif bad == "dims":
        kind = SQUARED  # needs one output, the network has N_CLASSES
    with pytest.raises(error):
        network_grad(params, grad, dims, kind, X, y, rows, work)


# ----------------------------------------------------------------------------------------
# network_loss / network_predict.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kind", "hidden"), CASES)
def test_chunked_loss_equals_one_shot(kind, hidden, dtype):
    dims, params, X, y = _problem(kind, hidden, dtype, seed=6)
    one_shot = network_loss(params, dims, kind, X, y,
                            np.empty(workspace_size(dims, N_ROWS), dtype), N_ROWS)
    chunked = network_loss(params, dims, kind, X, y, np.empty(workspace_size(dims, 5), dtype), 5)
    ref_loss, ref_correct = reference_loss(params, dims, kind, X, y)
    rtol = _tol(dtype)["rtol"]
    assert chunked[0] == pytest.approx(one_shot[0], rel=rtol)
    assert chunked[0] == pytest.approx(ref_loss, rel=rtol)
    assert chunked[1] == one_shot[1] == ref_correct
    via_grad = _grad(params, dims, kind, X, y, np.arange(N_ROWS, dtype=np.int64))
    assert via_grad[2] == pytest.approx(one_shot[0], rel=rtol)


def test_loss_of_no_rows_is_zero():
    dims, params, X, y = _problem(SOFTMAX_XENT, [5], np.float64)
    work = np.empty(workspace_size(dims, 4))
    assert network_loss(params, dims, SOFTMAX_XENT, X[:0], y[:0], work, 4) == (0.0, 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kind", "hidden"), CASES)
def test_predict_matches_reference(kind, hidden, dtype):
    dims, params, X, y = _problem(kind, hidden, dtype, seed=11)
    out = np.full(N_ROWS, np.nan, dtype=dtype)
    network_predict(params, dims, kind, X, out, np.empty(workspace_size(dims, 4), dtype), 4)
    expected = reference_predict(params, dims, kind, X)
    np.testing.assert_allclose(out, expected, rtol=_tol(dtype)["rtol"], atol=1e-6)
    if kind == SOFTMAX_XENT:
        assert len(np.unique(out)) > 1
        correct = network_loss(params, dims, kind, X, y,
                               np.empty(workspace_size(dims, 4), dtype), 4)[1]
        assert correct == np.sum(out == y)


# ----------------------------------------------------------------------------------------
# Optimizers: a few steps against the numpy references, grad buffer with a tail.


def _opt_state(dtype, seed=8, n=11):
    rng = np.random.default_rng(seed)
    params = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n + TAIL).astype(dtype) for _ in range(4)]
    for g in grads:
        g[n:] = np.nan  # tail slots must never reach the parameters
    return params, grads


def _assert_same_trajectory(step_numba, step_numpy, dtype, n_state):
    params, grads = _opt_state(dtype)
    ref = params.copy()
    state = [np.zeros_like(params) for _ in range(n_state)]
    ref_state = [s.copy() for s in state]
    for t, g in enumerate(grads, start=1):
        step_numba(params, g, state, t)
        step_numpy(ref, g, ref_state, t)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-6}
    assert np.all(np.isfinite(params))
    np.testing.assert_allclose(params, ref, **tol)
    for s, r in zip(state, ref_state, strict=True):
        np.testing.assert_allclose(s, r, **tol)
    assert not np.allclose(params, _opt_state(dtype)[0])  # the steps did move the params


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_matches_numpy(dtype):
    _assert_same_trajectory(
        lambda p, g, s, t: sgd_update(p, g, 0.5, 0.1, 0.01),
        lambda p, g, s, t: reference_sgd(p, g, 0.5, 0.1, 0.01),
        dtype, 0)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_momentum_matches_numpy(dtype, nesterov):
    _assert_same_trajectory(
        lambda p, g, s, t: momentum_update(p, g, s[0], 0.5, 0.1, 0.9, 0.01, nesterov),
        lambda p, g, s, t: reference_momentum(p, g, s[0], 0.5, 0.1, 0.9, 0.01, nesterov),
        dtype, 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_matches_numpy(dtype):
    _assert_same_trajectory(
        lambda p, g, s, t: adam_update(p, g, s[0], s[1], 0.5, 0.01, 0.9, 0.99, 1e-8, 0.01, t),
        lambda p, g, s, t: reference_adam(p, g, s[0], s[1], 0.5, 0.01, 0.9, 0.99, 1e-8, 0.01, t),
        dtype, 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_proximal_sgd_matches_numpy(dtype):
    anchor = np.linspace(-1, 1, 11).astype(dtype)
    _assert_same_trajectory(
        lambda p, g, s, t: proximal_sgd_update(p, g, anchor, 0.5, 0.1, 0.01, 0.3),
        lambda p, g, s, t: reference_proximal_sgd(p, g, anchor, 0.5, 0.1, 0.01, 0.3),
        dtype, 0)


def test_first_steps_by_hand():
    """Closed forms: bias-corrected Adam's first step is ~lr*sign(g); momentum's v = g."""
    grad = np.array([2.0, -0.5, 0.0, 4.0, 99.0])  # last slot is a tail slot
    p = np.ones(4)
    m, v = np.zeros(4), np.zeros(4)
    adam_update(p, grad, m, v, 0.5, 0.1, 0.9, 0.999, 1e-8, 0.0, 1)
    g = grad[:4] * 0.5
    np.testing.assert_allclose(p, 1 - 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-12)
    np.testing.assert_allclose(v, 0.001 * g * g, rtol=1e-12)

    p, vel = np.ones(4), np.zeros(4)
    momentum_update(p, grad, vel, 1.0, 0.1, 0.9, 0.5, True)
    g = grad[:4] + 0.5 * 1.0
    np.testing.assert_allclose(vel, g)
    np.testing.assert_allclose(p, 1 - 0.1 * (g + 0.9 * g))
    momentum_update(p, grad, vel, 1.0, 0.1, 0.9, 0.0, False)
    np.testing.assert_allclose(vel, 0.9 * g + grad[:4])

    p = np.array([1.0, 2.0, 3.0, 4.0])
    proximal_sgd_update(p, np.zeros(4), np.zeros(4), 1.0, 0.1, 0.0, 2.0)
    np.testing.assert_allclose(p, [0.8, 1.6, 2.4, 3.2])


def test_adam_rejects_step_zero():
    p = np.ones(2)
    with pytest.raises(ValueError):
        adam_update(p, p.copy(), np.zeros(2), np.zeros(2), 1.0, 0.1, 0.9, 0.999, 1e-8, 0.0, 0)


# ----------------------------------------------------------------------------------------
# warm_up: compiles every signature that training uses.


_TRAINING_LIKE_CALLS = """
import numpy as np
from mpitrain.kernels import network as nw, optimizers as op
from mpitrain.kernels.warmup import warm_up

dtype, label_dtype, kind = np.dtype("{dtype}"), np.dtype("{label_dtype}"), {kind}
warm_up(dtype=dtype, label_dtype=label_dtype, loss_kind=kind)
for kernel in (nw.network_grad, nw.network_loss, nw.network_predict, op.sgd_update,
               op.momentum_update, op.adam_update, op.proximal_sgd_update):
    kernel.disable_compile()  # a call with an uncovered signature now raises TypeError

kind = nw.SOFTMAX_XENT if kind is None else kind
dims = nw.as_dims([5, 7, 4, 3 if kind == nw.SOFTMAX_XENT else 1])
rng = np.random.default_rng(0)
params = rng.standard_normal(nw.n_params(dims)).astype(dtype)
X = rng.standard_normal((40, 5)).astype(dtype)
y = rng.integers(0, 2, 40).astype(label_dtype)
rows = rng.permutation(40)[8:24]  # a slice of an epoch permutation
grad = np.zeros(nw.n_params(dims) + 3, dtype=dtype)
work = np.empty(nw.workspace_size(dims, 16), dtype=dtype)
state = [np.zeros_like(params) for _ in range(3)]
loss_sum, correct = nw.network_grad(params, grad, dims, kind, X, y, rows, work)
scale, lr = 1.0 / 16, 0.05
op.sgd_update(params, grad, scale, lr, 0.0)
op.momentum_update(params, grad, state[0], scale, lr, 0.9, 1e-4, True)
op.adam_update(params, grad, state[1], state[2], scale, lr, 0.9, 0.999, 1e-8, 0.0, 3)
op.proximal_sgd_update(params, grad, state[0], scale, lr, 0.0, 0.01)
nw.network_loss(params, dims, kind, X, y, work, 16)
nw.network_predict(params, dims, kind, X, np.empty(40, dtype), work, 16)
print("ok")
"""


@pytest.mark.parametrize(
    ("dtype", "label_dtype", "kind"),
    [("float32", "int64", SOFTMAX_XENT), ("float64", "int64", None),
     ("float32", "float32", SQUARED), ("float64", "float64", SQUARED)],
)
def test_warm_up_covers_training_calls(dtype, label_dtype, kind):
    """In a fresh interpreter (nothing compiled yet), warm_up then forbid compilation."""
    code = _TRAINING_LIKE_CALLS.format(dtype=dtype, label_dtype=label_dtype, kind=kind)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=110, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_warm_up_rejects_bad_dtypes():
    with pytest.raises(ValueError):
        warm_up(dtype=np.int64, label_dtype=np.int64)
    with pytest.raises(ValueError):
        warm_up(dtype=np.float32, label_dtype=np.float64)
