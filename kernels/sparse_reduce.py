"""Kernels of the sparse row reduction (:mod:`mpitrain.collectives.sparse`): pack the rows
of a message's row block a step touched, and sum every rank's packed rows back into a
message in the order the dense allreduce would have added them.

A message is ``count`` elements whose first ``rows * width`` are a row block (row ``j`` at
``[j * width, (j + 1) * width)``) and the rest (``count - rows * width`` elements) dense.
A rank's payload is its ``m`` distinct touched rows' indices (int64; int32 or int64 in a
bounded-path block, :func:`block_at`) and values: the ``m``
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
    if width == 1:  # (the common case, a loop numba compiles much tighter)
        for e in range(m):
            values[e] = message[touched[e]]
        k = m
    for e in range(m if width != 1 else 0):
        base = touched[e] * width
        for c in range(width):
            values[k] = message[base + c]
            k += 1
    for i in range(dense_start, message.size):
        values[k] = message[i]
        k += 1


@njit(**_JIT)
def block_at(start, m, as_idx, as_val):
    """Where a bounded-path block at byte ``start`` holding ``m`` rows keeps its row
    indices (an element of ``as_idx``, the buffer viewed as the index dtype) and its values
    (an element of ``as_val``): the block is its row count (8 bytes), the indices (padded
    to 8 bytes), then :func:`pack_payload`'s values."""
    isz = as_idx.itemsize
    return (start + 8) // isz, (start + 8 + (m * isz + 7) // 8 * 8) // as_val.itemsize


