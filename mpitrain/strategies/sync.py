"""Synchronous data parallelism: every step, every rank adds the gradient of its part of the
global batch, one allreduce sums gradients and counts, and every rank applies the same update.

Per step the Python side makes one kernel call (gradient + tail), one collective and one
optimizer call; everything else is preallocated (the loop runs next to a ~150 us kernel, so
microseconds matter). The step's message ``gradient | loss, correct, rows, stop`` is
reduced by a persistent allreduce of :mod:`mpitrain.collectives` (``--reduce``,
``--compress``; ``auto`` is resolved there), which may hand out a different buffer each step
(the shared-memory slot the kernel writes straight into). With ``--overlap``: forward once,
then backward layer by layer from the top; as soon as a layer's gradient is in its slice of
the message, a nonblocking allreduce of that slice starts (the top slice carries the tail,
so the stop vote is cast before the step's work), in the same fixed order on every rank,
and ``reduce`` waits for them all. Same sums as the plain path (exactly for ``mpi`` and any
algorithm on 2 ranks; up to float rounding order for ``ring`` on more ranks). Whether a
run overlaps, and why it is off by default, is :mod:`.overlap_rule`'s (docs/overlap.md).

A model whose step touches only some rows of its first weight matrix (the sparse models,
which have a ``touched_kernel``) reports those rows every step, and the reduction sends
only them when that is cheaper (:class:`~mpitrain.collectives.sparse.SparseRowAllreducer`:
the same bits as the dense allreduce either way). Their step zeroes only the rows it wrote
last time (:meth:`~mpitrain.models.gradient.BatchGradient.step_rows`), and plain SGD
without weight decay updates only the rows the reduced gradient may be non-zero in (a
weight with a zero gradient does not change: the same bits as the dense update), so with
``--optimizer sgd`` no part of a step sweeps the whole weight matrix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI

from mpitrain.asynchronous.straggler import Straggler, check_stragglers
from mpitrain.collectives import AllreduceHandle, Allreducer, start_allreduce
from mpitrain.collectives.context import state_of
from mpitrain.collectives.shared_memory import cores
from mpitrain.collectives.sparse import SparseRowAllreducer
from mpitrain.config import shared_memory_allowed
from mpitrain.data import Shard
from mpitrain.data.batches import EpochPlan, epoch_plan, steps_per_epoch
from mpitrain.errors import UserError, agree, shared_error
from mpitrain.evaluation import Evaluator, label_stats, summarize
from mpitrain.models import BoundModel, Layout
from mpitrain.models.gradient import BatchGradient
from mpitrain.optimizers import Optimizer, learning_rate, make_optimizer

from .base import StopRequested, Strategy, Unit, vote, voted
from .overlap_rule import OverlapDecision, async_progress, decide_overlap
from .shards import memory_report

if TYPE_CHECKING:
    from mpitrain.config import TrainConfig
    from mpitrain.data import Dataset

TAIL = 4  # loss sum, correct count, row count, stop vote


def reduce_report(reducer: Allreducer) -> dict[str, Any]:
    """summary.json's ``reduce`` section: what reduces the step message and why (``source``:
    ``given`` by --reduce, the built-in ``table``, the tuning ``cache``, or ``measured``
    now), with the cache entry's timings when there is one."""
    entry = reducer.tuning
    report: dict[str, Any] = {
        "requested": "auto" if reducer.source != "given" else reducer.algorithm,
        "algorithm": reducer.algorithm, "source": reducer.source,
        "message_bytes": reducer.count * reducer.dtype.itemsize,
        "dtype": reducer.dtype.name, "ranks": reducer.ranks, "tune": reducer.tune}
    if reducer.in_flight:  # --mode ssp: nonblocking, completed --staleness steps later
        report["in_flight"] = reducer.in_flight
    if entry is not None:
        report.update({"bucket_bytes": entry["bytes"], "table": entry["table"],
                       "median_us": entry["median_us"], "measured": entry["measured"],
                       "cache": reducer.tuning_path})
    return report


