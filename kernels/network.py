"""One generic dense network (fused forward + backward) that covers every model.

A network is a stack of dense layers ``dims = [d, h1, ..., hm, k]`` (int64 array) with ReLU
on the hidden layers and one of three heads on the output:

- ``SQUARED`` (linear regression, ``k == 1``): per-row loss ``(f - y)^2``;
- ``BINARY_XENT`` (logistic, ``k == 1``): sigmoid cross-entropy, labels 0/1;
- ``SOFTMAX_XENT`` (softmax / mlp, ``k >= 1``): softmax cross-entropy, labels ``0..k-1``.

Parameters live in one flat buffer, layer by layer: ``W_l`` of shape ``(dims[l], dims[l+1])``
row-major, then ``b_l`` of shape ``(dims[l+1],)``. The gradient buffer has the same layout,
possibly followed by tail slots that belong to the caller.

The kernels never allocate: the caller preallocates a workspace of
:func:`workspace_size` elements (same dtype as the parameters) and reuses it every step.
Its layout for a batch of ``n`` rows is ``[A_0 | A_1 | ... | A_L | labels | scratch]``
where ``A_0`` is the gathered input ``(n, dims[0])``, ``A_l`` the output of layer ``l - 1``
``(n, dims[l])``, ``labels`` the gathered labels (as floats: exact for class indices) and
``scratch`` holds ``(n, widest hidden layer)``. Each layer is a single
BLAS matrix product on contiguous views; the backward pass overwrites the activations by
the deltas. ``dims`` is read at run time, so one compiled function serves any depth.

Argument types (keep them identical everywhere so numba compiles each kernel once per
dtype, see :mod:`mpitrain.kernels.warmup`): ``params``, ``grad``, ``work`` are writeable
C-contiguous 1-D arrays of the float dtype (float32 or float64), and so is ``out``; ``X`` is
a writeable C-contiguous 2-D array of that dtype; ``y`` is a writeable C-contiguous 1-D
array of int64 (classification) or of the float dtype (regression); ``dims`` and ``rows``
are C-contiguous int64 arrays; ``loss_kind`` and ``max_rows`` are Python ints. Other types
(a read-only or strided array, int32 labels, ...) still work but compile a new version.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit, types
from numba.extending import overload

SQUARED = 0
BINARY_XENT = 1
SOFTMAX_XENT = 2
LOSS_KINDS = (SQUARED, BINARY_XENT, SOFTMAX_XENT)
DTYPES = ("float32", "float64")  # the float types every kernel is compiled for

_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "boundscheck": False}
_MAX_CLASSES = 2**24  # class indices stay exact in a float32 workspace


# ----------------------------------------------------------------------------------------
# Plain-Python helpers (no compilation): sizes the caller needs to preallocate buffers.


def as_dims(dims: Sequence[int] | np.ndarray) -> np.ndarray:
    """Return ``dims`` as the C-contiguous int64 array the kernels expect (validated)."""
    arr = np.ascontiguousarray(dims, dtype=np.int64)
    if arr.ndim != 1 or arr.size < 2 or np.any(arr < 1):
        raise ValueError(f"dims must be >= 2 positive layer sizes (got {arr.tolist()})")
    return arr


def n_params(dims: Sequence[int] | np.ndarray) -> int:
    """Number of parameters (and of gradient slots before the tail) of a network."""
    return int(_n_params.py_func(as_dims(dims)))


def workspace_size(dims: Sequence[int] | np.ndarray, max_rows: int) -> int:
    """Float elements of workspace needed for batches (or chunks) of up to ``max_rows`` rows."""
    if max_rows < 0:
        raise ValueError(f"max_rows must be >= 0 (got {max_rows})")
    arr = as_dims(dims)
    return int(max_rows) * int(_act_width.py_func(arr) + 1 + _widest_hidden.py_func(arr))


# ----------------------------------------------------------------------------------------
# Sizes and checks (numba; the plain-Python helpers above reuse them through ``py_func``).


@njit(**_JIT)
def _n_params(dims):
    total = 0
    for l in range(dims.size - 1):
        total += dims[l] * dims[l + 1] + dims[l + 1]
    return total


@njit(**_JIT)
def _act_width(dims):
    """Workspace elements per batch row taken by the activations (input included)."""
    total = 0
    for l in range(dims.size):
        total += dims[l]
    return total


@njit(**_JIT)
def _widest_hidden(dims):
    """Workspace elements per batch row taken by the backward scratch block."""
    widest = 0
    for l in range(1, dims.size - 1):
        widest = max(widest, dims[l])
    return widest


@njit(**_JIT)
def _work_needed(dims, nrows):
    return nrows * (_act_width(dims) + 1 + _widest_hidden(dims))


@njit(**_JIT)
def _check_call(params, dims, loss_kind, X, nrows, work):
    """Validate shapes once per call (the loops below run without bounds checks)."""
    if dims.size < 2:
        raise ValueError("dims must have at least 2 entries")
    for l in range(dims.size):
        if dims[l] < 1:
            raise ValueError("dims entries must be >= 1")
    if X.shape[1] != dims[0]:
        raise ValueError("X.shape[1] must equal dims[0]")
    if params.size != _n_params(dims):
        raise ValueError("params.size must equal n_params(dims)")
    if work.size < _work_needed(dims, nrows):
        raise ValueError("work is smaller than workspace_size(dims, rows)")
    if loss_kind != SQUARED and loss_kind != BINARY_XENT and loss_kind != SOFTMAX_XENT:
        raise ValueError("loss_kind must be SQUARED, BINARY_XENT or SOFTMAX_XENT")
    if loss_kind != SOFTMAX_XENT and dims[dims.size - 1] != 1:
        raise ValueError("SQUARED and BINARY_XENT need one output (dims[-1] == 1)")
    if dims[dims.size - 1] > _MAX_CLASSES:
        raise ValueError("too many classes: labels are held as floats in the workspace")


@njit(**_JIT)
def _check_labels(X, y):
    if y.size != X.shape[0]:
        raise ValueError("y must have one label per row of X")


# ----------------------------------------------------------------------------------------
# Forward pass.


@njit(**_JIT)
def _input_view(dims, work, nrows):
    return work[: nrows * dims[0]].reshape((nrows, dims[0]))


@njit(**_JIT)
def _labels_view(dims, work, nrows):
    a_end = nrows * _act_width(dims)
    return work[a_end : a_end + nrows]


@njit(**_JIT)
def _gather_rows(X, y, rows, A, labels):
    """Copy ``X[rows]`` into the contiguous block ``A`` and ``y[rows]`` into ``labels``.

    One pass, so the (random, cache-missing) loads of rows and labels overlap.
    """
    n, d = X.shape
    for i in range(rows.size):
        r = rows[i]
        if r < 0 or r >= n:
            raise IndexError("row index out of range")
        labels[i] = y[r]
        for j in range(d):
            A[i, j] = X[r, j]


@njit(**_JIT)
def _load_range(X, start, A):
    """Copy ``X[start:start + len(A)]`` into the contiguous block ``A``."""
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            A[i, j] = X[start + i, j]


@njit(**_JIT)
def _add_bias(Z, b):
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[i, j] += b[j]


@njit(**_JIT)
def _add_bias_relu(Z, b):
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            z = Z[i, j] + b[j]
            Z[i, j] = 0 if z < 0 else z  # NaN propagates, like np.maximum


@njit(**_JIT)
def _forward(params, dims, work, nrows):
    """Run every layer on the ``nrows`` input rows already in the workspace.

    Every layer's input stays in the workspace (the backward pass needs it); returns the
    ``(nrows, k)`` view holding the output logits.
    """
    p = 0
    a = 0
    last = dims.size - 2
    out = work[:0].reshape((0, 1))
    for l in range(last + 1):
        din = dims[l]
        dout = dims[l + 1]
        A = work[a : a + nrows * din].reshape((nrows, din))
        W = params[p : p + din * dout].reshape((din, dout))
        b = params[p + din * dout : p + din * dout + dout]
        a += nrows * din
        out = work[a : a + nrows * dout].reshape((nrows, dout))
        np.dot(A, W, out)
        if l < last:
            _add_bias_relu(out, b)
        else:
            _add_bias(out, b)
        p += din * dout + dout
    return out


@njit(**_JIT)
def _forward_chunk(params, dims, X, start, nrows, work):
    _load_range(X, start, _input_view(dims, work, nrows))
    return _forward(params, dims, work, nrows)


# ----------------------------------------------------------------------------------------
# Heads: loss, correct count and (optionally) dloss/dlogits written over the logits.


def _exp_nonpositive(buf):
    """In place ``buf <- exp(buf)`` for ``buf <= 0`` (NaN propagates); numba-only."""
    raise NotImplementedError("call from numba-compiled code")


def _exp_constants(dtype):
    """Cody-Waite split of ln 2 and Taylor coefficients (highest degree first) per dtype.

    Degree 7 (float32) / 13 (float64) keeps the error within ~1 ulp on ``|r| <= ln2 / 2``.
    """
    if dtype == np.float32:
        ln2_hi, ln2_lo, degree, lowest = 0.693359375, -2.12194440e-4, 7, -87.0
    else:
        ln2_hi, ln2_lo, degree = 6.93147180369123816490e-01, 1.90821492927058770002e-10, 13
        lowest = -708.0
    cast = np.dtype(dtype).type
    coeffs = tuple(cast(1.0 / math.factorial(i)) for i in range(degree, -1, -1))
    return cast(lowest), cast(1.4426950408889634), cast(ln2_hi), cast(ln2_lo), coeffs, cast(0.5)


@overload(_exp_nonpositive, jit_options=_JIT)
def _exp_nonpositive_impl(buf):
    """Vectorisable exp: libm ``exp`` calls would keep the softmax head scalar.

    ``exp(x) = 2^n * p(r)`` with ``n = round(x / ln 2)``, ``r = x - n ln 2``; ``2^n`` is
    built from its exponent bits through an integer view of the same buffer. Inputs below
    -87 (float32) / -708 (float64), whose exp is at the bottom of the normal range, give 0.
    """
    if buf.dtype not in (types.float32, types.float64):
        return None
    as_int = np.int32 if buf.dtype == types.float32 else np.int64
    mantissa_bits, bias = (23, 127) if buf.dtype == types.float32 else (52, 1023)
    lowest, log2e, ln2_hi, ln2_lo, coeffs, half = _exp_constants(
        np.float32 if buf.dtype == types.float32 else np.float64
    )

    def impl(buf):
        bits = buf.view(as_int)
        for i in range(buf.size):
            x = buf[i]
            clamped = x if x >= lowest else lowest  # NaN too: keeps the int cast defined
            n = np.floor(clamped * log2e + half)
            r = (x - n * ln2_hi) - n * ln2_lo  # NaN stays NaN
            p = coeffs[0]
            for c in coeffs[1:]:
                p = p * r + c
            bits[i] = (as_int(n) + bias) << mantissa_bits
            buf[i] = 0 if x < lowest else buf[i] * p

    return impl


@njit(**_JIT)
def _row_max(z):
    """Maximum and arg-max (first maximum on ties) of one row, without branches."""
    m = z[0]
    best = 0
    for j in range(1, z.size):
        better = z[j] > m
        m = z[j] if better else m
        best = j if better else best
    return m, best


@njit(**_JIT)
def _softmax_block(Z, labels, want_delta):
    """Softmax cross-entropy of each row of logits ``Z`` (``logsumexp(z) - z[label]``).

    ``labels`` holds one class index (as a float) per row. Stable: each row is shifted by
    its maximum before the (vectorised) exponential; sums, logs and the returned totals are
    float64. ``Z`` is overwritten (by the deltas ``softmax(z) - onehot(label)`` when
    ``want_delta``, else by scratch values).
    """
    k = Z.shape[1]
    loss_sum = 0.0
    correct = 0.0
    for i in range(Z.shape[0]):
        z = Z[i]
        lab = int(labels[i])
        if lab < 0 or lab >= k:
            raise ValueError("class label out of range 0..k-1")
        m, best = _row_max(z)
        loss_sum += np.float64(m) - np.float64(z[lab])
        if best == lab:
            correct += 1.0
        for j in range(k):
            z[j] = z[j] - m
    _exp_nonpositive(Z.reshape(Z.size))
    for i in range(Z.shape[0]):
        z = Z[i]
        s = 0.0
        for j in range(k):
            s += z[j]
        loss_sum += np.log(s)
        if want_delta:
            inv = 1.0 / s
            for j in range(k):
                z[j] = z[j] * inv
            z[int(labels[i])] -= 1
    return loss_sum, correct


@njit(**_JIT)
def _sigmoid(z):
    if z >= 0.0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@njit(**_JIT)
def _binary_block(Z, labels, want_delta):
    """Sigmoid cross-entropy of each row's single logit, in the stable softplus form."""
    loss_sum = 0.0
    correct = 0.0
    for i in range(Z.shape[0]):
        z = np.float64(Z[i, 0])
        t = np.float64(labels[i])
        loss_sum += max(z, 0.0) - z * t + np.log1p(np.exp(-abs(z)))
        if want_delta:
            Z[i, 0] = _sigmoid(z) - t
        if (z > 0.0) == (t == 1.0):
            correct += 1.0
    return loss_sum, correct