@njit(**_JIT)
def pack_block(message, touched, m, width, dense_start, as_idx, as_val, start, own_plus_zero):
    """A bounded-path block at byte ``start`` of the buffer viewed as ``as_idx`` (the index
    dtype, int32 or int64) and ``as_val`` (the message dtype): ``m``, the rows' indices
    ``touched[:m]``, then :func:`pack_payload`'s values (:func:`block_at`), in one pass.
    With ``own_plus_zero`` the packed elements of ``message`` (its rows ``touched[:m]`` and
    its dense rest) become ``own + 0`` in the same pass (-0.0 gives 0.0), the first half of
    :func:`add_other_block`'s sum."""
    as_idx[start // as_idx.itemsize] = m
    at, vo = block_at(start, m, as_idx, as_val)
    if width == 1:  # (the common case, loops numba compiles much tighter)
        if own_plus_zero:
            for e in range(m):
                j = touched[e]
                as_idx[at + e] = j
                v = message[j]
                as_val[vo + e] = v
                message[j] = v + 0.0
        else:
            for e in range(m):
                j = touched[e]
                as_idx[at + e] = j
                as_val[vo + e] = message[j]
    else:
        for e in range(m):
            j = touched[e]
            as_idx[at + e] = j
            base = j * width
            dst = vo + e * width
            for c in range(width):
                v = message[base + c]
                as_val[dst + c] = v
                if own_plus_zero:
                    message[base + c] = v + 0.0
    vo += m * width
    for i in range(message.size - dense_start):
        v = message[dense_start + i]
        as_val[vo + i] = v
        if own_plus_zero:
            message[dense_start + i] = v + 0.0


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
    if width == 1:
        for e in range(n):
            out[rows[e]] = 0
        return
    for e in range(n):
        base = rows[e] * width
        for c in range(width):
            out[base + c] = 0


@njit(**_JIT)
def ordered_sum(out, as_int, as_val, counts, idx_off, val_off, width, dense_start, order,
                mark, dirty):
    """Every rank's payload summed into ``out`` in the dense allreduce's order; the distinct
    rows written (every rank's touched rows) into ``dirty`` in first-seen order, and their
    number returned (``mark``: uint8, one per row of the block, all 0, left so).

    Rank ``r``'s payload: ``counts[r]`` row indices at ``as_int[idx_off[r]:]`` and its
    values at ``as_val[val_off[r]:]`` (:func:`pack_payload`). ``out``'s touched rows and
    dense rest are overwritten; the other rows are left as they are (the caller zeroes the
    rows an earlier call wrote). Each element is ``0 + a + b + ...`` over the ranks that
    sent it, in the dense order (the ranks that did not send it add 0: no change).
    """
    size = counts.size
    count = out.size
    for e in range(dense_start, count):
        out[e] = 0
    if order == ORDER_RANKS:  # one pass, rank after rank; a row's first sender sets it
        n = 0
        for r in range(size):
            io, vo = idx_off[r], val_off[r]
            if width == 1:
                n = _add_rows_first_set(out, as_int, as_val, counts[r], io, vo, mark, dirty,
                                        n)
            for e in range(counts[r] if width != 1 else 0):
                j = as_int[io + e]
                base = j * width
                src = vo + e * width
                if mark[j] == 0:
                    mark[j] = 1
                    dirty[n] = j
                    n += 1
                    for c in range(width):
                        out[base + c] = 0.0 + as_val[src + c]  # (as 0 + a: -0.0 gives 0.0)
                else:
                    for c in range(width):
                        out[base + c] += as_val[src + c]
            vo += counts[r] * width
            for i in range(count - dense_start):
                out[dense_start + i] += as_val[vo + i]
        clear_marks(mark, dirty, n)
        return n
    q, rem = divmod(count, size)
    for r in range(size):
        zero_rows(out, as_int[idx_off[r]:], counts[r], width)
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
    return union_rows(as_int, counts, idx_off, mark, dirty)


@njit(**_JIT)
def _add_rows_first_set(out, as_int, as_val, m, io, vo, mark, dirty, n):
    """:func:`ordered_sum`'s rank loop for rows of one element."""
    for e in range(m):
        j = as_int[io + e]
        if mark[j] == 0:
            mark[j] = 1
            dirty[n] = j
            n += 1
            out[j] = 0.0 + as_val[vo + e]
        else:
            out[j] += as_val[vo + e]
    return n


@njit(**_JIT)
def add_distinct(values, start, count, mark, out, m):
    """Append to ``out[:m]`` those of ``values[start:start + count]`` not marked yet in
    ``mark`` (uint8, one per possible value: IndexError for a value outside it), marking
    them; returns the new length. Clear the marks with :func:`clear_marks` afterwards."""
    d = mark.size
    for e in range(start, start + count):
        j = values[e]
        if j < 0 or j >= d:
            raise IndexError("column index out of range")
        if mark[j] == 0:
            mark[j] = 1
            out[m] = j
            m += 1
    return m


@njit(**_JIT)
def clear_marks(mark, out, m):
    """``mark`` of the ``out[:m]`` :func:`add_distinct` appended set back to 0."""
    for e in range(m):
        mark[out[e]] = 0


@njit(**_JIT)
def union_rows(as_int, counts, idx_off, mark, dirty):
    """The distinct rows of every rank's payload (rank ``r``'s ``counts[r]`` indices at
    ``as_int[idx_off[r]:]``) into ``dirty``, in first-seen order; returns their number.
    ``mark`` (uint8, one per row of the block) must be all 0 and is left so."""
    n = 0
    for r in range(counts.size):
        n = add_distinct(as_int, idx_off[r], counts[r], mark, dirty, n)
    clear_marks(mark, dirty, n)
    return n


@njit(**_JIT)
def add_other_block(message, mine, m, as_idx, as_val, start, width, dense_start, mark, room,
                    spare, distinct):
    """Two ranks: the other rank's block (at byte ``start``, as :func:`sum_blocks` reads
    it) added into this rank's own ``message``, whose row block is zero outside its rows
    ``mine[:m]`` and whose packed elements :func:`pack_block` made ``own + 0``: each
    element becomes ``(own + 0) + other``, the bits of :func:`ordered_sum`'s ``0 + a + b``
    (a + b == b + a), without a second message.

    The rows now non-zero are ``mine`` then the other's (distinct when ``distinct``,
    ``mark`` as in :func:`union_rows`; else with the repeats), written in the same pass:
    after ``mine`` in ``room`` when ``mine`` is the start of ``room`` and ``room`` has space
    for them (no copy), else into ``spare`` (``mine`` copied first; at least ``m`` plus the
    other's count long). Returns how many, and whether they are in ``room``."""
    other = as_idx[start // as_idx.itemsize]
    io, vo = block_at(start, other, as_idx, as_val)
    if room.ctypes.data == mine.ctypes.data and room.size >= m + other:
        n = _add_rows(message, as_idx, as_val, io, vo, other, width, room, m, mark, distinct)
        in_room = True
    else:
        for e in range(m):
            spare[e] = mine[e]
        n = _add_rows(message, as_idx, as_val, io, vo, other, width, spare, m, mark,
                      distinct)
        in_room = False
    vo += other * width
    for i in range(message.size - dense_start):
        message[dense_start + i] += as_val[vo + i]
    return n, in_room


@njit(**_JIT)
def _add_rows(message, as_int, as_val, io, vo, other, width, rows, m, mark, distinct):
    """:func:`add_other_block`'s rows: the ``other`` rows (indices at ``as_int[io:]``,
    values at ``as_val[vo:]``) added into ``message`` and appended to ``rows[:m]``."""
    if width == 1 and not distinct:  # (the common case, as a loop of its own)
        for e in range(other):
            j = as_int[io + e]
            message[j] += as_val[vo + e]
            rows[m + e] = j
        return m + other
    for e in range(other):
        base = as_int[io + e] * width
        for c in range(width):
            message[base + c] += as_val[vo + e * width + c]
    if not distinct:
        for e in range(other):
            rows[m + e] = as_int[io + e]
        return m + other
    for e in range(m):
        mark[rows[e]] = 1
    n = add_distinct(as_int, io, other, mark, rows, m)
    clear_marks(mark, rows, n)
    return n


@njit(**_JIT)
def sum_blocks(out, dirty, n_dirty, as_idx, as_val, starts, width, dense_start, order,
               counts, idx_off, val_off, mark):
    """The bounded path's whole sum in one call: rank ``r``'s block starts at byte
    ``starts[r]`` (:func:`block_at`: its row count, indices and values);
    zeroes the rows ``dirty[:n_dirty]`` an earlier call wrote, sums every block into
    ``out`` and records the distinct rows written now in ``dirty`` (:func:`ordered_sum`,
    ``mark`` its scratch); returns their number. ``counts``, ``idx_off``, ``val_off``
    (int64, one per rank) are scratch."""
    zero_rows(out, dirty, n_dirty, width)
    for r in range(starts.size):
        m = as_idx[starts[r] // as_idx.itemsize]
        counts[r] = m
        idx_off[r], val_off[r] = block_at(starts[r], m, as_idx, as_val)
    return ordered_sum(out, as_idx, as_val, counts, idx_off, val_off, width, dense_start,
                       order, mark, dirty)


def warm_up() -> None:
    """Compile (or load from the cache) the specialisations the reduction uses."""
    ints = np.zeros(2, dtype=np.int64)
    for dtype in (np.float32, np.float64):
        msg = np.zeros(4, dtype=dtype)
        pack_payload(msg, ints, 1, 2, 2, np.zeros(4, dtype=dtype))
        raw = np.zeros(64, np.uint8)
        zero_rows(msg, ints, 1, 2)
        for order in (ORDER_RANKS, ORDER_RING):
            ordered_sum(msg, ints, msg, np.zeros(1, np.int64), ints[:1], ints[:1], 2, 2,
                        order, np.zeros(2, np.uint8), ints.copy())
        for index in (np.int32, np.int64):  # (the bounded path's blocks)
            as_idx, as_val = raw.view(index), raw.view(dtype)
            for plus_zero in (True, False):
                pack_block(msg, ints, 1, 2, 2, as_idx, as_val, 0, plus_zero)
            for distinct in (True, False):
                add_other_block(msg, ints, 1, as_idx, as_val, 0, 2, 2, np.zeros(2, np.uint8),
                                np.zeros(4, np.int64), np.zeros(4, np.int64), distinct)
            one = np.zeros(1, np.int64)
            raw[:] = 0
            for order in (ORDER_RANKS, ORDER_RING):
                sum_blocks(msg, np.zeros(4, np.int64), 0, as_idx, as_val, one, 2, 2, order,
                           one.copy(), one.copy(), one.copy(), np.zeros(2, np.uint8))
