"""How a round's client updates are combined across ranks: the aggregation rule a federated
strategy is built from (one of these per run).

- :class:`WeightedSum`: each rank sends the weighted sum of its clients' updates; one
  allreduce (``--reduce``) adds them;
- :class:`SecureWeightedSum`: the same sum through pairwise masks (:mod:`.secure`), so no
  rank's own sum is revealed;
- :class:`RobustRule`: median / trimmed mean / Krum over the individual updates
  (:mod:`.robust`), which therefore must reach the rule unsummed.

The message is ``payload (n) | tail``; the tail (weights, statistics, the stop vote) is
summed by every rule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from mpi4py import MPI

from ..collectives import allreduce
from .robust import RobustReducer
from .secure import SecureSum


class Aggregation(ABC):
    """Collective combination of every rank's message of one round."""

    individual: bool = False  # needs each client's update, not only their weighted sum

    @abstractmethod
    def reduce(self, message: np.ndarray, updates: np.ndarray | None, counts: np.ndarray,
               round_index: int) -> None:
        """Collective: replace ``message`` by the round's combination. ``updates``: this
        rank's individual client updates (rows) when :attr:`individual`; ``counts``: the
        number of sampled clients on every rank (the same array everywhere)."""

    @abstractmethod
    def bytes_sent(self, message: np.ndarray, counts: np.ndarray) -> float:
        """Bytes this rank sends in one :meth:`reduce`."""


def _allreduce_bytes(comm: MPI.Comm, nbytes: int) -> float:
    """2(P-1)/P of the message: the bandwidth-optimal allreduce volume (ring, tree
    reduce+bcast and MPICH alike)."""
    size = comm.Get_size()
    return 2.0 * (size - 1) / size * nbytes


class WeightedSum(Aggregation):
    """The example-weighted sum by one allreduce (the FedAvg mean's numerator)."""

    def __init__(self, comm: MPI.Comm, *, algorithm: str, shared_memory: bool) -> None:
        self.comm, self.algorithm, self.shared_memory = comm, algorithm, shared_memory

    def reduce(self, message: np.ndarray, updates: np.ndarray | None, counts: np.ndarray,
               round_index: int) -> None:
        allreduce(message, self.comm, algorithm=self.algorithm, op="sum",
                  shared_memory=self.shared_memory)

    def bytes_sent(self, message: np.ndarray, counts: np.ndarray) -> float:
        return _allreduce_bytes(self.comm, message.nbytes)


class SecureWeightedSum(Aggregation):
    """The weighted sum by secure aggregation: masked fixed-point integers, one allreduce."""

    def __init__(self, secure: SecureSum) -> None:
        self.secure = secure

    def reduce(self, message: np.ndarray, updates: np.ndarray | None, counts: np.ndarray,
               round_index: int) -> None:
        self.secure.reduce(message, round_index)

    def bytes_sent(self, message: np.ndarray, counts: np.ndarray) -> float:
        return _allreduce_bytes(self.secure.comm, self.secure.nbytes)


class RobustRule(Aggregation):
    """A robust rule over the individual updates; the tail is summed."""

    individual = True

    def __init__(self, robust: RobustReducer, *, n: int) -> None:
        self.robust, self.n = robust, n

    def reduce(self, message: np.ndarray, updates: np.ndarray | None, counts: np.ndarray,
               round_index: int) -> None:
        self.robust.reduce(updates, counts, message, slice(self.n, message.size))

    def bytes_sent(self, message: np.ndarray, counts: np.ndarray) -> float:
        return self.robust.estimate_bytes(counts)