@njit(**_JIT)
def _squared_block(Z, labels, want_delta):
    """Squared error ``(f - y)^2`` of each row's single output; ``correct`` is 0."""
    loss_sum = 0.0
    for i in range(Z.shape[0]):
        r = np.float64(Z[i, 0]) - np.float64(labels[i])
        loss_sum += r * r
        if want_delta:
            Z[i, 0] = 2.0 * r
    return loss_sum, 0.0


@njit(**_JIT)
def _head(Z, labels, loss_kind, want_delta):
    """(loss_sum, correct) of the logits ``Z``; with ``want_delta``, ``Z <- dloss/dZ``."""
    if loss_kind == SOFTMAX_XENT:
        return _softmax_block(Z, labels, want_delta)
    if loss_kind == BINARY_XENT:
        return _binary_block(Z, labels, want_delta)
    return _squared_block(Z, labels, want_delta)


@njit(**_JIT)
def _prediction(z, loss_kind):
    """Regression value / probability of class 1 / arg-max class of one row of logits."""
    if loss_kind == SOFTMAX_XENT:
        return np.float64(_row_max(z)[1])
    if loss_kind == BINARY_XENT:
        return _sigmoid(np.float64(z[0]))
    return np.float64(z[0])


# ----------------------------------------------------------------------------------------
# Backward pass.


