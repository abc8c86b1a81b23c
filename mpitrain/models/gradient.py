"""Where a gradient is computed: this rank's part of a batch → the flat gradient buffer.

Thin front end over the numba kernels: ``mpitrain.kernels.network.network_grad`` (fused forward +
backward) and its pieces in ``mpitrain.kernels.backward`` (one call per step that also writes the
message tail; or forward once, then backward layer by layer so each layer's slice can be
reduced while the layers below are computed). It owns the preallocated workspace so the
step loop allocates nothing.
"""

from __future__ import annotations

import numpy as np

from mpitrain.kernels.backward import backward_layer, forward_loss, layer_slice, step_gradient
from mpitrain.kernels.network import network_grad, workspace_size
from mpitrain.models import Layout


class BatchGradient:
    """Gradient SUM over a set of rows, written into ``out[:layout.size]``."""

    def __init__(self, layout: Layout, *, loss_kind: int, max_rows: int,
                 dtype: np.dtype) -> None:
        self.dims = layout.dims_array
        self.loss_kind = loss_kind
        self.max_rows = max(1, max_rows)
        self.layers = len(layout.dims) - 1
        self.work = np.empty(workspace_size(layout.dims, self.max_rows), dtype=dtype)

    def compute(self, params: np.ndarray, out: np.ndarray, X: np.ndarray, y: np.ndarray,
                rows: np.ndarray) -> tuple[float, float]:
        """Write the summed gradient of ``rows`` into ``out``; return (loss sum, correct)."""
        return network_grad(params, out, self.dims, self.loss_kind, X, y, rows, self.work)

    def step(self, params: np.ndarray, message: np.ndarray, X: np.ndarray, y: np.ndarray,
             rows: np.ndarray) -> None:
        """Gradient into ``message[:n]`` and ``message[n:n+3] = loss, correct, rows``:
        one kernel call (the same numbers as :meth:`compute`)."""
        step_gradient(params, message, self.dims, self.loss_kind, X, y, rows, self.work)

    def forward(self, params: np.ndarray, message: np.ndarray, X: np.ndarray, y: np.ndarray,
                rows: np.ndarray) -> None:
        """Split step, first part: forward, head and tail; then :meth:`backward` per layer."""
        forward_loss(params, message, self.dims, self.loss_kind, X, y, rows, self.work)

    def backward(self, params: np.ndarray, message: np.ndarray, nrows: int,
                 layer: int) -> None:
        """Split step: layer ``layer``'s gradient (top layer first, down to 0)."""
        backward_layer(params, message, self.dims, self.work, nrows, layer)

    def layer_slice(self, layer: int) -> tuple[int, int]:
        """(start, stop) of layer ``layer``'s parameters in the flat buffer."""
        start, stop = layer_slice(self.dims, layer)
        return int(start), int(stop)
