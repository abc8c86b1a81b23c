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

The reductions are a persistent :class:`~mpitrain.collectives.Allreducer` with
``in_flight=s``: on one node (``--reduce auto`` or ``shm``, shared memory allowed) the
slot sum with ``2s + 1`` slots per rank, which needs no MPI call to progress and sums in
rank order (the bits of ``--reduce shm``'s blocking sum); otherwise (``--no-shared-memory``,
``--stall-timeout``, several nodes, ``--reduce ring|mpi|root``) MPI's nonblocking
reductions on ``s + 1`` buffers, which MPICH moves only inside MPI calls (so every
``contribute`` tests them).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np

from mpitrain.asynchronous.staleness import Staleness
from mpitrain.collectives import AllreduceHandle, Allreducer
from mpitrain.collectives.handles import DoneHandle
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
    # started reductions: (step, handle, updates applied when the step's gradient was read)
    # (a DoneHandle of the sum once completed, at a stop or checkpoint, until it is due)
    _pending: deque[tuple[Unit, AllreduceHandle, int]] = field(
        init=False, default_factory=deque)
    _ready: list[tuple[Unit, np.ndarray, int]] = field(init=False, default_factory=list)
    _applied: int = field(init=False, default=0)  # updates applied by this process
    _stopping: bool = field(init=False, default=False)
    _staleness: Staleness = field(init=False, default_factory=Staleness)

    @classmethod
    def validate(cls, config: TrainConfig) -> None:
        if config.staleness > 0 and config.reduce == "hierarchical":
            raise UserError(f"--mode ssp --staleness {config.staleness} starts nonblocking "
                            "reductions, which --reduce hierarchical does not have; use "
                            "--reduce auto, shm, ring, mpi or root")

    @classmethod
    def mode_fields(cls, config: TrainConfig) -> dict[str, Any]:
        return {"staleness": config.staleness, "checkpoint_every": config.checkpoint_every}

    def __post_init__(self) -> None:
        if self.staleness == 0:
            super().__post_init__()
            return
        self._n = self.layout.size
        self._owned = self.params
        self._reducer = Allreducer(self._n + TAIL, self.params.dtype, self.comm,
                                   algorithm=self.reduce_algorithm,
                                   shared_memory=self.shared_memory,
                                   in_flight=self.staleness)
        self._result = self._reducer.buffer()  # (the first step's message)

    def _message_bytes(self) -> int:
        if self.staleness == 0:
            return super()._message_bytes()
        return self._result.nbytes * (self.staleness + 1)  # the sums kept until applied

    # -- the loop's hooks --------------------------------------------------------------------
    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        if self.staleness == 0:
            super().contribute(unit, stop_requested)
            return
        rows = self._rows(unit)
        message = self._reducer.buffer()
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
        self._pending.append((unit, self._reducer.start(), self._applied))
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
                result = pending.wait()  # (kept until step s + 1 later writes its message)
                if stopping:  # their stop votes are answered by this stop
                    result[-1] = 0.0
                self._pending[i] = (step, DoneHandle(result), read)
        return stopping

    def _finish_oldest(self) -> bool:
        step, handle, read = self._pending.popleft()
        result = handle.wait()
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
        for i, (_, handle, _) in enumerate(self._pending):
            pending[i] = handle.wait()
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
            self._pending.append((Unit(int(index), epoch, step, step == steps - 1),
                                  DoneHandle(arrays["pending"][i].copy()),
                                  self._applied - int(late)))