@njit(**_JIT)
def _bias_grad(D, gb):
    gb[:] = 0
    for i in range(D.shape[0]):
        for j in range(D.shape[1]):
            gb[j] += D[i, j]


@njit(**_JIT)
def _relu_backward(T, A):
    """``A <- T * (A > 0)``: turn the stored ReLU output into the pre-activation delta."""
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            A[i, j] = T[i, j] if A[i, j] > 0 else 0


@njit(**_JIT)
def _backward(params, grad, dims, work, nrows):
    """Back-propagate the output deltas (already in the workspace) and write the gradient.

    From the top layer down: ``dW_l = A_l^T D``, ``db_l = sum_rows D`` and, below the top,
    ``D <- (D W_l^T) * (A_l > 0)`` written in place of ``A_l``.
    """
    p_end = _n_params(dims)
    a_end = nrows * _act_width(dims)
    scratch = work[a_end + nrows :]
    for l in range(dims.size - 2, -1, -1):
        din = dims[l]
        dout = dims[l + 1]
        d_start = a_end - nrows * dout
        a_start = d_start - nrows * din
        D = work[d_start:a_end].reshape((nrows, dout))
        A = work[a_start:d_start].reshape((nrows, din))
        b_start = p_end - dout
        w_start = b_start - din * dout
        np.dot(A.T, D, grad[w_start:b_start].reshape((din, dout)))
        _bias_grad(D, grad[b_start:p_end])
        if l > 0:
            W = params[w_start:b_start].reshape((din, dout))
            T = scratch[: nrows * din].reshape((nrows, din))
            np.dot(D, W.T, T)
            _relu_backward(T, A)
        p_end = w_start
        a_end = d_start


