"""Decentralised gossip SGD: ``--mode gossip`` (after AD-PSGD, Lian et al. 2018).

Every step each rank takes one local optimizer step on its part of the global batch (as in
:mod:`.local_sgd`), then averages its parameters with ONE peer: the pairing is a seeded
random perfect matching of the ranks (:func:`mpitrain.asynchronous.schedule.gossip_partners`,
keyed by (seed, epoch, step); with an odd number of ranks one rank sits the step out). The
exchange is one ``Sendrecv`` with the peer: no global collective per step, a rank only ever
waits for its partner. Stop votes are reduced by a nonblocking one-number allreduce read
:data:`VOTE_LAG` steps later (so a rank may run up to that many steps ahead of the others).
At the end of every epoch and at checkpoint steps, one allreduce averages all models
(row-weighted, with optimizer state), so evaluations and checkpoints see one model.

The pairing is seeded and the exchange symmetric, so a run is reproducible bit for bit on
the same number of ranks; it differs from sync (a gossip model is a different algorithm).
Staleness is reported as the local steps since the last global average.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mpitrain.asynchronous.schedule import gossip_partners
from mpitrain.asynchronous.votes import LaggedVote

from .base import StopRequested, Unit
from .local_sgd import LocalSGDStrategy

if TYPE_CHECKING:
    from mpitrain.config import TrainConfig

VOTE_LAG = 4
GOSSIP_TAG = 0x6057


@dataclass(kw_only=True)
class GossipStrategy(LocalSGDStrategy):
    """One local step and one pairwise average per step (module docstring)."""

    options = ("straggler",)

    _peer: np.ndarray = field(init=False)  # the partner's parameters
    _partner: int = field(init=False, default=-1)
    _votes: LaggedVote = field(init=False)
    _stopping: bool = field(init=False, default=False)

    @classmethod
    def mode_fields(cls, config: TrainConfig) -> dict[str, Any]:
        return {"sync_every": 1, "local_after": 0, "checkpoint_every": config.checkpoint_every}

    def __post_init__(self) -> None:
        super().__post_init__()
        self._peer = np.empty_like(self.params)
        self._votes = LaggedVote(self.comm, lag=VOTE_LAG)
        self._rank = self.comm.Get_rank()
        self._size = self.comm.Get_size()

    def averages_after(self, unit: Unit) -> bool:
        return unit.period_end or self._checkpoint_due(unit)

    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        self.local_step(unit)
        self._votes.test()
        self._vote = stop_requested()

    def reduce(self, unit: Unit) -> bool:
        if self.averages_after(unit):
            self._stopping = False
            stopping = self._votes.drain()
            return self.average(self._vote) or stopping
        stopping = self._votes.cast(self._vote)
        self._stopping = stopping
        self._partner = int(gossip_partners(seed=self.seed, epoch=unit.period, step=unit.step,
                                            ranks=self._size)[self._rank])
        if self._partner >= 0:
            self.comm.Sendrecv(self.params, dest=self._partner, sendtag=GOSSIP_TAG,
                               recvbuf=self._peer, source=self._partner, recvtag=GOSSIP_TAG)
        if stopping:  # every rank decides this at the same step: one model to checkpoint
            self._votes.drain()
            self.average(True)
        return stopping

    def apply(self, unit: Unit) -> None:
        partner, self._partner = self._partner, -1
        if self.averages_after(unit) or self._stopping:
            self.take_average(unit)  # (a stop's average replaces the pairwise one)
        elif partner >= 0:
            self.params += self._peer
            self.params *= 0.5

    def close(self) -> None:
        self._votes.drain()
        super().close()
