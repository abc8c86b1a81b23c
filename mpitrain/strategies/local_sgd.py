"""Local SGD (Stich 2019) and post-local SGD (Lin et al. 2020): ``--mode local-sgd``.

Each rank takes ``H = --sync-every`` optimizer steps on its own part of each global batch
(the rows :mod:`mpitrain.data.batches` gives it, so the data order does not depend on the
mode), then ONE allreduce averages the ranks' parameters and optimizer state, weighted by
the rows each rank trained on since the last average. Averages also happen at the end of
every epoch (the model is evaluated and saved complete) and at checkpoint steps
(``--checkpoint-every``), so checkpoints hold one model, like sync's. ``--local-after E``
runs the first E epochs as ``--mode sync`` (post-local SGD).

Exact special case: with ``H = 1`` and plain SGD, the row-weighted average of the ranks'
``θ - lr (g_r / n_r + λθ)`` is ``θ - lr (Σ g_r / Σ n_r + λθ)``, the synchronous step, so
``--sync-every 1`` equals ``--mode sync`` up to float rounding (tested to 1e-9 in float64).
Stop votes travel in the averaging message (a stop waits at most ``H`` steps); staleness
is reported as the local steps a gradient was taken after the last average (0..H-1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np

from mpitrain.asynchronous.staleness import Staleness
from mpitrain.collectives import Allreducer
from mpitrain.errors import shared_error

from .base import StopRequested, Unit, voted
from .sync import TAIL, SyncStrategy, reduce_header, reduce_report

if TYPE_CHECKING:
    from mpitrain.config import TrainConfig

# Tail of the averaging message after the weighted parameters and optimizer state.
LOSS, CORRECT, ROWS, WEIGHT, STOP = range(5)
AVERAGE_TAIL = 5


@dataclass(kw_only=True)
class LocalSGDStrategy(SyncStrategy):
    """Local steps, a row-weighted parameter average every ``sync_every`` steps."""

    options = ("sync_every", "local_after", "straggler")

    sync_every: int = 1
    local_after: int = 0
    checkpoint_every: int = 0
    _average: Allreducer = field(init=False)
    _averaged: np.ndarray = field(init=False)  # the last reduced averaging message
    _local: np.ndarray = field(init=False)  # this rank's gradient message of a local step
    _since: np.ndarray = field(init=False)  # loss, correct, rows since the last average
    _local_steps: int = field(init=False, default=0)  # since the last average
    _vote: bool = field(init=False, default=False)
    _staleness: Staleness = field(init=False, default_factory=Staleness)

    @classmethod
    def mode_fields(cls, config: TrainConfig) -> dict[str, Any]:
        return {"sync_every": config.sync_every, "local_after": config.local_after,
                "checkpoint_every": config.checkpoint_every}

    def __post_init__(self) -> None:
        if self.local_after > 0:
            super().__post_init__()  # the synchronous step's reduction (--local-after epochs)
        else:  # (none: no windows, no tuning for a reduction that never runs)
            self._n = self.layout.size
            self._owned = self.params
        n = self._n
        self._local = np.zeros(n + TAIL, dtype=self.params.dtype)
        if self._reducer is None:
            self._result = self._local
        self._since = np.zeros(3)
        state = len(self.optimizer.state)
        # --tune as for sync's step: on an oversubscribed node the table's shared-memory ring
        # (waiting 2(P-1) times a piece, each wait a context switch) cost 1.6x the CPU time
        # of the measured choice, the slot sum (module docstring of collectives.select)
        self._average = Allreducer((1 + state) * n + AVERAGE_TAIL, self.params.dtype,
                                   self.comm, algorithm=self.reduce_algorithm,
                                   shared_memory=self.shared_memory, tune=self.tune)

    # -- which steps do what -----------------------------------------------------------------
    def synchronous(self, unit: Unit) -> bool:
        """A step of plain synchronous SGD (the first --local-after epochs)."""
        return unit.period < self.local_after

    def averages_after(self, unit: Unit) -> bool:
        """Whether the ranks average their models after this step."""
        return ((unit.step + 1) % self.sync_every == 0 or unit.period_end
                or self._checkpoint_due(unit))

    def _checkpoint_due(self, unit: Unit) -> bool:
        return self.checkpoint_every > 0 and (unit.index + 1) % self.checkpoint_every == 0

    # -- the loop's hooks --------------------------------------------------------------------
    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        if self.synchronous(unit):
            super().contribute(unit, stop_requested)
            return
        self.local_step(unit)
        if self.averages_after(unit):
            self._vote = stop_requested()

    def local_step(self, unit: Unit) -> None:
        """One optimizer step on this rank's rows of the step's global batch."""
        rows = self._rows(unit)
        self._staleness.add(float(self._local_steps))
        self._local_steps += 1
        if rows.size == 0:  # nothing here this step: keep the step count in line
            self.optimizer.steps += 1
            return
        train, message, n = self.train, self._local, self._n
        started = perf_counter()
        self.gradient.step(self.params, message, train.X, train.y, rows)
        self.straggler.slow_down(started)
        self.optimizer.apply(self.params, message, scale=1.0 / rows.size,
                             lr=self.learning_rate(unit))
        with np.errstate(over="ignore", invalid="ignore"):
            self._since += message[n:n + 3]

    def reduce(self, unit: Unit) -> bool:
        if self.synchronous(unit):
            return super().reduce(unit)
        if not self.averages_after(unit):
            return False
        return self.average(self._vote)

    def average(self, vote: bool) -> bool:
        """Collective: the row-weighted average of every rank's model and optimizer state
        (into :attr:`_averaged`); True when any rank voted to stop."""
        n = self._n
        message = self._average.buffer()
        weight = float(self._since[2])
        parts = [self.params, *self.optimizer.state.values()]
        for i, part in enumerate(parts):
            np.multiply(part, weight, out=message[i * n:(i + 1) * n])
        tail = message[len(parts) * n:]
        tail[LOSS:ROWS + 1] = self._since
        tail[WEIGHT] = weight
        tail[STOP] = 1.0 if vote else 0.0
        self._averaged = self._average()
        return voted(self._averaged)

    def apply(self, unit: Unit) -> None:
        if self.synchronous(unit):
            super().apply(unit)
            self._staleness.add(0.0)
            return
        if self.averages_after(unit):
            self.take_average(unit)

    def take_average(self, unit: Unit) -> None:
        """Every rank continues from the averaged model (the same bits on every rank)."""
        n = self._n
        parts = [self.params, *self.optimizer.state.values()]
        result = self._averaged
        tail = result[len(parts) * n:]
        loss = float(tail[LOSS])
        if not np.isfinite(loss) or not np.isfinite(result[:n]).all():
            raise shared_error(f"training diverged: the loss is {loss} at step "
                               f"{unit.index + 1} (epoch {unit.period + 1}); try a smaller "
                               "--lr; the last good checkpoint is kept")
        scale = 1.0 / float(tail[WEIGHT])
        for i, part in enumerate(parts):
            np.multiply(result[i * n:(i + 1) * n], scale, out=part)
        self._sums[0] += loss
        self._sums[1] += float(tail[CORRECT])
        self._sums[2] += float(tail[ROWS])
        self._since[:] = 0.0
        self._local_steps = 0

    def evaluate(self, unit: Unit) -> dict[str, Any]:
        return {**super().evaluate(unit), **self._staleness.take()}

    def summary(self) -> dict[str, Any]:
        """Sync's summary, with the averaging reduction's section (``average``)."""
        return {**super().summary(), "average": reduce_report(self._average)}

    def header(self) -> str | None:
        if self.comm.Get_size() == 1:
            return None
        average = reduce_header(reduce_report(self._average)).replace(
            "step message", "averaging message")
        return "\n".join(line for line in (super().header(), average) if line)

    def close(self) -> None:
        self._average.close()
        super().close()

    # -- checkpoints (always written right after an average) -------------------------------
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = super().checkpoint_state()
        return arrays, {**meta, "staleness_sums": self._staleness.state()}

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().restore_state(arrays, meta)
        self._staleness.restore(meta["staleness_sums"])
