"""One-layer networks (linear, logistic, softmax) on rows held in CSR, never made dense.

The model protocol's argument lists (see :mod:`mpitrain.models.protocol`) with ``X`` the
tuple ``(data, indices, indptr)`` of a CSR matrix: row ``r`` holds ``data[p]`` at column
``indices[p]`` for ``p`` in ``indptr[r]:indptr[r+1]`` (data of the float dtype, indices
int32 or int64, indptr int64). ``spec`` is the dense networks' ``[loss_kind, d, k]``, the
flat buffer the same ``W (d, k)`` then ``b (k,)``, and the heads (loss, deltas,
probabilities) are the dense kernels' own, so a sparse model computes what the dense one
computes on the same rows, in a time that grows with the non-zeros rather than ``d``.

Workspace for ``n`` rows: ``n * (k + 1)`` elements (logits, then labels).

:func:`batch_columns` lists the columns a batch holds: the rows of ``W`` (and of an MLP's
``W1``) its gradient touches, which is what the sparse row reduction sends.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .backward import _write_tail
from .dense import outputs_of_logits
from .network import _head
from .prefetch import ROWS_AHEAD, prefetch_ahead
from .sparse_reduce import add_distinct, clear_marks

_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "boundscheck": False}


def sparse_workspace_size(n_classes_out: int, rows: int) -> int:
    """Workspace elements for batches of ``rows`` rows and ``n_classes_out`` outputs."""
    return max(1, rows) * (n_classes_out + 1)


@njit(**_JIT)
def _check(params, X, spec, nrows, work):
    d, k = spec[1], spec[2]
    if spec.size != 3:
        raise ValueError("sparse kernels need spec = [loss_kind, d, k] (one layer)")
    if params.size != d * k + k:
        raise ValueError("params.size must equal d * k + k")
    if work.size < nrows * (k + 1):
        raise ValueError("work is smaller than sparse_workspace_size(k, rows)")
    check_csr(X)


@njit(**_JIT)
def check_csr(X):
    """ValueError unless ``X`` holds together as a CSR triple."""
    data, indices, indptr = X
    if data.size != indices.size or indptr.size < 1 or indptr[indptr.size - 1] > data.size:
        raise ValueError("X must be a CSR triple (data, indices, indptr)")


@njit(**_JIT)
def _row_at(X, rows, i):
    """``rows[i]`` (IndexError outside ``X``), after asking for the CSR row
    :data:`~.prefetch.ROWS_AHEAD` further (shuffled rows lie anywhere in memory); -1 for
    ``i < 0`` (the loops start at ``-ROWS_AHEAD`` to ask for their first rows)."""
    prefetch_ahead(X, rows, i)
    if i < 0:
        return -1
    r = rows[i]
    if r < 0 or r >= X[2].size - 1:
        raise IndexError("row index out of range")
    return r


@njit(**_JIT)
def _logits(params, X, rows, work, spec):
    """``Z = X[rows] @ W + b`` into the workspace (touching only the rows' non-zeros)."""
    data, indices, indptr = X
    d, k = spec[1], spec[2]
    n = rows.size
    W = params[: d * k].reshape((d, k))
    b = params[d * k : d * k + k]
    Z = work[: n * k].reshape((n, k))
    for i in range(-ROWS_AHEAD, n):
        r = _row_at(X, rows, i)
        if r < 0:
            continue
        for c in range(k):
            Z[i, c] = 0
        for p in range(indptr[r], indptr[r + 1]):
            j = indices[p]
            if j < 0 or j >= d:
                raise IndexError("column index out of range")
            v = data[p]
            for c in range(k):
                Z[i, c] += v * W[j, c]
        for c in range(k):
            Z[i, c] += b[c]
    return Z


@njit(**_JIT)
def _labels(y, rows, work, spec):
    n, k = rows.size, spec[2]
    labels = work[n * k : n * k + n]
    for i in range(n):
        labels[i] = y[rows[i]]
    return labels


@njit(**_JIT)
def sparse_gradient(params, grad, X, y, rows, work, spec):
    """Protocol ``gradient_kernel``: overwrites ``grad[:d*k+k]`` with the summed gradient;
    returns (loss sum, correct). The W rows of columns absent from the batch stay 0."""
    nrows = rows.size
    _check(params, X, spec, nrows, work)
    d, k = spec[1], spec[2]
    grad[: d * k + k] = 0
    no_mark = np.zeros(0, dtype=np.uint8)  # (no columns to list)
    loss, correct, _ = _add_gradient(params, grad, X, y, rows, work, spec, no_mark,
                                     np.zeros(0, dtype=np.int64))
    return loss, correct


@njit(**_JIT)
def _add_gradient(params, grad, X, y, rows, work, spec, mark, touched):
    """The batch's gradient added into ``grad`` (zero in the rows of the batch's columns
    and in the bias); (loss sum, correct, m). With a ``mark`` (non-empty: as in
    :func:`distinct_columns`) the batch's distinct columns go to ``touched[:m]``."""
    nrows = rows.size
    d, k = spec[1], spec[2]
    if nrows == 0:
        return 0.0, 0.0, 0
    if k == 1:
        return _add_gradient_one(params, grad, X, y, rows, work, spec, mark, touched)
    m = distinct_columns(X, rows, mark, touched) if mark.size else 0
    Z = _logits(params, X, rows, work, spec)
    loss, correct = _head(Z, _labels(y, rows, work, spec), spec[0], True)
    add_csr_outer(grad[: d * k].reshape((d, k)), X, rows, Z)
    gb = grad[d * k : d * k + k]
    for i in range(nrows):
        for c in range(k):
            gb[c] += Z[i, c]
    return loss, correct, m


@njit(**_JIT)
def _add_gradient_one(params, grad, X, y, rows, work, spec, mark, touched):
    """:func:`_add_gradient` of a one-output model (linear, logistic), row by row: a row's
    logit, its delta, then its entries' gradient while they are still in cache, and its
    columns listed in the same pass (one pass over the batch instead of three; the entries
    of the rows ahead are prefetched). The same operations in the same order as
    :func:`_logits`, the head and :func:`add_csr_outer`, so the same bits."""
    data, indices, indptr = X
    d = spec[1]
    n = rows.size
    W = params[:d]
    b = params[d]
    gW = grad[:d]
    Z = work[:n].reshape((n, 1))
    labels = work[n : 2 * n]
    listing = mark.size > 0
    loss = 0.0
    correct = 0.0
    m = 0
    for i in range(-ROWS_AHEAD, n):
        r = _row_at(X, rows, i)
        if r < 0:
            continue
        lo, hi = indptr[r], indptr[r + 1]
        z = Z.dtype.type(0)
        for p in range(lo, hi):
            j = indices[p]
            if j < 0 or j >= d:
                raise IndexError("column index out of range")
            z += data[p] * W[j]
        Z[i, 0] = z + b
        labels[i] = y[r]
        row_loss, row_correct = _head(Z[i : i + 1], labels[i : i + 1], spec[0], True)
        loss += row_loss
        correct += row_correct
        delta = Z[i, 0]
        for p in range(lo, hi):
            j = indices[p]
            if listing and mark[j] == 0:
                mark[j] = 1
                touched[m] = j
                m += 1
            gW[j] += data[p] * delta
        grad[d] += delta
    if listing:
        clear_marks(mark, touched, m)
    return loss, correct, m


@njit(**_JIT)
def add_csr_outer(gW, X, rows, D):
    """``gW += X[rows]^T D`` for CSR ``X`` (the gradient of a layer whose input is the
    rows): only the rows of ``gW`` of the features present are touched, row by row in
    batch order (so the sums do not depend on how the batch was split)."""
    data, indices, indptr = X
    width = gW.shape[1]
    for i in range(rows.size):
        r = rows[i]
        for p in range(indptr[r], indptr[r + 1]):
            j = indices[p]
            v = data[p]
            for c in range(width):
                gW[j, c] += v * D[i, c]


@njit(**_JIT)
def sparse_step(params, message, X, y, rows, work, spec):
    """Protocol ``step_kernel``: the gradient plus ``message[n:n+3] = loss, correct, rows``."""
    loss, correct = sparse_gradient(params, message, X, y, rows, work, spec)
    _write_tail(message, params.size, loss, correct, rows.size)


@njit(**_JIT)
def sparse_rows_step(params, message, X, y, rows, work, spec, mark, touched, held):
    """Protocol ``rows_step_kernel``: :func:`sparse_step` for a ``message`` whose ``W``
    block is zero outside the rows ``touched[:held]`` (what this kernel wrote into it last
    time; ``held < 0``: unknown, the whole block is zeroed), in time that grows with the
    batch rather than ``d``: zeroes those rows, writes the batch's distinct columns into
    ``touched`` (in first-seen order; ``mark`` as in :func:`batch_columns`) and the step
    into ``message``, which is then zero outside them again; returns their number."""
    nrows = rows.size
    _check(params, X, spec, nrows, work)
    d, k = spec[1], spec[2]
    if held < 0:
        message[: d * k] = 0
    elif k == 1:
        for e in range(held):
            message[touched[e]] = 0
    else:
        for e in range(held):
            base = touched[e] * k
            for c in range(k):
                message[base + c] = 0
    message[d * k : d * k + k] = 0
    loss, correct, m = _add_gradient(params, message, X, y, rows, work, spec, mark, touched)
    _write_tail(message, params.size, loss, correct, nrows)
    return m


@njit(**_JIT)
def sparse_loss(params, X, y, rows, work, spec):
    """Protocol ``loss_kernel``: (loss sum, correct) of ``X[rows]``, forward only."""
    _check(params, X, spec, rows.size, work)
    if rows.size == 0:
        return 0.0, 0.0
    Z = _logits(params, X, rows, work, spec)
    return _head(Z, _labels(y, rows, work, spec), spec[0], False)


@njit(**_JIT)
def sparse_predict(params, X, rows, out, work, spec):
    """Protocol ``predict_kernel``: the dense predict kernel's outputs for ``X[rows]``."""
    _check(params, X, spec, rows.size, work)
    if rows.size == 0:
        return
    outputs_of_logits(_logits(params, X, rows, work, spec), spec[0], out)


@njit(**_JIT)
def distinct_columns(X, rows, mark, out):
    """The distinct columns of the CSR rows ``X[rows]`` in first-seen order into ``out``;
    returns their number. ``mark`` (uint8, one per column) must be all 0 and is left so."""
    _, indices, indptr = X
    m = 0
    for i in range(rows.size):
        r = rows[i]
        m = add_distinct(indices, indptr[r], indptr[r + 1] - indptr[r], mark, out, m)
    clear_marks(mark, out, m)
    return m


@njit(**_JIT)
def batch_columns(X, rows, mark, out):
    """The distinct columns of the CSR rows ``X[rows]``, sorted, into ``out``; returns
    their number. ``mark`` (uint8, one per column) must be all 0 and is left so."""
    m = distinct_columns(X, rows, mark, out)
    out[:m].sort()
    return m
