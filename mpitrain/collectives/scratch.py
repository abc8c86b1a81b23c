"""Receive buffers reused across calls, so a steady stream of allreduces does not allocate.

Buffers are kept per (dtype, capacity), capacity rounded up to a power of two elements so
a few distinct sizes cover every request. A buffer is lent to one operation at a time:
two allreduces in flight together get two buffers.
"""

from __future__ import annotations

import numpy as np

_FREE: dict[tuple[str, int], list[np.ndarray]] = {}


def acquire(dtype: np.dtype, n: int) -> np.ndarray:
    """A buffer of at least ``n`` elements of ``dtype``; give it back with :func:`release`."""
    capacity = 1 << max(0, n - 1).bit_length()
    free = _FREE.get((dtype.char, capacity))
    if free:
        return free.pop()
    return np.empty(capacity, dtype=dtype)


def release(buf: np.ndarray) -> None:
    """Return a buffer obtained from :func:`acquire` for later calls."""
    key = (buf.dtype.char, buf.size)
    free = _FREE.get(key)
    if free is None:
        _FREE[key] = [buf]
    else:
        free.append(buf)


def clear() -> None:
    """Drop every cached buffer (frees the memory once no operation holds one)."""
    _FREE.clear()