def reduce_header(section: dict[str, Any]) -> str:
    """The run header's line about the step's reduction."""
    where = {"given": "as given", "table": "from the built-in table (mpitrain/collectives/"
             "select.py)", "cache": f"from the tuning cache {section.get('cache')}",
             "measured": f"measured now and cached in {section.get('cache')}"}
    started = (f" (nonblocking, {section['in_flight']} in flight)"
               if section.get("in_flight") else "")
    line = (f"reduce: {section['algorithm']}{started} for the {section['message_bytes']:,}-"
            f"byte {section['dtype']} step message on {section['ranks']} ranks, "
            f"{where[section['source']]}")
    if section.get("table") and section["table"] != section["algorithm"]:
        line += f" (the table says {section['table']})"
    return line


def optimizer_for(config: TrainConfig, params: np.ndarray) -> Optimizer:
    """The ``--optimizer`` of ``config`` with state for ``params``."""
    return make_optimizer(config.optimizer, params, weight_decay=config.weight_decay,
                          momentum=config.momentum, nesterov=config.nesterov,
                          beta1=config.beta1, beta2=config.beta2, eps=config.eps)


@dataclass(kw_only=True)
class MinibatchStrategy(Strategy):
    """What the strategies that train one model with an optimizer over epochs of
    minibatches share: the model and its optimizer, the data, the learning rate, the
    epoch's metrics and the checkpoint (the model, the optimizer's state and the epoch's
    sums)."""

    period_name = "epoch"
    length_option = "epochs"

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
    seed: int
    lr: float
    lr_schedule: str = "constant"
    lr_step_epochs: int = 10
    lr_gamma: float = 0.1
    straggler: Straggler = field(default_factory=Straggler)
    _sums: list[float] = field(init=False, default_factory=lambda: [0.0, 0.0, 0.0])

    def scheduled_lr(self, step: int, total_steps: int, epoch: int) -> float:
        """--lr and its schedule at ``step`` of ``total_steps`` (in ``epoch``)."""
        if self.lr_schedule == "constant":
            return self.lr
        return learning_rate(self.lr_schedule, self.lr, step=step, total_steps=total_steps,
                             epoch=epoch, step_epochs=self.lr_step_epochs,
                             gamma=self.lr_gamma)

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

    def checkpointed_params(self) -> np.ndarray:
        """The parameters a checkpoint holds (all of them here)."""
        return self.params

    def checkpointed_state(self) -> dict[str, np.ndarray]:
        """The optimizer state a checkpoint holds (the buffers of the checkpointed
        parameters)."""
        return self.optimizer.state

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"params": self.checkpointed_params(),
                  **{f"optimizer.{k}": v for k, v in self.checkpointed_state().items()}}
        return arrays, {"optimizer_steps": self.optimizer.steps, "epoch_sums": self._sums}

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.checkpointed_params()[...] = arrays["params"]  # (all of them, unsharded)
        for name, value in self.checkpointed_state().items():
            value[...] = arrays[f"optimizer.{name}"]
        self.restore_counters(meta)

    def restore_counters(self, meta: dict[str, Any]) -> None:
        """The optimizer's step count and the epoch's sums of a checkpoint's ``meta``."""
        self.optimizer.steps = int(meta["optimizer_steps"])
        self._sums = [float(v) for v in meta["epoch_sums"]]


