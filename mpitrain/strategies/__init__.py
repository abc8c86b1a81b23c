"""Training strategies: the ways of training that drive the one loop in :mod:`mpitrain.loop`.

Each is one :class:`~mpitrain.strategies.base.Strategy` subclass in its own module:
:mod:`.sync` (data-parallel SGD over the global batch; with ``--shard``, its subclass in
:mod:`.sharded`, slices from :mod:`.shards`; with ``--tensor-parallel``, its subclass in
:mod:`.tensor`, blocks from :mod:`.tensor_split`), :mod:`.federated` (FedAvg and its
relatives over simulated clients) and the asynchronous modes built from
:mod:`mpitrain.asynchronous`: :mod:`.ssp`, :mod:`.local_sgd`, :mod:`.gossip` and
:mod:`.parameter_server` (docs/async.md). A strategy may import the pipeline (data, models,
collectives, optimizers, federated and asynchronous parts) and the errors; never the CLI,
the loop or the run-time services. This module is the registry ``--mode`` chooses from:
adding a strategy is its class plus one line in :data:`STRATEGIES`. Models that are not
trained by gradients (trees, k-means) are strategies too, chosen by ``--model``:
:data:`ESTIMATORS`. Modules load on first use (the federated one pulls in scipy), so
importing the registry is cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Strategy

# --mode value: (module:class, one line for --help)
STRATEGIES: dict[str, tuple[str, str]] = {
    "sync": ("mpitrain.strategies.sync:SyncStrategy",
             "data-parallel SGD over the global batch"),
    "fedavg": ("mpitrain.strategies.federated:FederatedStrategy",
               "federated rounds over --clients simulated clients"),
    "ssp": ("mpitrain.strategies.ssp:StaleSynchronousStrategy",
            "stale-synchronous SGD: at most --staleness steps ahead of the slowest rank"),
    "local-sgd": ("mpitrain.strategies.local_sgd:LocalSGDStrategy",
                  "local SGD: --sync-every local steps, then one parameter average"),
    "gossip": ("mpitrain.strategies.gossip:GossipStrategy",
               "decentralised SGD: each step averages with one seeded peer"),
    "async-ps": ("mpitrain.strategies.parameter_server:ParameterServerStrategy",
                 "asynchronous parameter server: --servers ranks apply workers' gradients "
                 "as they arrive"),
}
MODES = tuple(STRATEGIES)

# --model values that are not gradient models but train with a strategy of their own
# (--mode stays sync): (module:class, one line for --help)
ESTIMATORS: dict[str, tuple[str, str]] = {
    "gbdt": ("mpitrain.strategies.boosting:BoostingStrategy",
             "gradient-boosted trees on histograms (one reduce-scatter per tree level)"),
    "forest": ("mpitrain.strategies.forest:ForestStrategy",
               "random forest, per-row Poisson bootstrap keyed by (seed, tree, row)"),
    "kmeans": ("mpitrain.strategies.kmeans:KMeansStrategy",
               "k-means, k-means|| init, one allreduce per Lloyd iteration"),
}


def strategy_class(mode: str) -> type[Strategy]:
    """The Strategy subclass registered for ``mode`` (imported on first use)."""
    module, name = STRATEGIES[mode][0].split(":")
    return getattr(import_module(module), name)


def strategy_for(model: str, mode: str) -> type[Strategy]:
    """The strategy a run uses: the estimator's own for ``--model gbdt|kmeans``, else the
    one ``--mode`` names."""
    if model in ESTIMATORS:
        module, name = ESTIMATORS[model][0].split(":")
        return getattr(import_module(module), name)
    return strategy_class(mode)


__all__ = ["ESTIMATORS", "MODES", "STRATEGIES", "strategy_class", "strategy_for"]
