"""Where a gradient is computed: this rank's part of a batch → the flat gradient buffer.

Thin front end over a model's kernels (:class:`~mpitrain.models.BoundModel`): one call per
step that also writes the message tail (the model's ``step_kernel`` when it has one), or,
for ``--overlap``, forward once and then backward layer by layer so each layer's slice can
be reduced while the layers below are computed. It owns the preallocated workspace so the
step loop allocates nothing.
"""

from __future__ import annotations

import numpy as np

from .bound import BoundModel


class BatchGradient:
    """Gradient SUM over a set of rows, written into ``out[:model.size]``."""

    def __init__(self, model: BoundModel, *, max_rows: int, dtype: np.dtype) -> None:
        self.model = model
        self.spec = model.spec
        self.n = model.size
        self.max_rows = max(1, max_rows)
        self.work = model.workspace(self.max_rows, np.dtype(dtype))
        self._step = model.hook("step_kernel")
        self._forward = model.hook("forward_kernel")
        self._backward = model.hook("backward_kernel")
        self.buckets = model.model.buckets(**model.counts) if model.can_split else []
        self.layers = len(self.buckets)
        self._touched = model.hook("touched_kernel")
        #: elements per input feature of the row block :meth:`touched` reports on (0: none)
        self.row_width = (int(model.model.row_width(**model.counts))
                          if self._touched is not None else 0)
        self.n_features = model.counts["n_features"]
        self._mark = np.zeros(0, dtype=np.uint8)
        self._columns = np.zeros(0, dtype=np.int64)
        self._rows_step = model.hook("rows_step_kernel")
        # per message buffer (by address): the rows its block may be non-zero in, and how
        # many (:meth:`step_rows`)
        self._held: dict[int, list] = {}

    def compute(self, params: np.ndarray, out: np.ndarray, X: np.ndarray, y: np.ndarray,
                rows: np.ndarray) -> tuple[float, float]:
        """Write the summed gradient of ``rows`` into ``out``; return (loss sum, correct)."""
        return self.model.gradient(params, out, X, y, rows, self.work)

    def step(self, params: np.ndarray, message: np.ndarray, X: np.ndarray, y: np.ndarray,
             rows: np.ndarray) -> None:
        """Gradient into ``message[:n]`` and ``message[n:n+3] = loss, correct, rows``."""
        if self._step is not None:
            self._step(params, message, X, y, rows, self.work, self.spec)
            return
        loss, correct = self.model.gradient(params, message, X, y, rows, self.work)
        n = self.n
        message[n] = loss
        message[n + 1] = correct
        message[n + 2] = rows.size

    def forward(self, params: np.ndarray, message: np.ndarray, X: np.ndarray, y: np.ndarray,
                rows: np.ndarray) -> None:
        """Split step, first part: forward, head and tail; then :meth:`backward` per layer."""
        self._forward(params, message, X, y, rows, self.work, self.spec)

    def backward(self, params: np.ndarray, message: np.ndarray, nrows: int,
                 layer: int) -> None:
        """Split step: layer ``layer``'s gradient (top layer first, down to 0)."""
        self._backward(params, message, nrows, layer, self.work, self.spec)

    def layer_slice(self, layer: int) -> tuple[int, int]:
        """(start, stop) of layer ``layer``'s parameters in the flat buffer."""
        return self.buckets[layer]

    def touched(self, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The rows of the row block (one per input feature) a step on ``X[rows]`` can make
        non-zero, sorted and distinct (only for a model with a ``touched_kernel``)."""
        if self._mark.size != self.n_features:  # (allocated on first use)
            self._mark = np.zeros(self.n_features, dtype=np.uint8)
            self._columns = np.zeros(self.n_features, dtype=np.int64)
        count = self._touched(X, rows, self._mark, self._columns)
        return self._columns[:count]

    def step_rows(self, params: np.ndarray, message: np.ndarray, X: np.ndarray,
                  y: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """:meth:`step` then :meth:`touched` (distinct, in any order), in time that grows
        with the batch, not with the row block, when the model has a ``rows_step_kernel``:
        only the rows the previous call wrote into this same ``message`` are zeroed.

        So between two calls on a buffer nothing else may write its row block (a reduction
        that leaves its result there) unless :meth:`forget` is called."""
        if self._rows_step is None:
            self.step(params, message, X, y, rows)
            return self.touched(X, rows)
        if self._mark.size != self.n_features:
            self._mark = np.zeros(self.n_features, dtype=np.uint8)
        key = message.__array_interface__["data"][0]
        held = self._held.get(key)
        if held is None:  # (first use of this buffer: its whole block is zeroed)
            held = self._held[key] = [np.zeros(self.n_features, dtype=np.int64), -1]
        count = self._rows_step(params, message, X, y, rows, self.work, self.spec, self._mark,
                                held[0], held[1])
        held[1] = count
        return held[0][:count]

    def holding(self, message: np.ndarray, rows: np.ndarray) -> None:
        """Something else wrote ``message`` (filled by :meth:`step_rows`) and it is now zero
        outside ``rows`` (an in-place reduction; repeats allowed): zero those next time."""
        held = self._held.get(message.__array_interface__["data"][0])
        if held is not None:
            buf = held[0]
            if rows.base is not buf or (rows.__array_interface__["data"][0]
                                        != buf.__array_interface__["data"][0]):
                buf[: rows.size] = rows  # (else they are there: a reduction that appended
            held[1] = rows.size  # the other ranks' rows to the ones step_rows returned)

    def forget(self) -> None:
        """Something else wrote the messages :meth:`step_rows` fills: zero their whole
        block next time."""
        for held in self._held.values():
            held[1] = -1

    def max_touched(self, X: np.ndarray) -> int:
        """At most how many rows :meth:`touched` reports for one step on this rank's CSR
        rows ``X``: the most rows of a step times the most non-zeros of a row (at most
        ``n_features``)."""
        indptr = getattr(X, "indptr", None)
        if indptr is None:
            return self.n_features
        widest = int(np.diff(indptr).max()) if len(indptr) > 1 else 0
        return min(self.n_features, self.max_rows * widest)
