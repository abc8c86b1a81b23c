"""Sharded data parallelism (``--shard optimizer|gradients``, ZeRO stages 1 and 2): the
sync strategy's steps, with each rank owning a 1/P slice of the flat model
(:class:`~mpitrain.strategies.shards.Slice`, the chunk layout of
:func:`mpitrain.collectives.reduce_scatter`).

Per step: the model's kernels write this rank's gradient sum and tail into the full-length
working message (as in :mod:`.sync`); ``reduce`` reduce-scatters the gradient (each rank
receives the sum of its slice only) and allreduces the 4-slot tail (loss, correct, rows,
stop vote); ``apply`` updates this rank's slice of the parameters with its slice of the
optimizer state (the same elementwise kernels as the unsharded run), then all-gathers the
parameters. Communication: reduce-scatter + allgather = one allreduce's volume, plus the
tail. Exact: the slice update is the unsharded update restricted to the slice, so the
only difference from an unsharded run is the summation order of the reduction (float
rounding; with ``--shuffle global`` the same model to ~1e-12 in float64 for any P).

``optimizer``: the optimizer state (momentum, Adam moments) exists for the slice only
(1/P of the bytes); the reduced gradient is read in place from the working message.
``gradients``: in addition the reduced gradient slice is moved into a buffer of its own,
1/P long, the only copy of the reduced gradient a rank keeps between the reduction and the
update. The working message the kernels write a step's gradient into stays full length in
both (a kernel writes the gradient of every parameter).

The parameter allgather runs inside ``apply`` (the loop counts it as compute). Checkpoints
are sharded: each rank saves its slice (:attr:`checkpoint_slice`; see
:mod:`mpitrain.checkpoint.policy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import allgather, allreduce, reduce_scatter

from .base import StopRequested, Unit, vote, voted
from .shards import Slice
from .sync import TAIL, SyncStrategy


@dataclass(kw_only=True)
class ShardedSyncStrategy(SyncStrategy):
    """:class:`SyncStrategy` with optimizer state (and reduced gradients) sharded."""

    _slice: Slice = field(init=False)
    _work: np.ndarray = field(init=False)  # the working message: gradient | tail
    _scatter: str = field(init=False, default="auto")  # reduce-scatter/allgather algorithm

    @classmethod
    def owned(cls, params: np.ndarray, comm: MPI.Comm) -> np.ndarray:
        """This rank's slice of ``params`` (it keeps optimizer state for it alone)."""
        part = Slice(params.size, comm.Get_size(), comm.Get_rank())
        return params[part.start:part.stop]

    def __post_init__(self) -> None:
        n = self.layout.size
        self._slice = part = Slice(n, self.comm.Get_size(), self.comm.Get_rank())
        self._owned = self.params[part.start:part.stop]
        self._work = np.zeros(n + TAIL, dtype=self.params.dtype)
        if self.shard == "gradients":  # reduced slice | tail, in a buffer of its own
            self._result = np.zeros(part.stop - part.start + TAIL, dtype=self.params.dtype)
            self._n = part.stop - part.start
        else:  # the working message from the slice on: the slice, partial sums, the tail
            self._result = self._work[part.start:]
            self._n = n - part.start
        # the collectives resolve ``auto`` by the reduce-scatter's message size
        self._scatter = "auto" if self.reduce_algorithm not in ("ring", "mpi") \
            else self.reduce_algorithm

    @property
    def checkpoint_slice(self) -> tuple[int, int]:
        """``[start, stop)`` of the flat buffer whose state this rank checkpoints."""
        return self._slice.start, self._slice.stop

    # -- the loop's hooks --------------------------------------------------------------------
    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        train = self.train
        self.gradient.step(self.params, self._work, train.X, train.y, self._rows(unit))
        vote(self._work, stop_requested)

    def reduce(self, unit: Unit) -> bool:
        work, n = self._work, self.layout.size
        mine = reduce_scatter(work[:n], self.comm, algorithm=self._scatter)
        tail = work[n:]
        allreduce(tail, self.comm, algorithm=self.reduce_algorithm,
                  shared_memory=self.shared_memory)
        if self.shard == "gradients":
            self._result[:-TAIL] = mine
            self._result[-TAIL:] = tail
        return voted(tail)

    def apply(self, unit: Unit) -> None:
        super().apply(unit)  # this rank's slice
        allgather(self.params, self.comm, algorithm=self._scatter)

    def _message_bytes(self) -> int:
        return self._work.nbytes

    # -- checkpoints and outputs -------------------------------------------------------------
    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Collective: load this rank's slices, then all-gather the parameters."""
        super().restore_state(arrays, meta)
        allgather(self.params, self.comm, algorithm=self._scatter)
