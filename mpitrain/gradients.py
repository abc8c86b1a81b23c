"""Where a gradient is computed: this rank's part of a batch → the flat gradient buffer.

Thin front end over the fused numba kernel ``kernels.network.network_grad``: it owns the
preallocated workspace so the step loop allocates nothing.
"""

from __future__ import annotations

import numpy as np

from kernels.network import network_grad, workspace_size

from .models import Layout


class BatchGradient:
    """Gradient SUM over a set of rows, written into ``out[:layout.size]``."""

    def __init__(self, layout: Layout, *, loss_kind: int, max_rows: int,
                 dtype: np.dtype) -> None:
        self.dims = layout.dims_array
        self.loss_kind = loss_kind
        self.max_rows = max(1, max_rows)
        self.work = np.empty(workspace_size(layout.dims, self.max_rows), dtype=dtype)

    def compute(self, params: np.ndarray, out: np.ndarray, X: np.ndarray, y: np.ndarray,
                rows: np.ndarray) -> tuple[float, float]:
        """Write the summed gradient of ``rows`` into ``out``; return (loss sum, correct)."""
        return network_grad(params, out, self.dims, self.loss_kind, X, y, rows, self.work)
