"""Receive buffers reused across calls, so a steady stream of allreduces does not allocate.

Buffers are kept per (dtype, capacity), capacity rounded up to a power of two elements so
a few distinct sizes cover every request. A buffer is lent to one operation at a time:
two allreduces in flight together get two buffers.
"""

from __future__ import annotations

import numpy as np

_FREE: dict[tuple[np.dtype, int], list[np.ndarray]] = {}


def _capacity(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def acquire(dtype: np.dtype, n: int) -> np.ndarray:
    """A buffer of at least ``n`` elements of ``dtype``; give it back with :func:`release`."""
    key = (np.dtype(dtype), _capacity(n))
    free = _FREE.get(key)
    if free:
        return free.pop()
    return np.empty(key[1], dtype=key[0])


def release(buf: np.ndarray) -> None:
    """Return a buffer obtained from :func:`acquire` for later calls."""
    _FREE.setdefault((buf.dtype, buf.size), []).append(buf)


def clear() -> None:
    """Drop every cached buffer (frees the memory once no operation holds one)."""
    _FREE.clear()