# ----------------------------------------------------------------------------------------
# Public kernels.


@njit(**_JIT)
def network_grad(params, grad, dims, loss_kind, X, y, rows, work):
    """Summed gradient, loss and correct count over ``X[rows]`` (fused forward + backward).

    Overwrites ``grad[:n_params(dims)]`` with the SUM over the rows of d(loss_row)/d(params)
    (the caller divides by the global row count after the allreduce) and leaves the tail
    ``grad[n_params:]`` untouched. ``rows`` (int64, any order, repeats allowed, maybe empty)
    indexes rows of ``X`` and ``y``; ``work`` needs ``workspace_size(dims, len(rows))``
    elements. Returns ``(loss_sum, correct)`` as float64; ``correct`` is 0 for SQUARED.
    """
    nrows = rows.size
    _check_call(params, dims, loss_kind, X, nrows, work)
    _check_labels(X, y)
    if grad.size < params.size:
        raise ValueError("grad must have at least n_params(dims) slots")
    if nrows == 0:
        grad[: params.size] = 0
        return 0.0, 0.0
    labels = _labels_view(dims, work, nrows)
    _gather_rows(X, y, rows, _input_view(dims, work, nrows), labels)
    logits = _forward(params, dims, work, nrows)
    loss_sum, correct = _head(logits, labels, loss_kind, True)
    _backward(params, grad, dims, work, nrows)
    return loss_sum, correct


