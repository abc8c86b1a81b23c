"""Stale-synchronous parallel SGD (SSP, Ho et al. 2013) with a fixed, bounded delay.

Every step is the synchronous step (each rank's part of the global batch, one summed
message), but the reduction is nonblocking and its result is applied ``s = --staleness``
steps later: a rank starts step ``t``'s reduction and goes on computing steps ``t+1 ..
t+s`` without waiting; before step ``t+s+1`` it waits for step ``t``'s sum and applies it.
So a rank can be at most ``s`` steps ahead of the slowest rank (it cannot finish step
``t+s`` before everyone has contributed step ``t``), a slow step of one rank (jitter) is
absorbed by the others' slack, and every gradient is applied exactly ``s`` updates late
(fewer at the start of an epoch: at the end of each epoch every pending sum is applied, so
the evaluated model is complete). At a checkpoint or a stop the reductions in flight are
completed but applied only when due, and the checkpoint holds them: a resumed run is the
uninterrupted run, bit for bit, and checkpoints do not change the trajectory.

The delay is fixed rather than "whatever has arrived", so every rank applies the same
updates in the same order: the run is deterministic and reproducible bit for bit on the
same number of ranks, and ``--staleness 0`` *is* ``--mode sync`` (same code path, same
bits). Stop votes travel in the messages, so a stop is agreed ``s`` steps after it is cast.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np

from mpitrain.asynchronous.staleness import Staleness
from mpitrain.collectives import AllreduceHandle, start_allreduce
from mpitrain.errors import UserError

from .base import StopRequested, Unit, vote, voted
from .sync import TAIL, SyncStrategy

if TYPE_CHECKING:
    from mpitrain.config import TrainConfig


@dataclass(kw_only=True)
class StaleSynchronousStrategy(SyncStrategy):
    """SSP with staleness ``s`` (module docstring); ``s = 0`` is :class:`SyncStrategy`."""

    options = ("staleness", "straggler")

    staleness: int = 0
    checkpoint_every: int = 0
    _messages: list[np.ndarray] = field(init=False, default_factory=list)
    # started reductions: (step, handle, updates applied when the step's gradient was read)
    # (None once completed, at a stop or checkpoint, until its result is due)
    _pending: deque[tuple[Unit, AllreduceHandle | None, int]] = field(
        init=False, default_factory=deque)
    _ready: list[tuple[Unit, np.ndarray, int]] = field(init=False, default_factory=list)
    _applied: int = field(init=False, default=0)  # updates applied by this process
    _stopping: bool = field(init=False, default=False)
    _staleness: Staleness = field(init=False, default_factory=Staleness)

    @classmethod
    def validate(cls, config: TrainConfig) -> None:
        if config.staleness > 0 and config.reduce == "shm":
            raise UserError(f"--mode ssp --staleness {config.staleness} overlaps nonblocking "
                            "reductions, which --reduce shm does not have; use --reduce auto, "
                            "ring, mpi or root")

    @classmethod
    def mode_fields(cls, config: TrainConfig) -> dict[str, Any]:
        return {"staleness": config.staleness, "checkpoint_every": config.checkpoint_every}

    def __post_init__(self) -> None:
        if self.staleness == 0:
            super().__post_init__()
            return
        self._n = self.layout.size
        self._owned = self.params
        self._messages = [np.zeros(self._n + TAIL, dtype=self.params.dtype)
                          for _ in range(self.staleness + 1)]
        self._result = self._messages[0]

    def _message_bytes(self) -> int:
        if self.staleness == 0:
            return super()._message_bytes()
        return sum(message.nbytes for message in self._messages)

    # -- the loop's hooks --------------------------------------------------------------------
    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        if self.staleness == 0:
            super().contribute(unit, stop_requested)
            return
        rows = self._rows(unit)
        message = self._slot(unit.index)
        train = self.train
        started = perf_counter()
        self.gradient.step(self.params, message, train.X, train.y, rows)
        self.straggler.slow_down(started)
        for _, handle, _ in self._pending:  # MPICH progresses only inside MPI calls
            if handle is not None:
                handle.test()
        vote(message, stop_requested)

    def reduce(self, unit: Unit) -> bool:
        if self.staleness == 0:
            return super().reduce(unit)
        handle = start_allreduce(self._slot(unit.index), self.comm,
                                 algorithm=self.reduce_algorithm, op="sum")
        self._pending.append((unit, handle, self._applied))
        stopping = False
        if len(self._pending) > self.staleness:
            stopping = self._finish_oldest()
        if unit.period_end:
            while self._pending:  # drain: the epoch's model is complete after apply
                self._finish_oldest()
        elif stopping or self._checkpoint_due(unit):
            # complete the reductions in flight but apply them when they are due, as an
            # uninterrupted run does: the checkpoint holds them (exact resume)
            for i, (step, pending, read) in enumerate(self._pending):
                self._complete(step, pending)
                if stopping:  # their stop votes are answered by this stop
                    self._slot(step.index)[-1] = 0.0
                self._pending[i] = (step, None, read)
        return stopping

    def _slot(self, index: int) -> np.ndarray:
        """The message of step ``index`` (kept until it is applied)."""
        return self._messages[index % len(self._messages)]

    def _complete(self, step: Unit, handle: AllreduceHandle | None) -> np.ndarray:
        slot = self._slot(step.index)
        if handle is not None:
            result = handle.wait()
            if result is not slot:
                slot[...] = result
        return slot

    def _finish_oldest(self) -> bool:
        step, handle, read = self._pending.popleft()
        result = self._complete(step, handle)
        self._ready.append((step, result, read))
        return voted(result)

    def _checkpoint_due(self, unit: Unit) -> bool:
        return self.checkpoint_every > 0 and (unit.index + 1) % self.checkpoint_every == 0

    def apply(self, unit: Unit) -> None:
        if self.staleness == 0:
            super().apply(unit)
            self._staleness.add(0.0)
            return
        for step, message, read in self._ready:
            self._staleness.add(float(self._applied - read))
            self.apply_message(message, step)
            self._applied += 1
        self._ready.clear()

    def evaluate(self, unit: Unit) -> dict[str, Any]:
        return {**super().evaluate(unit), **self._staleness.take()}

    def close(self) -> None:
        while self._pending:  # nothing left normally: the last unit ends an epoch
            self._finish_oldest()
        self._ready.clear()
        super().close()

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Sync's state plus the reduced messages not applied yet (completed before any
        checkpoint) and when each gradient was read, so a resumed run is exact."""
        arrays, meta = super().checkpoint_state()
        if self.staleness == 0:
            return arrays, {**meta, "staleness_sums": self._staleness.state()}
        pending = np.zeros((self.staleness, self._n + TAIL), dtype=self.params.dtype)
        for i, (step, _, _) in enumerate(self._pending):
            pending[i] = self._slot(step.index)
        arrays["pending"] = pending
        return arrays, {**meta, "staleness_sums": self._staleness.state(),
                        "pending_steps": [step.index for step, _, _ in self._pending],
                        "pending_staleness": [self._applied - read
                                              for _, _, read in self._pending]}

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().restore_state(arrays, meta)
        self._staleness.restore(meta["staleness_sums"])
        if self.staleness == 0:
            return
        self._pending.clear()
        steps = self.steps_per_epoch
        for i, (index, late) in enumerate(zip(meta["pending_steps"],
                                              meta["pending_staleness"], strict=True)):
            epoch, step = divmod(int(index), steps)
            self._slot(int(index))[...] = arrays["pending"][i]
            self._pending.append((Unit(int(index), epoch, step, step == steps - 1), None,
                                  self._applied - int(late)))
