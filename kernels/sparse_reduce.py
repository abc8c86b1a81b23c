"""Kernels of the sparse row reduction (:mod:`mpitrain.collectives.sparse`): pack the rows
of a message's row block a step touched, and sum every rank's packed rows back into a
message in the order the dense allreduce would have added them.

A message is ``count`` elements whose first ``rows * width`` are a row block (row ``j`` at
``[j * width, (j + 1) * width)``) and the rest (``count - rows * width`` elements) dense.
A rank's payload is its ``m`` sorted touched rows' indices (int64) and values: the ``m``
rows, then the dense rest. Summation order: ``ORDER_RANKS`` adds the ranks in rank order
(the ``shm`` slot sum; any order is the same bits on 2 ranks, a + b == b + a);
``ORDER_RING`` starts element ``i`` at the rank whose number is the ring chunk holding
``i`` (the chunks of :func:`mpitrain.collectives.ring.chunk_offsets`) and goes on around
the ring, which is how the ``ring`` allreduce adds it. An absent row is a row of zeros in
the dense message and adding 0 leaves a float sum unchanged, so skipping it keeps the bits.
No allocation.
"""

from __future__ import annotations

import numpy as np
from numba import njit

ORDER_RANKS = 0
ORDER_RING = 1

_JIT = {"cache": True, "nogil": True, "boundscheck": False}


@njit(**_JIT)
def pack_payload(message, touched, m, width, dense_start, values):
    """Rows ``touched[:m]`` of ``message`` then ``message[dense_start:]`` into ``values``."""
    k = 0
    for e in range(m):
        base = touched[e] * width
        for c in range(width):
            values[k] = message[base + c]
            k += 1
    for i in range(dense_start, message.size):
        values[k] = message[i]
        k += 1


@njit(**_JIT)
def _start_rank(pos, order, q, rem, size):
    """The rank whose contribution to element ``pos`` the dense allreduce adds first."""
    if order == ORDER_RANKS:
        return 0
    big = rem * (q + 1)  # the first ``rem`` chunks are one element longer
    if pos < big:
        return pos // (q + 1)
    return rem + (pos - big) // q


@njit(**_JIT)
def zero_rows(out, rows, n, width):
    """``out``'s rows ``rows[:n]`` (of ``width`` elements) set to 0."""
    for e in range(n):
        base = rows[e] * width
        for c in range(width):
            out[base + c] = 0


@njit(**_JIT)
def _add_payload(out, as_int, as_val, m, io, vo, width, dense_start):
    """One rank's payload added into ``out``."""
    for e in range(m):
        base = as_int[io + e] * width
        src = vo + e * width
        for c in range(width):
            out[base + c] += as_val[src + c]
    vo += m * width
    for i in range(out.size - dense_start):
        out[dense_start + i] += as_val[vo + i]


@njit(**_JIT)
def ordered_sum(out, as_int, as_val, counts, idx_off, val_off, width, dense_start, order):
    """Every rank's payload summed into ``out`` in the dense allreduce's order.

    Rank ``r``'s payload: ``counts[r]`` row indices at ``as_int[idx_off[r]:]`` and its
    values at ``as_val[val_off[r]:]`` (:func:`pack_payload`). ``out``'s touched rows and
    touched rows and dense rest are set to 0 first; the other rows are left as they are
    (the caller zeroes the rows an earlier call wrote).
    """
    size = counts.size
    count = out.size
    q, rem = divmod(count, size)
    for e in range(dense_start, count):
        out[e] = 0
    for r in range(size):
        zero_rows(out, as_int[idx_off[r]:], counts[r], width)
    if order == ORDER_RANKS:  # one pass, rank after rank
        for r in range(size):
            _add_payload(out, as_int, as_val, counts[r], idx_off[r], val_off[r], width,
                         dense_start)
        return
    for turn in range(size):  # the turn-th contribution of each element, for all of them
        for r in range(size):
            m = counts[r]
            io = idx_off[r]
            vo = val_off[r]
            for e in range(m):
                base = as_int[io + e] * width
                for c in range(width):
                    pos = base + c
                    if (r - _start_rank(pos, order, q, rem, size)) % size == turn:
                        out[pos] += as_val[vo + e * width + c]
            vo += m * width
            for i in range(count - dense_start):
                pos = dense_start + i
                if (r - _start_rank(pos, order, q, rem, size)) % size == turn:
                    out[pos] += as_val[vo + i]


@njit(**_JIT)
def sum_blocks(out, dirty, n_dirty, as_int, as_val, starts, width, dense_start, order,
               itemsize, counts, idx_off, val_off):
    """The bounded path's whole sum in one call: rank ``r``'s block starts at byte
    ``starts[r]`` (its row count as int64, then :func:`pack_payload`'s indices and values);
    zeroes the rows ``dirty[:n_dirty]`` an earlier call wrote, sums every block into
    ``out`` (:func:`ordered_sum`), records the rows written now in ``dirty`` and returns
    their number. ``counts``, ``idx_off``, ``val_off`` (int64, one per rank) are scratch."""
    zero_rows(out, dirty, n_dirty, width)
    for r in range(starts.size):
        m = as_int[starts[r] // 8]
        counts[r] = m
        idx_off[r] = starts[r] // 8 + 1
        val_off[r] = (starts[r] + 8 + m * 8) // itemsize
    ordered_sum(out, as_int, as_val, counts, idx_off, val_off, width, dense_start, order)
    n = 0
    for r in range(starts.size):
        for e in range(counts[r]):
            dirty[n] = as_int[idx_off[r] + e]
            n += 1
    return n


def warm_up() -> None:
    """Compile (or load from the cache) the specialisations the reduction uses."""
    ints = np.zeros(2, dtype=np.int64)
    for dtype in (np.float32, np.float64):
        msg = np.zeros(4, dtype=dtype)
        pack_payload(msg, ints, 1, 2, 2, np.zeros(4, dtype=dtype))
        zero_rows(msg, ints, 1, 2)
        ordered_sum(msg, ints, msg, np.zeros(1, np.int64), ints[:1], ints[:1], 2, 2,
                    ORDER_RANKS)
        one = np.zeros(1, np.int64)
        sum_blocks(msg, np.zeros(4, np.int64), 0, np.zeros(4, np.int64),
                   np.zeros(4 * 8 // msg.itemsize, dtype), one, 2, 2, ORDER_RANKS,
                   msg.itemsize, one.copy(), one.copy(), one.copy())