@njit(**_JIT)
def network_loss(params, dims, loss_kind, X, y, work, max_rows):
    """Loss sum and correct count over ALL rows of ``X`` (forward only).

    Rows are processed in chunks of ``max_rows`` so a workspace of
    ``workspace_size(dims, max_rows)`` elements serves any number of rows.
    Returns ``(loss_sum, correct)`` as float64; ``correct`` is 0 for SQUARED.
    """
    if max_rows < 1:
        raise ValueError("max_rows must be >= 1")
    n = X.shape[0]
    _check_call(params, dims, loss_kind, X, min(n, max_rows), work)
    _check_labels(X, y)
    loss_sum = 0.0
    correct = 0.0
    for start in range(0, n, max_rows):
        nrows = min(max_rows, n - start)
        logits = _forward_chunk(params, dims, X, start, nrows, work)
        labels = _labels_view(dims, work, nrows)
        labels[:] = y[start : start + nrows]
        chunk_loss, chunk_correct = _head(logits, labels, loss_kind, False)
        loss_sum += chunk_loss
        correct += chunk_correct
    return loss_sum, correct


@njit(**_JIT)
def network_predict(params, dims, loss_kind, X, out, work, max_rows):
    """Write one prediction per row of ``X`` into ``out`` (forward only, chunked).

    SQUARED: the regression value; BINARY_XENT: the probability of class 1;
    SOFTMAX_XENT: the arg-max class (first maximum on ties) as a float.
    """
    if max_rows < 1:
        raise ValueError("max_rows must be >= 1")
    n = X.shape[0]
    _check_call(params, dims, loss_kind, X, min(n, max_rows), work)
    if out.size != n:
        raise ValueError("out must have one slot per row of X")
    for start in range(0, n, max_rows):
        nrows = min(max_rows, n - start)
        logits = _forward_chunk(params, dims, X, start, nrows, work)
        for i in range(nrows):
            out[start + i] = _prediction(logits[i], loss_kind)