@dataclass(kw_only=True)
class SyncStrategy(MinibatchStrategy):
    """Plain data-parallel SGD over the global batch; exact for any number of ranks."""

    unit_name = "step"
    options = ("compress", "overlap", "shard", "straggler", "tensor_parallel",
               "sparse_reduce")

    shuffle: str
    reduce_algorithm: str = "auto"
    compress: str = "none"
    overlap: bool = False
    shard: str = "none"  # --shard: ShardedSyncStrategy (.sharded) runs the other values
    shared_memory: bool = True
    sparse_reduce: str = "auto"  # --sparse-reduce: reduce only the touched rows when cheaper
    tune: str = "auto"
    _plan: EpochPlan | None = field(init=False, default=None)
    _plan_epoch: int = field(init=False, default=-1)
    _n: int = field(init=False, default=0)
    _reducer: Allreducer | None = field(init=False, default=None)
    _rows_reducer: SparseRowAllreducer | None = field(init=False, default=None)
    _touched: np.ndarray | None = field(init=False, default=None)
    # the rows-step path (BatchGradient.step_rows): a sparse model's plain step on one rank
    # or with the row reduction; and, with an optimizer exact on rows, the rows of the
    # reduced gradient that may be non-zero (None: update every weight)
    _by_rows: bool = field(init=False, default=False)
    _update_rows: np.ndarray | None = field(init=False, default=None)
    _overlap_decision: OverlapDecision | None = field(init=False, default=None)
    _buckets: list[tuple[int, np.ndarray]] = field(init=False, default_factory=list)
    _handles: list[AllreduceHandle] = field(init=False, default_factory=list)
    _result: np.ndarray = field(init=False)  # the reduced message of the current step
    # what ``apply`` updates: all of params (a ShardedSyncStrategy: this rank's slice, with
    # the gradient at _result[:_n] and the tail at _result[_n:])
    _owned: np.ndarray = field(init=False)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def validate(cls, config: TrainConfig) -> None:
        if config.tensor_parallel > 1:
            from .tensor import validate_tensor_parallel

            validate_tensor_parallel(config)
        from .node_shared import check_config

        check_config(config)  # --reduce shared-update with options it cannot run with
        if config.shard == "none":
            return
        for name, value in (("overlap", config.overlap), ("compress", config.compress)):
            if value not in (False, "none"):
                shown = f"--{name}" + ("" if value is True else f" {value}")
                raise UserError(f"--shard {config.shard} reduce-scatters the whole gradient "
                                f"at once, so it cannot be combined with {shown}; drop one "
                                "of them")

    @classmethod
    def kernels(cls, config: TrainConfig, *, ranks: int) -> frozenset[str]:
        # (the reductions' kernels are loaded by mpitrain.collectives itself)
        tensor = {"tensor"} if config.tensor_parallel > 1 else set()
        return frozenset({"split" if config.overlap else "step", "loss", config.optimizer,
                          *tensor})

    @classmethod
    def build(cls, config: TrainConfig, *, model: BoundModel, params: np.ndarray,
              dataset: Dataset, comm: MPI.Comm) -> SyncStrategy:
        if config.tensor_parallel > 1 and cls is SyncStrategy:
            from .tensor import TensorParallelStrategy  # (it subclasses this one)

            return TensorParallelStrategy.build(config, model=model, params=params,
                                                dataset=dataset, comm=comm)
        if config.shard != "none" and cls is SyncStrategy:
            from .sharded import ShardedSyncStrategy  # (it subclasses this one)

            cls = ShardedSyncStrategy
        if cls is SyncStrategy:
            from .node_shared import NodeSharedStrategy, runs_node_shared  # (a subclass)

            if runs_node_shared(config, model=model, params=params, comm=comm):
                cls = NodeSharedStrategy  # one copy of the model per node
        agree(comm, None if model.can_split or not config.overlap else
              f"--overlap needs a model with per-layer kernels (forward_kernel, "
              f"backward_kernel, buckets), which {model.name} does not have; drop --overlap")
        return cls(**cls.fields(config, model=model, params=params, dataset=dataset,
                                comm=comm, owned=cls.owned(params, comm)))

    @classmethod
    def fields(cls, config: TrainConfig, *, model: BoundModel, params: np.ndarray,
               dataset: Dataset, comm: MPI.Comm, owned: np.ndarray) -> dict[str, Any]:
        """Collective: the constructor's arguments for ``config``, with optimizer state
        for ``owned`` (the part of the parameters this rank updates)."""
        size = comm.Get_size()
        agree(comm, check_stragglers(config.straggler, size))
        max_rows = (-(-config.batch_size // size) if config.shuffle == "local"
                    else config.batch_size)
        max_rows = min(max_rows, max(1, len(dataset.train.y)))
        test = (Evaluator(model, shard=dataset.test, comm=comm)
                if dataset.test.n_total > 0 else None)
        return dict(
            comm=comm, layout=model.layout, params=params,
            optimizer=optimizer_for(config, owned),
            gradient=BatchGradient(model, max_rows=max_rows, dtype=params.dtype),
            train=dataset.train, test=test,
            train_label_stats=label_stats(dataset.train, comm) if model.regression else None,
            epochs=config.epochs, batch_size=config.batch_size, shuffle=config.shuffle,
            seed=config.seed, lr=config.lr, lr_schedule=config.lr_schedule,
            lr_step_epochs=config.lr_step_epochs, lr_gamma=config.lr_gamma,
            reduce_algorithm=config.reduce, compress=config.compress, overlap=config.overlap,
            sparse_reduce=config.sparse_reduce,
            shard=config.shard, shared_memory=shared_memory_allowed(config), tune=config.tune,
            straggler=Straggler.for_rank(config.straggler, rank=comm.Get_rank(),
                                         seed=config.seed),
            **cls.mode_fields(config))

    @classmethod
    def mode_fields(cls, config: TrainConfig) -> dict[str, Any]:
        """Fields a subclass (a variant of this strategy) adds, from ``config``."""
        return {}

    @classmethod
    def owned(cls, params: np.ndarray, comm: MPI.Comm) -> np.ndarray:
        """The part of ``params`` this rank updates and keeps optimizer state for: all."""
        return params

    def __post_init__(self) -> None:
        self._n = self.layout.size  # a computed property: not something to redo every step
        self._owned = self.params
        count = self._n + TAIL
        if not self.overlap:
            self._reducer = Allreducer(count, self.params.dtype, self.comm,
                                       algorithm=self.reduce_algorithm,
                                       shared_memory=self.shared_memory,
                                       compress=self.compress, exact_tail=TAIL,
                                       batch_size=self.batch_size, tune=self.tune)
            self._result = self._reducer.buffer()
            width = self.gradient.row_width
            if width and self.comm.Get_size() > 1 and self.sparse_reduce == "auto":
                self._rows_reducer = SparseRowAllreducer(
                    self._reducer, rows=self.gradient.n_features, width=width, comm=self.comm,
                    max_touched=self.gradient.max_touched(self.train.X), in_place=True,
                    distinct_rows=self.optimizer.exact_on_rows)
                if not self._rows_reducer.enabled:  # (the same on every rank)
                    self._rows_reducer = None
            self._by_rows = bool(width) and (self.comm.Get_size() == 1
                                             or self._rows_reducer is not None)
            return
        self._result = np.zeros(count, dtype=self.params.dtype)
        # (layer, slice of the message), top layer first; the top slice runs to the end of
        # the message so the tail (and the stop vote, cast before the work) travels with
        # the first reduction.
        layers = self.gradient.layers
        for layer in range(layers - 1, -1, -1):
            start, stop = self.gradient.layer_slice(layer)
            stop = count if layer == layers - 1 else stop
            self._buckets.append((layer, self._result[start:stop]))

    # -- the loop's hooks --------------------------------------------------------------------
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

    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        rows = self._rows(unit)
        train = self.train
        if self._reducer is not None:
            message = self._reducer.buffer()
            started = perf_counter()
            if self._by_rows:
                self._touched = self.gradient.step_rows(self.params, message, train.X,
                                                        train.y, rows)
            else:
                self.gradient.step(self.params, message, train.X, train.y, rows)
            self.straggler.slow_down(started)
            vote(message, stop_requested)
            return
        gradient, params, message = self.gradient, self.params, self._result
        vote(message, stop_requested)  # the tail leaves with the first bucket
        started = perf_counter()
        gradient.forward(params, message, train.X, train.y, rows)
        nrows = rows.size
        handles = self._handles
        for layer, bucket in self._buckets:
            gradient.backward(params, message, nrows, layer)
            for handle in handles:  # MPICH progresses only inside MPI calls
                handle.test()
            handles.append(start_allreduce(bucket, self.comm,
                                           algorithm=self.reduce_algorithm, op="sum"))
        self.straggler.slow_down(started)

    def reduce(self, unit: Unit) -> bool:
        rows_reducer = self._rows_reducer
        if rows_reducer is not None:
            message = self._reducer.buffer()
            self._result = rows_reducer(message, self._touched)
            written = rows_reducer.rows_written
            if written is None:  # a dense step: it may have written the message buffer
                self.gradient.forget()
            elif self._result is message:  # (summed in place: non-zero in all of them)
                self.gradient.holding(message, written)
            self._update_rows = written if self.optimizer.exact_on_rows else None
        elif self._reducer is not None:
            self._result = self._reducer()
            if self._by_rows and self.optimizer.exact_on_rows:  # (one rank)
                self._update_rows = self._touched
        else:
            for handle in self._handles:
                handle.wait()
            self._handles.clear()
        return voted(self._result)

    def apply(self, unit: Unit) -> None:
        self.apply_message(self._result, unit)

    def apply_message(self, message: np.ndarray, unit: Unit) -> None:
        """Apply a reduced step message (gradient sum | loss, correct, rows) of ``unit``."""
        n = self._n
        loss = float(message[n])
        if not math.isfinite(loss):
            raise shared_error(f"training diverged: the loss is {loss} at step "
                               f"{unit.index + 1} (epoch {unit.period + 1}); try a smaller "
                               "--lr; the last good checkpoint is kept")
        correct = float(message[n + 1])
        count = float(message[n + 2])
        rows, self._update_rows = self._update_rows, None
        if rows is None:
            self.optimizer.apply(self._owned, message, scale=1.0 / count,
                                 lr=self.learning_rate(unit))
        else:  # the rows the gradient may be non-zero in (the same bits as apply)
            width = self.gradient.row_width
            self.optimizer.apply_rows(self._owned, message, rows=rows, width=width,
                                      dense_start=self.gradient.n_features * width,
                                      scale=1.0 / count, lr=self.learning_rate(unit))
        sums = self._sums
        sums[0] += loss
        sums[1] += correct
        sums[2] += count

    def learning_rate(self, unit: Unit) -> float:
        """The learning rate of step ``unit`` (--lr and its schedule)."""
        return self.scheduled_lr(unit.index, self.total_units, unit.period)

    def close(self) -> None:
        if self._rows_reducer is not None:
            self._rows_reducer.close()
        if self._reducer is not None:
            self._reducer.close()

    # -- checkpoints and outputs -------------------------------------------------------------
    def checkpointed_params(self) -> np.ndarray:
        return self._owned  # (a sharded run's: this rank's slice)

    def summary(self) -> dict[str, Any]:
        """Collective: what a rank keeps in memory, the largest over the ranks (``--shard``
        cuts the optimizer state)."""
        held = np.array([sum(v.nbytes for v in self.optimizer.state.values()),
                         self._message_bytes(), self._result.nbytes], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, held, op=MPI.MAX)
        rows = self._rows_reducer
        sparse = ({} if rows is None else {"sparse_reduction": {
            "enabled": rows.enabled, "bound": rows.bound, "transport": rows.transport,
            "sparse_steps": rows.sparse_steps, "dense_steps": rows.dense_steps}})
        memory = memory_report(
            shard=self.shard, optimizer=self.optimizer.name, n=self.layout.size,
            itemsize=self.params.itemsize, state_bytes=int(held[0]),
            message_bytes=int(held[1]), reduced_bytes=int(held[2]))
        overlap = {"overlap": self.overlap_decision().report()}
        if self._reducer is None:
            return {**sparse, "memory": memory, **overlap}
        return {**sparse, "memory": memory, "reduce": reduce_report(self._reducer), **overlap}

    def header(self) -> str | None:
        if self.comm.Get_size() == 1:
            return None
        decision = self.overlap_decision()
        lines = [] if self._reducer is None else [reduce_header(reduce_report(self._reducer))]
        lines += [decision.header()] if decision.suggest else []
        return "\n".join(lines) or None

    def overlap_decision(self) -> OverlapDecision:
        """Collective on first call (the node layout): whether this run overlaps its
        reduction with the backward pass and why (:mod:`.overlap_rule`)."""
        if self._overlap_decision is None:
            layout = state_of(self.comm).layout()
            self._overlap_decision = decide_overlap(
                given=self.overlap, can_split=self.gradient.layers > 0,
                ranks=self.comm.Get_size(), ranks_on_node=layout.sizes[layout.node_index],
                cores_on_node=cores(), progress_thread=async_progress(os.environ))
        return self._overlap_decision

    def _message_bytes(self) -> int:
        """Bytes of the step's working message (the reduced one, in place, unsharded)."""
        return self._result.nbytes
