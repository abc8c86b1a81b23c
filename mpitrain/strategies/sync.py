"""Synchronous data parallelism: every step, every rank adds the gradient of its part of the
global batch, one allreduce sums gradients and counts, and every rank applies the same update.

Per step the Python side makes one kernel call (gradient + tail), one collective and one
optimizer call; everything else is preallocated (the loop runs next to a ~150 us kernel, so
microseconds matter). Two variants of the reduction:

- ``overlap``: forward once, then backward layer by layer from the top; as soon as a
  layer's gradient is in its slice of the message, a nonblocking allreduce of that slice
  starts (the top slice carries the tail too), in the same fixed order on every rank, and
  ``reduce`` waits for them all. Same sums as the plain path (exactly for ``mpi`` and any
  algorithm on 2 ranks; up to float rounding order for ``ring`` on more ranks).
- ``compress``: the message crosses the network as 16-bit words
  (:mod:`mpitrain.collectives.compressed`).

Otherwise one allreduce of the whole message with ``reduce_algorithm``; except that with
``auto`` and every rank on one node (``shared_memory``), the kernel writes the message
straight into this rank's slot of a shared-memory window and the ranks sum the slots
(:mod:`mpitrain.collectives.slot_sum`): ``message`` is then that slot during ``contribute`` and the
private result after ``reduce``. One rank skips the reduction altogether.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.compressed import CompressedAllreduce
from mpitrain.collectives.shared_memory import single_node
from mpitrain.collectives.slot_sum import SharedMemoryAllreduce
from mpitrain.data.batches import EpochPlan, epoch_plan, steps_per_epoch
from mpitrain.models.gradient import BatchGradient
from mpitrain.optimizers import Optimizer, learning_rate

from ..collectives import AllreduceHandle, start_allreduce
from ..data import Shard
from ..errors import shared_error
from ..evaluation import Evaluator, summarize
from ..models import Layout
from .base import Strategy, Unit

TAIL = 4  # loss sum, correct count, row count, stop flag


@dataclass(kw_only=True)
class SyncStrategy(Strategy):
    """Plain data-parallel SGD over the global batch; exact for any number of ranks."""

    comm: MPI.Comm
    layout: Layout
    params: np.ndarray
    optimizer: Optimizer
    gradient: BatchGradient
    train: Shard
    test: Evaluator | None
    train_label_stats: tuple[float, float] | None
    epochs: int
    batch_size: int
    shuffle: str
    seed: int
    lr: float
    lr_schedule: str = "constant"
    lr_step_epochs: int = 10
    lr_gamma: float = 0.1
    reduce_algorithm: str = "auto"
    compress: str = "none"
    overlap: bool = False
    shared_memory: bool = True
    stop_flag_first: bool = field(init=False, default=False)  # True with overlap (below)
    message: np.ndarray = field(init=False)
    _plan: EpochPlan | None = field(init=False, default=None)
    _plan_epoch: int = field(init=False, default=-1)
    _sums: list[float] = field(init=False, default_factory=lambda: [0.0, 0.0, 0.0])
    _n: int = field(init=False, default=0)
    _buckets: list[tuple[int, np.ndarray]] = field(init=False, default_factory=list)
    _handles: list[AllreduceHandle] = field(init=False, default_factory=list)
    _reducer: CompressedAllreduce | None = field(init=False, default=None)
    _shared: SharedMemoryAllreduce | None = field(init=False, default=None)
    _result: np.ndarray = field(init=False)
    _alone: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._n = self.layout.size  # a computed property: not something to redo every step
        self.message = np.zeros(self._n + TAIL, dtype=self.params.dtype)
        self._result = self.message
        # With overlap the top slice (holding the tail) is reduced during contribute, so
        # the loop must write the stop flag before it: a stop signal that arrives during a
        # step's computation is then seen one step later than without overlap.
        self.stop_flag_first = self.overlap
        if self.overlap:
            # (layer, slice of the message), top layer first; the top slice runs to the end
            # of the message so the tail (and the stop flag, written before contribute)
            # travels with the first reduction.
            layers = self.gradient.layers
            for layer in range(layers - 1, -1, -1):
                start, stop = self.gradient.layer_slice(layer)
                stop = self.message.size if layer == layers - 1 else stop
                self._buckets.append((layer, self.message[start:stop]))
        size = self.comm.Get_size()
        if self.compress != "none":
            self._reducer = CompressedAllreduce(self.comm, n=self._n, tail=TAIL,
                                                codec=self.compress, batch_size=self.batch_size)
        elif self.overlap:
            pass
        elif size == 1:
            self._alone = True  # the sum over one rank is the message itself
        elif (self.shared_memory and self.reduce_algorithm == "auto"
              and single_node(self.comm)):
            self._shared = SharedMemoryAllreduce(self.comm, n=self.message.size,
                                                 dtype=self.message.dtype)

    @property
    def steps_per_epoch(self) -> int:
        """Steps in one epoch (same on every rank)."""
        return steps_per_epoch(self.train.n_total, self.batch_size)

    @property
    def total_units(self) -> int:
        return self.epochs * self.steps_per_epoch

    def units(self, start: int) -> Iterator[Unit]:
        steps = self.steps_per_epoch
        for index in range(start, self.total_units):
            epoch, step = divmod(index, steps)
            yield Unit(index, epoch, step, step == steps - 1)

    def _rows(self, unit: Unit) -> np.ndarray:
        if unit.period != self._plan_epoch:
            self._plan = epoch_plan(shuffle=self.shuffle, seed=self.seed, epoch=unit.period,
                                    n_total=self.train.n_total, start=self.train.start,
                                    count=len(self.train.y), batch_size=self.batch_size)
            self._plan_epoch = unit.period
        return self._plan.rows(unit.step)

    def contribute(self, unit: Unit) -> None:
        rows = self._rows(unit)
        train = self.train
        if self._shared is not None:
            # write straight into this rank's shared slot (no copy); reduce() switches
            # ``message`` back to the private result (the loop re-reads the attribute)
            self.message = self._shared.next_slot()
        if not self.overlap:
            self.gradient.step(self.params, self.message, train.X, train.y, rows)
            return
        gradient, params, message = self.gradient, self.params, self.message
        gradient.forward(params, message, train.X, train.y, rows)
        nrows = rows.size
        handles = self._handles
        for layer, bucket in self._buckets:
            gradient.backward(params, message, nrows, layer)
            for handle in handles:  # MPICH progresses only inside MPI calls
                handle.test()
            handles.append(start_allreduce(bucket, self.comm,
                                           algorithm=self.reduce_algorithm, op="sum"))

    def reduce(self, unit: Unit) -> None:
        if self._shared is not None:
            self._shared.reduce_slot(self._result)
            self.message = self._result
        elif self._reducer is not None:
            self._reducer(self.message)
        elif self._alone:
            return
        elif self.overlap:
            for handle in self._handles:
                handle.wait()
            self._handles.clear()
        else:
            super().reduce(unit)

    def apply(self, unit: Unit) -> None:
        n = self._n
        message = self.message
        loss = float(message[n])
        if not math.isfinite(loss):
            raise shared_error(f"training diverged: the loss is {loss} at step "
                               f"{unit.index + 1} (epoch {unit.period + 1}); try a smaller "
                               "--lr; the last good checkpoint is kept")
        correct = float(message[n + 1])
        count = float(message[n + 2])
        lr = self.lr if self.lr_schedule == "constant" else learning_rate(
            self.lr_schedule, self.lr, step=unit.index, total_steps=self.total_units,
            epoch=unit.period, step_epochs=self.lr_step_epochs, gamma=self.lr_gamma)
        self.optimizer.apply(self.params, message, scale=1.0 / count, lr=lr)
        sums = self._sums
        sums[0] += loss
        sums[1] += correct
        sums[2] += count

    def close(self) -> None:
        if self._shared is not None:
            self.message = self._result  # not a view of the window any more
            self._shared.close()
            self._shared = None

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"params": self.params,
                  **{f"optimizer.{k}": v for k, v in self.optimizer.state.items()}}
        return arrays, {"optimizer_steps": self.optimizer.steps, "epoch_sums": self._sums}

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.params[...] = arrays["params"]
        for name, value in self.optimizer.state.items():
            value[...] = arrays[f"optimizer.{name}"]
        self.optimizer.steps = int(meta["optimizer_steps"])
        self._sums = [float(v) for v in meta["epoch_sums"]]

    def evaluate(self, unit: Unit) -> dict[str, Any]:
        loss, correct, count = self._sums
        self._sums = [0.0, 0.0, 0.0]
        metrics: dict[str, Any] = {"epoch": unit.period + 1, "step": unit.index + 1,
                                   "samples": round(count)}
        train = summarize(loss, correct, count, label_stats=self.train_label_stats)
        metrics.update({f"train_{key}": value for key, value in train.items()})
        if self.test is not None:
            test = self.test(self.params)
            metrics.update({f"test_{key}": value for key, value in test.items()})
        return metrics
