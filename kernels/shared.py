"""Kernels of the shared-memory step reductions (:mod:`mpitrain.collectives.slot_sum`,
:mod:`mpitrain.collectives.shared_update`).

``slots`` is a C-contiguous ``(P, S, n)`` array of float32 or float64 (every rank's ``S``
message slots, in rank order), ``b`` a Python int, ``out`` a C-contiguous 1-D array of at
most ``n`` elements of the same dtype (a message shorter than the slots uses their start).
:func:`sum_range` takes ``(P, n)`` (one slot per rank). No allocation.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, boundscheck=False)
def sum_slots(slots, b, out):  # pragma: no cover - compiled
    """``out[i] = slots[0, b, i] + slots[1, b, i] + ...`` for ``i < out.size``, added in rank
    order (the same bits on every rank that runs it), one call (vectorised loops, no Python
    loop over ranks)."""
    if out.size > slots.shape[2]:
        raise ValueError("out must not be longer than a slot")
    first = slots[0, b]
    for i in range(out.size):
        out[i] = first[i]
    for r in range(1, slots.shape[0]):
        src = slots[r, b]
        for i in range(out.size):
            out[i] += src[i]


BLOCK = 4096  # elements of ``out`` summed over every rank before the next block (in cache)


@njit(cache=True, nogil=True, boundscheck=False)
def sum_range(slots, lo, out):  # pragma: no cover - compiled
    """``out[j] = slots[0, lo + j] + slots[1, lo + j] + ...`` for ``j < out.size``, added in
    rank order: the bits of :func:`sum_slots` on those elements. Block by block, so a block
    of ``out`` stays in cache while every rank's part of it is added."""
    m = out.size
    if lo < 0 or lo + m > slots.shape[1]:
        raise ValueError("the range does not fit the slots")
    for start in range(0, m, BLOCK):
        stop = min(start + BLOCK, m)
        block = out[start:stop]  # (1-D views: the loops vectorise; indexing lo + j does not)
        first = slots[0, lo + start:lo + stop]
        for j in range(block.size):
            block[j] = first[j]
        for r in range(1, slots.shape[0]):
            src = slots[r, lo + start:lo + stop]
            for j in range(block.size):
                block[j] += src[j]


def warm_up() -> None:
    """Compile or load both dtypes' specialisations."""
    for dtype in (np.float32, np.float64):
        slots = np.zeros((2, 2, 3), dtype=dtype)
        sum_slots(slots, 0, np.empty(3, dtype=dtype))
        sum_range(np.zeros((2, 3), dtype=dtype), 1, np.empty(2, dtype=dtype))
