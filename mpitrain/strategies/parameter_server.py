"""Asynchronous parameter server: ``--mode async-ps`` (MXNet ``dist_async`` semantics).

Ranks ``0 .. S-1`` (``--servers S``) hold the parameters and the optimizer state, sharded
by contiguous ranges of the flat buffer; the other ``W`` ranks are workers and hold all the
training rows (:mod:`mpitrain.asynchronous.reshard` moves them off the servers). A worker
loops: compute the gradient of ``b = batch_size / W`` rows of its block at the parameters
it last pulled, push it to every server, pull the servers' new parameters. A server applies
each push as it arrives (the optimizer on its range, with learning rate
``lr × rows / batch_size``, so ``W`` pushes move the model as far as one synchronous step)
and answers with its range (:mod:`mpitrain.asynchronous.parameter_server`). Fast workers
push more often than slow ones: nobody waits for a straggler.

One unit of the loop is one epoch: as many pushes as it takes to use ``n_train`` rows
(``ceil(n_train / b)``). At its end every rank meets: one small allreduce (stop votes,
loss sums, staleness), the servers broadcast their ranges (parameters and optimizer state),
and the model is evaluated; checkpoints (``--checkpoint-every`` counts epochs here) hold
the servers' whole state. A stop signal on any rank ends the epoch early: its vote travels
with the next push or reply, and the workers finish at once.

Not exact: the order in which pushes arrive depends on timing, so two runs differ (a
resumed run too). ``--simulate-schedule`` makes the servers take pushes in a seeded order
(a straggler's pushes proportionally rarer), which is reproducible bit for bit on the same
number of ranks; that is what the tests check.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI

from mpitrain.asynchronous.parameter_server import (
    ShardServer,
    WorkerClient,
    server_ranges,
)
from mpitrain.asynchronous.reshard import reshard
from mpitrain.asynchronous.schedule import PushOrder
from mpitrain.asynchronous.staleness import Staleness
from mpitrain.asynchronous.straggler import Straggler, check_stragglers, parse_stragglers
from mpitrain.data.batches import SHUFFLE_STREAM, steps_per_epoch
from mpitrain.errors import agree, shared_error
from mpitrain.evaluation import Evaluator, label_stats
from mpitrain.models import BoundModel
from mpitrain.models.gradient import BatchGradient
from mpitrain.optimizers import Optimizer

from .base import StopRequested, Unit
from .sync import MinibatchStrategy, optimizer_for

if TYPE_CHECKING:
    from mpitrain.config import TrainConfig
    from mpitrain.data import Dataset

# The epoch's sums, reduced over all ranks.
LOSS, CORRECT, ROWS, PUSHES, STALE_SUM, STOP = range(6)
TAIL = 3  # the gradient message's tail: loss, correct, rows


@dataclass(kw_only=True)
class ParameterServerStrategy(MinibatchStrategy):
    """Servers apply the workers' gradients as they arrive (module docstring). The
    optimizer of the base holds full-size state on every rank, refreshed from the servers
    at each epoch's end; ``train`` is this worker's rows (empty on servers)."""

    unit_name = "epoch"
    options = ("servers", "straggler", "simulate_schedule")

    servers: int
    server_optimizer: Optimizer | None = None  # a server's: state for its range only
    simulate: bool = False
    speeds: tuple[float, ...] = ()  # of the workers, for --simulate-schedule
    _epoch_sums: np.ndarray = field(init=False)
    _worst: np.ndarray = field(init=False)
    _per_worker: np.ndarray = field(init=False)
    _pushes: int = field(init=False, default=0)  # applied over the whole run
    _comm: MPI.Comm = field(init=False)  # private duplicate for the protocol's messages

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def kernels(cls, config: TrainConfig, *, ranks: int) -> frozenset[str]:
        return frozenset({"step", "loss", config.optimizer})

    @classmethod
    def build(cls, config: TrainConfig, *, model: BoundModel, params: np.ndarray,
              dataset: Dataset, comm: MPI.Comm) -> ParameterServerStrategy:
        size = comm.Get_size()
        agree(comm, None if config.servers < size else
              f"--servers {config.servers} leaves no worker: the job has {size} ranks "
              f"(use --servers <= {size - 1} or more ranks)")
        agree(comm, check_stragglers(config.straggler, size))
        workers = size - config.servers
        ranges = server_ranges(model.layout.size, config.servers)
        train = reshard(dataset.train, comm, holders=range(config.servers, size))
        local_batch = max(1, -(-config.batch_size // workers))
        factors = {spec.rank: spec.factor for spec in parse_stragglers(config.straggler)}
        return cls(
            comm=comm, layout=model.layout, params=params,
            optimizer=optimizer_for(config, params),
            server_optimizer=(optimizer_for(config, params[slice(*ranges[comm.Get_rank()])])
                              if comm.Get_rank() < config.servers else None),
            gradient=BatchGradient(model, max_rows=min(local_batch, max(1, len(train.y))),
                                   dtype=params.dtype),
            train=train,
            test=(Evaluator(model, shard=dataset.test, comm=comm)
                  if dataset.test.n_total > 0 else None),
            train_label_stats=label_stats(train, comm) if model.regression else None,
            servers=config.servers, epochs=config.epochs, batch_size=config.batch_size,
            seed=config.seed, lr=config.lr, lr_schedule=config.lr_schedule,
            lr_step_epochs=config.lr_step_epochs, lr_gamma=config.lr_gamma,
            simulate=config.simulate_schedule,
            speeds=tuple(1.0 / factors.get(rank, 1.0)
                         for rank in range(config.servers, size)),
            straggler=Straggler.for_rank(config.straggler, rank=comm.Get_rank(),
                                         seed=config.seed))

    def __post_init__(self) -> None:
        self._comm = self.comm.Dup()
        rank, size = self.comm.Get_rank(), self.comm.Get_size()
        self._workers = list(range(self.servers, size))
        self._ranges = server_ranges(self.layout.size, self.servers)
        self._epoch_sums = np.zeros(6)
        self._worst = np.zeros(1)
        self._per_worker = np.zeros(len(self._workers), dtype=np.int64)
        self._staleness = Staleness()
        self._server: ShardServer | None = None
        self._worker: WorkerClient | None = None
        if rank < self.servers:
            lo, hi = self._ranges[rank]
            self._server = ShardServer(comm=self._comm, params=self.params, lo=lo, hi=hi,
                                       workers=self._workers, optimizer=self.server_optimizer)
        else:
            self._worker = WorkerClient(comm=self._comm, params=self.params,
                                        ranges=self._ranges)
            self._message = np.zeros(self.layout.size + TAIL, dtype=self.params.dtype)

    # -- sizes -------------------------------------------------------------------------------
    @property
    def local_batch(self) -> int:
        """Rows per push."""
        return max(1, -(-self.batch_size // len(self._workers)))

    @property
    def pushes_per_epoch(self) -> int:
        """Pushes that use as many rows as one epoch."""
        return steps_per_epoch(self.train.n_total, self.local_batch)

    @property
    def total_units(self) -> int:
        return self.epochs

    def units(self, start: int) -> Iterator[Unit]:
        for epoch in range(start, self.epochs):
            yield Unit(epoch, epoch, 0, True)

    # -- the loop's hooks --------------------------------------------------------------------
    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        self._epoch_sums[:] = 0.0
        self._worst[:] = 0.0
        self._per_worker[:] = 0
        if self._server is not None:
            self._serve(unit, stop_requested)
        else:
            self._work(unit, stop_requested)

    def _serve(self, unit: Unit, stop_requested: StopRequested) -> None:
        budget = self.pushes_per_epoch
        order = (PushOrder(seed=self.seed, epoch=unit.period, speeds=self.speeds)
                 if self.simulate else None)

        def lr_of(push: int, rows: float) -> float:
            rate = self.scheduled_lr(unit.period * budget + min(push, budget - 1),
                                     self.epochs * budget, unit.period)
            return rate * rows / self.batch_size

        log = self._server.serve_epoch(budget=budget, order=order,
                                       stop_requested=stop_requested, lr_of=lr_of)
        self._epoch_sums[STOP] = 1.0 if log.stop else 0.0
        if self.comm.Get_rank() == 0:  # every server saw the same pushes: count them once
            self._epoch_sums[PUSHES] = log.pushes
            self._epoch_sums[STALE_SUM] = log.staleness.total
            self._worst[0] = log.staleness.worst
            self._per_worker[:] = log.per_worker

    def _work(self, unit: Unit, stop_requested: StopRequested) -> None:
        worker, message, n = self._worker, self._message, self.layout.size
        worker.start_epoch()
        train = self.train
        rows_of = _row_stream(seed=self.seed, epoch=unit.period, start=train.start,
                              count=len(train.y), batch=self.local_batch)
        while True:
            rows = next(rows_of)
            started = perf_counter()
            self.gradient.step(self.params, message, train.X, train.y, rows)
            self.straggler.slow_down(started)
            with np.errstate(over="ignore", invalid="ignore"):
                self._epoch_sums[LOSS:ROWS + 1] += message[n:n + TAIL]
            stop = stop_requested()
            self._epoch_sums[STOP] = max(self._epoch_sums[STOP], 1.0 if stop else 0.0)
            if worker.push_pull(message, rows.size, stop):
                break
        worker.finish()

    def reduce(self, unit: Unit) -> bool:
        self.comm.Allreduce(MPI.IN_PLACE, self._epoch_sums, op=MPI.SUM)
        self.comm.Allreduce(MPI.IN_PLACE, self._worst, op=MPI.MAX)
        self.comm.Bcast(self._per_worker, root=0)
        return bool(self._epoch_sums[STOP] > 0)

    def apply(self, unit: Unit) -> None:
        """Every rank gets the servers' ranges: the model and the optimizer state."""
        for s, (lo, hi) in enumerate(self._ranges):
            self.comm.Bcast(self.params[lo:hi], root=s)
            for name, full in self.optimizer.state.items():
                if self._server is not None and s == self.comm.Get_rank():
                    full[lo:hi] = self._server.optimizer.state[name]
                self.comm.Bcast(full[lo:hi], root=s)
        steps = np.array([self._server.optimizer.steps if self._server else 0],
                         dtype=np.int64)
        self.comm.Bcast(steps, root=0)
        self.optimizer.steps = int(steps[0])
        loss = float(self._epoch_sums[LOSS])
        if not np.isfinite(loss) or not np.isfinite(self.params).all():
            raise shared_error(f"training diverged: the loss is {loss} in epoch "
                               f"{unit.period + 1}; try a smaller --lr; the last good "
                               "checkpoint is kept")
        pushes = int(self._epoch_sums[PUSHES])
        self._pushes += pushes
        self._staleness.merge(float(self._epoch_sums[STALE_SUM]), float(pushes),
                              float(self._worst[0]))
        self._sums = [float(v) for v in self._epoch_sums[LOSS:ROWS + 1]]

    def evaluate(self, unit: Unit) -> dict[str, Any]:
        return {**super().evaluate(unit), "step": self._pushes, **self._staleness.take(),
                "pushes_per_worker": self._per_worker.tolist()}

    def close(self) -> None:
        self._comm.Free()

    # -- checkpoints and outputs -------------------------------------------------------------
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = super().checkpoint_state()
        return arrays, {**meta, "pushes": self._pushes}

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().restore_state(arrays, meta)
        self._pushes = int(meta["pushes"])
        if self._server is not None:
            lo, hi = self._server.lo, self._server.hi
            for name, value in self._server.optimizer.state.items():
                value[...] = self.optimizer.state[name][lo:hi]
            self._server.optimizer.steps = self.optimizer.steps

    def summary(self) -> dict[str, Any]:
        """summary.json's ``parameter_server`` section."""
        return {"parameter_server": {
            "servers": self.servers, "workers": len(self._workers),
            "server_ranges": [list(r) for r in self._ranges],
            "rows_per_push": self.local_batch, "pushes_per_epoch": self.pushes_per_epoch,
            "simulated_schedule": self.simulate}}


def _row_stream(*, seed: int, epoch: int, start: int, count: int,
                batch: int) -> Iterator[np.ndarray]:
    """This worker's batches of an epoch: successive seeded permutations of its rows
    (a fast worker goes round its block more than once per epoch)."""
    lap = 0
    while count == 0:  # no rows here (fewer rows than workers): empty pushes
        yield np.empty(0, dtype=np.int64)
    while True:
        order = np.random.default_rng([seed, SHUFFLE_STREAM, epoch, start, lap]).permutation(
            count).astype(np.int64)
        for i in range(0, count, batch):
            yield order[i:i + batch]
        lap += 1
