"""Synchronous data parallelism: every step, every rank adds the gradient of its part of the
global batch, one allreduce sums gradients and counts, and every rank applies the same update.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI

from ..batches import EpochPlan, epoch_plan, steps_per_epoch
from ..data import Shard
from ..errors import shared_error
from ..evaluation import Evaluator, summarize
from ..gradients import BatchGradient
from ..models import Layout
from ..optimizers import Optimizer
from ..schedules import learning_rate
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
    message: np.ndarray = field(init=False)
    _plan: EpochPlan | None = field(init=False, default=None)
    _plan_epoch: int = field(init=False, default=-1)
    _sums: list[float] = field(init=False, default_factory=lambda: [0.0, 0.0, 0.0])

    def __post_init__(self) -> None:
        self.message = np.zeros(self.layout.size + TAIL, dtype=self.params.dtype)

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
        n = self.layout.size
        loss, correct = self.gradient.compute(self.params, self.message, self.train.X,
                                              self.train.y, rows)
        with np.errstate(over="ignore"):  # too big for the dtype: inf, which apply() reports
            self.message[n] = loss
        self.message[n + 1] = correct
        self.message[n + 2] = len(rows)

    def apply(self, unit: Unit) -> None:
        n = self.layout.size
        loss, correct, count = self.message[n:n + 3]
        if not math.isfinite(loss):
            raise shared_error(f"training diverged: the loss is {float(loss)} at step "
                               f"{unit.index + 1} (epoch {unit.period + 1}); try a smaller "
                               "--lr; the last good checkpoint is kept")
        lr = learning_rate(self.lr_schedule, self.lr, step=unit.index,
                           total_steps=self.total_units, epoch=unit.period,
                           step_epochs=self.lr_step_epochs, gamma=self.lr_gamma)
        self.optimizer.apply(self.params, self.message, scale=1.0 / float(count), lr=lr)
        sums = self._sums
        sums[0] += float(loss)
        sums[1] += float(correct)
        sums[2] += float(count)

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
