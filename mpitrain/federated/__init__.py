"""Federated learning over MPI collectives: K simulated clients spread over P ranks.

One job per module: :mod:`.partition` (clients from the global labels), :mod:`.clients`
(client → rank, moving rows), :mod:`.sampling` (clients of a round), :mod:`.local` (a
client's local SGD/FedProx), :mod:`.server` (server optimizers), :mod:`.aggregation` (how
the ranks combine a round's updates: weighted sum, secure sum, robust rules), :mod:`.robust`
(median, trimmed mean, Krum), :mod:`.secure` (masked fixed-point sums), :mod:`.privacy`
(clipping, DP-FedAvg and its RDP accountant), :mod:`.metrics` (global and per-client
accuracy). These are the parts :mod:`mpitrain.strategies.federated` builds its strategy
from; they may import data, models, kernels, collectives and errors, never a strategy.
Nothing is imported here, so reading a choice list does not load scipy.
"""
