"""Elementwise reduction kernels used by the collectives: in place, no allocation.

The kernels accept 1-D float32 or float64 arrays (one compiled specialisation per dtype).
They are plain loops so LLVM vectorises them; ``fastmath`` is off on purpose so the
result of a sum does not depend on how the loop was vectorised.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def add_into(dst: np.ndarray, src: np.ndarray) -> None:  # pragma: no cover - compiled
    """``dst[i] += src[i]`` for ``i < len(dst)``; ``src`` may be longer than ``dst``."""
    for i in range(dst.shape[0]):
        dst[i] += src[i]


@njit(cache=True, nogil=True)
def add_to(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:  # pragma: no cover
    """``out[i] = a[i] + b[i]`` for ``i < len(out)``; ``out`` must not overlap ``a`` or ``b``
    (then LLVM vectorises the loop; an output aliasing an input halves its speed)."""
    for i in range(out.shape[0]):
        out[i] = a[i] + b[i]


@njit(cache=True, nogil=True)
def scale_inplace(buf: np.ndarray, factor: float) -> None:  # pragma: no cover - compiled
    """``buf[i] *= factor``, with ``factor`` rounded to the dtype of ``buf`` first."""
    f = buf.dtype.type(factor)
    for i in range(buf.shape[0]):
        buf[i] *= f


def warm_up() -> None:
    """Compile (or load from the cache) every specialisation the collectives use."""
    for dtype in (np.float32, np.float64):
        a = np.zeros(1, dtype=dtype)
        add_into(a, a)
        add_to(np.zeros(1, dtype=dtype), a, a)
        scale_inplace(a, 1.0)
