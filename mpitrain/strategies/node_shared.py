"""The node-shared update (``--reduce shared-update``): synchronous data parallelism on one
node where the node keeps ONE copy of the parameters and of the optimizer state, in
shared memory, and each rank sums and updates its own 1/P slice of them.

Per step (:mod:`mpitrain.collectives.shared_update` has the memory and the barriers): the
gradient kernel writes the rank's step message straight into its shared slot; a counter
barrier; each rank sums every rank's slot over its slice ``[lo, hi)`` in rank order (the
bits ``--reduce shm`` computes there) and every slot's tail (loss, correct, rows, stop
vote), applies the optimizer to its slice of the shared parameters and state (the kernels
of the unsharded update, restricted to the slice, as ``--shard`` does); a second counter
barrier. No allreduce and no allgather, and 1/P of the update per rank: the final model is
bit-identical to ``--reduce shm``'s for every optimizer, weight decay and learning-rate
schedule.

``--reduce auto`` runs it where it applies (:func:`runs_node_shared`): every rank on one
node, shared memory allowed, the plain sync path (no ``--overlap``, ``--compress``,
``--shard``, tensor parallelism), 2+ ranks and a step message of at least
:data:`~mpitrain.collectives.select.SHARED_UPDATE_FROM_BYTES`; for a sparse-row model
(CSR rows, a step touching some rows of the first layer) only with an optimizer that moves
every weight every step (momentum, Adam, weight decay: :func:`rows_update_is_exact`).
Such a model's step zeroes only the rows of its slot it wrote the step before.

Outside the steps: evaluation reads the shared parameters; checkpoints hold the full
parameters and optimizer state (rank 0 writes them: they are in shared memory, complete
and current after a step), in the format every other path writes, so a run resumes on any
``--reduce`` and rank count; a restored checkpoint is written into shared memory by rank 0,
then a barrier. :meth:`close` copies the parameters into private memory
(:attr:`params`) before the windows are freed, so what training returns and saves never
points into a freed window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.context import state_of
from mpitrain.collectives.select import SHARED_UPDATE_FROM_BYTES, picks_shared_update
from mpitrain.collectives.shared_update import SharedUpdate
from mpitrain.config import shared_memory_allowed
from mpitrain.errors import UserError, agree
from mpitrain.optimizers import exact_on_rows

from .base import StopRequested, Unit, vote, voted
from .shards import Slice, memory_report
from .sync import TAIL, SyncStrategy

if TYPE_CHECKING:
    from mpitrain.config import TrainConfig
    from mpitrain.models import BoundModel

NAME = "shared-update"


def static_problem(config: TrainConfig) -> str | None:
    """Why ``config`` (no MPI needed) cannot run the node-shared update, or None."""
    if config.shard != "none":
        return f"--shard {config.shard}"
    if config.tensor_parallel > 1:
        return f"--tensor-parallel {config.tensor_parallel}"
    if config.overlap:
        return "--overlap"
    if config.compress != "none":
        return f"--compress {config.compress}"
    if not config.shared_memory:
        return "--no-shared-memory"
    if not shared_memory_allowed(config):
        return "--stall-timeout (its watchdog watches MPI calls)"
    return None


def check_config(config: TrainConfig) -> None:
    """UserError for ``--reduce shared-update`` with options it cannot run with (no MPI:
    the same on every rank)."""
    if config.reduce != NAME:
        return
    problem = static_problem(config)
    if problem is not None:
        raise UserError(f"--reduce {NAME} keeps one copy of the parameters per node in "
                        f"shared memory and updates it in place, which {problem} rules "
                        "out; use another --reduce or drop that option")


def runs_node_shared(config: TrainConfig, *, model: BoundModel, params: np.ndarray,
                     comm: MPI.Comm) -> bool:
    """Collective (the same answer on every rank): whether this sync run uses the
    node-shared update: ``--reduce shared-update`` (a UserError on every rank where it
    cannot run: several nodes), or ``--reduce auto`` where it applies and the step
    message is large enough."""
    if config.reduce not in ("auto", NAME) or static_problem(config) is not None:
        return False
    size = comm.Get_size()
    nbytes = (model.layout.size + TAIL) * params.itemsize
    if config.reduce == "auto" and (rows_update_is_exact(config, model)
                                    or not picks_shared_update(nbytes, size)):
        return False
    one_node = state_of(comm).one_node()  # (collective on first use)
    if config.reduce == "auto":
        return one_node
    agree(comm, None if one_node else
          f"--reduce {NAME} needs every rank on one node, but the ranks span several "
          "nodes; use --reduce auto")
    return True


def rows_update_is_exact(config: TrainConfig, model: BoundModel) -> bool:
    """Whether a sparse-row model's step may update only the rows some rank touched (plain
    SGD without weight decay: the same bits as the full update), which ``auto`` prefers to
    the node-shared update: the touched rows' exchange and update cost time in the batch,
    not the model. Momentum, Adam and weight decay move every weight every step, so a
    sparse-row model with them takes the node-shared update like a dense one (each rank
    updates 1/P of the weights instead of all)."""
    sparse = model.hook("touched_kernel") is not None
    return sparse and exact_on_rows(config.optimizer, weight_decay=config.weight_decay)


@dataclass(kw_only=True)
class NodeSharedStrategy(SyncStrategy):
    """:class:`SyncStrategy` with the parameters and optimizer state in node-shared memory,
    summed and updated slice by slice (module docstring)."""

    chosen_by: str = "given"  # "given" (--reduce shared-update) or "rule" (--reduce auto)
    _shared: SharedUpdate = field(init=False)
    _full_state: dict[str, np.ndarray] = field(init=False, default_factory=dict)
    _closed: bool = field(init=False, default=False)

    @classmethod
    def mode_fields(cls, config: TrainConfig) -> dict[str, Any]:
        return {"chosen_by": "given" if config.reduce == NAME else "rule"}

    @classmethod
    def owned(cls, params: np.ndarray, comm: MPI.Comm) -> np.ndarray:
        """This rank's slice of ``params`` (the optimizer state it updates; placed in the
        shared state by ``__post_init__``)."""
        part = Slice(params.size, comm.Get_size(), comm.Get_rank())
        return params[part.start:part.stop]

    def __post_init__(self) -> None:
        names = list(self.optimizer.state)
        shared = self._shared = SharedUpdate(self.comm, n=self.layout.size, tail=TAIL,
                                             dtype=self.params.dtype, buffers=len(names),
                                             initial=self.params)
        self._full_state = dict(zip(names, shared.state, strict=True))
        self._place(shared.params, self._full_state)
        self._result = np.zeros(shared.hi - shared.lo + TAIL, dtype=self.params.dtype)
        self._n = shared.hi - shared.lo

    def _place(self, params: np.ndarray, state: dict[str, np.ndarray]) -> None:
        """Train ``params`` (full) with optimizer ``state`` (full): this rank's slices."""
        lo, hi = self._shared.lo, self._shared.hi
        self.params = params
        self._owned = params[lo:hi]
        self.optimizer.state = {name: value[lo:hi] for name, value in state.items()}

    # -- the loop's hooks --------------------------------------------------------------------
    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        message = self._shared.slot
        train = self.train
        started = perf_counter()
        if self.gradient.row_width:  # a sparse-row model zeroes only the rows it wrote
            # last time (only this rank writes its slot: the others just read it)
            self.gradient.step_rows(self.params, message, train.X, train.y, self._rows(unit))
        else:
            self.gradient.step(self.params, message, train.X, train.y, self._rows(unit))
        self.straggler.slow_down(started)
        vote(message, stop_requested)

    def reduce(self, unit: Unit) -> bool:
        self._shared.gather(self._result)
        return voted(self._result)

    def apply(self, unit: Unit) -> None:
        self.apply_message(self._result, unit)  # this rank's slice
        self._shared.release()

    def close(self) -> None:
        """Collective: the parameters (and this rank's optimizer state) back in private
        memory, then the windows freed."""
        if self._closed:
            return
        self._closed = True
        params = self.params.copy()  # (every update is done: after the step's last barrier)
        state = {name: value.copy() for name, value in self._full_state.items()}
        self._shared.close()
        self._full_state = state
        self._place(params, state)

    # -- checkpoints and outputs -------------------------------------------------------------
    def checkpointed_params(self) -> np.ndarray:
        return self.params  # all of them (rank 0 writes the checkpoint)

    def checkpointed_state(self) -> dict[str, np.ndarray]:
        return self._full_state

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Collective: rank 0 writes the checkpoint into shared memory, then a barrier."""
        if self.comm.Get_rank() == 0:
            super().restore_state(arrays, meta)
        else:
            self.restore_counters(meta)
        if not self._closed:
            self._shared.barrier()

    def summary(self) -> dict[str, Any]:
        """summary.json's ``memory`` (one copy of the parameters and optimizer state per
        node) and ``reduce`` sections; no communication."""
        itemsize, n = self.params.itemsize, self.layout.size
        shared = self._shared
        state_bytes = sum(v.nbytes for v in self._full_state.values())
        ranks = self.comm.Get_size()
        memory = memory_report(shard="none", optimizer=self.optimizer.name, n=n,
                               itemsize=itemsize, state_bytes=state_bytes,
                               message_bytes=(n + TAIL) * itemsize,
                               reduced_bytes=self._result.nbytes)
        memory.update({
            "node_shared": True,
            # the node's one copy of each, in shared memory (per rank: none)
            "parameter_copies_per_node": 1, "optimizer_state_copies_per_node": 1,
            "optimizer_state_bytes_per_node": state_bytes,
            "optimizer_state_bytes_per_rank": 0,
            "optimizer_state_fraction": (state_bytes / ranks / state_bytes
                                         if state_bytes else 1.0),
            "shared_bytes_per_node": shared.shared_bytes,
            "private_bytes_per_rank": self._result.nbytes,
            "note": "parameters, optimizer state and every rank's step message live once "
                    "per node in shared memory (shared_bytes_per_node); a rank keeps only "
                    "its reduced slice privately (private_bytes_per_rank)"})
        reduce = {"requested": NAME if self.chosen_by == "given" else "auto",
                  "algorithm": NAME, "source": self.chosen_by,
                  "message_bytes": (n + TAIL) * itemsize, "dtype": self.params.dtype.name,
                  "ranks": ranks, "tune": self.tune,
                  "threshold_bytes": SHARED_UPDATE_FROM_BYTES,
                  "slice": [shared.lo, shared.hi]}
        return {"memory": memory, "reduce": reduce,
                "overlap": self.overlap_decision().report()}

    def header(self) -> str | None:
        if self.comm.Get_size() == 1:
            return None
        section = self.summary()["reduce"]
        where = ("as given" if self.chosen_by == "given" else
                 f"by --reduce auto (one node, a step message of at least "
                 f"{SHARED_UPDATE_FROM_BYTES:,} bytes: mpitrain/collectives/select.py)")
        line = (f"reduce: {NAME} (one copy of the parameters and optimizer state on the "
                f"node, each rank sums and updates 1/{section['ranks']} of them) for the "
                f"{section['message_bytes']:,}-byte {section['dtype']} step message on "
                f"{section['ranks']} ranks, {where}")
        decision = self.overlap_decision()
        return "\n".join([line, decision.header()] if decision.suggest else [line])
