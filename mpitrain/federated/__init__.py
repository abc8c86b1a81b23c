"""Federated learning over MPI collectives: K simulated clients spread over P ranks.

One job per module: :mod:`.partition` (clients from the global labels), :mod:`.clients`
(client → rank, moving rows), :mod:`.sampling` (clients of a round), :mod:`.local` (a
client's local SGD/FedProx), :mod:`.server` (server optimizers), :mod:`.robust` (median,
trimmed mean, Krum), :mod:`.secure` (masked fixed-point sums), :mod:`.privacy` (DP-FedAvg
and its RDP accountant), :mod:`.metrics` (global and per-client accuracy). The strategy that
runs them in the shared loop is :mod:`mpitrain.strategies.federated`.
"""

from __future__ import annotations

from .partition import PARTITIONS, Partition, partition_rows
from .privacy import RdpAccountant
from .robust import AGGREGATES
from .sampling import clients_per_round, sample_clients
from .server import SERVER_OPTIMIZERS, ServerOptimizer

__all__ = ["AGGREGATES", "PARTITIONS", "SERVER_OPTIMIZERS", "Partition", "RdpAccountant",
           "ServerOptimizer", "clients_per_round", "partition_rows", "sample_clients"]
