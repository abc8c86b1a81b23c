"""Federated averaging over MPI: K simulated clients on P ranks, one unit of the loop per round.

Round r (the same on every rank, for any P):

- ``contribute``: sample the round's clients from (seed, r); this rank trains the sampled
  clients it owns one after another (local SGD / FedProx from the global model, see
  :mod:`mpitrain.federated.local`), clips each update when asked, and writes ONE message:
  ``Σ_c w_c·Δ_c | weight, loss, correct, rows, clients, bytes, stop`` with ``w_c`` = the
  client's row count (1 under DP).
- ``reduce``: the aggregation rule (:mod:`mpitrain.federated.aggregation`) combines the
  messages: ONE collective sums them (``--reduce``), or masked as integers with
  ``--secure-agg``; a robust rule gathers the individual updates instead.
- ``apply``: the mean update (Σ w_c Δ_c / Σ w_c; under DP the noised sum over q·K, see
  :class:`mpitrain.federated.privacy.ClientPrivacy`) goes through the server optimizer
  (:mod:`mpitrain.federated.server`).

The strategy is composed of parts, so variants combine without flags inside it: the
local trainer (FedAvg / FedProx), the aggregation rule, the privacy wrapper (clipping,
DP-FedAvg) and the server optimizer (FedAvg, FedAvgM, FedAdam, ...).
- ``evaluate`` after every ``--eval-every`` rounds and the last one.

Everything random is keyed by (seed, round, client), so checkpoints hold only the global
model, the server optimizer's state, the accountant's round count and the period's sums.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI

from ..clustering.lloyd import cluster_rows
from ..config import TrainConfig, shared_memory_allowed
from ..data import Dataset
from ..errors import UserError, agree, checked, shared_error
from ..evaluation import Evaluator, summarize
from ..federated.aggregation import Aggregation, RobustRule, SecureWeightedSum, WeightedSum
from ..federated.clients import (
    LocalClients,
    assign_clients,
    block_layout,
    distribute_rows,
    gather_labels,
)
from ..federated.local import LocalTrainer
from ..federated.metrics import FederatedEvaluator
from ..federated.partition import Partition, partition_rows
from ..federated.privacy import ClientPrivacy
from ..federated.robust import RobustReducer
from ..federated.sampling import clients_per_round, sample_clients
from ..federated.secure import (
    TAIL_LIMIT,
    TAIL_SCALE,
    SecureSum,
    payload_scale,
    require_cryptography,
)
from ..federated.server import ServerOptimizer
from ..models import BoundModel, Layout
from .base import StopRequested, Strategy, Unit, vote, voted

# Tail slots after the n payload numbers; STOP is last (the stop vote).
WEIGHT, LOSS, CORRECT, ROWS, CLIENTS, BYTES, STOP = range(7)
TAIL = 7


@dataclass(kw_only=True)
class FederatedStrategy(Strategy):
    """FedAvg and its relatives as hooks of the shared loop (see the module docstring)."""

    unit_name = "round"
    period_name = "round"
    length_option = "rounds"

    comm: MPI.Comm
    layout: Layout
    params: np.ndarray
    trainer: LocalTrainer
    clients: LocalClients
    partition: Partition
    owner: np.ndarray  # rank of every client
    server: ServerOptimizer
    aggregation: Aggregation
    privacy: ClientPrivacy
    test: Callable[[np.ndarray], dict[str, Any]] | None
    rounds: int
    eval_every: int
    seed: int
    client_fraction: float
    regression: bool = False
    histograms: np.ndarray | None = None
    message: np.ndarray = field(init=False)  # this round's message: payload | tail

    def __post_init__(self) -> None:
        n = self.layout.size
        dtype = self.params.dtype
        self.message = np.zeros(n + TAIL, dtype=dtype)
        self._rank = self.comm.Get_rank()
        self._updates = None
        if self.aggregation.individual:
            most = min(clients_per_round(self.partition.clients, self.client_fraction),
                       len(self.clients.ids))
            self._updates = np.empty((most, n), dtype=dtype)
        self._counts = np.zeros(self.comm.Get_size(), dtype=np.int64)
        self._sampled = np.empty(0, dtype=np.int64)
        self._period = np.zeros(5)  # loss, correct, rows, client updates, bytes

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def validate(cls, config: TrainConfig) -> None:
        sampled = clients_per_round(config.clients, config.client_fraction)
        combinations = [
            (sampled > config.clients,
             f"--client-fraction {config.client_fraction:g} samples {sampled} clients per "
             f"round but there are only --clients {config.clients}"),
            (config.dp_noise > 0 and config.dp_clip <= 0,
             f"--dp-noise {config.dp_noise:g} needs --dp-clip > 0 (the noise std is dp-noise "
             f"× dp-clip) (got --dp-clip {config.dp_clip:g})"),
            (config.secure_agg and config.dp_clip <= 0,
             "--secure-agg needs --dp-clip > 0 to bound each update for the fixed-point "
             f"encoding (got --dp-clip {config.dp_clip:g})"),
            (config.aggregate != "mean" and config.secure_agg,
             f"--aggregate {config.aggregate} needs individual client updates, which "
             "--secure-agg hides; use --aggregate mean"),
            (config.aggregate != "mean" and config.dp_noise > 0,
             f"--aggregate {config.aggregate} has no DP accounting; use --aggregate mean "
             f"with --dp-noise (got --dp-noise {config.dp_noise:g})"),
            (config.aggregate == "krum" and sampled < 2 * config.byzantine + 3,
             f"--aggregate krum with --byzantine {config.byzantine} needs at least "
             f"{2 * config.byzantine + 3} sampled clients per round (got {sampled} = max(1, "
             f"round({config.client_fraction:g} × {config.clients})))"),
        ]
        for bad, message in combinations:
            if bad:
                raise UserError(message)

    @classmethod
    def kernels(cls, config: TrainConfig, *, ranks: int) -> frozenset[str]:
        # local SGD / FedProx and the evaluators' forward passes (the reductions' kernels
        # are loaded by mpitrain.collectives itself)
        return frozenset({"gradient", "loss", "predict", "sgd", "proximal_sgd"})

    @classmethod
    def build(cls, config: TrainConfig, *, model: BoundModel, params: np.ndarray,
              dataset: Dataset, comm: MPI.Comm) -> FederatedStrategy:
        """Collective: partition the training rows into clients, move them to their ranks
        and assemble the strategy from its parts. Bad combinations with the data or the
        rank count raise the same UserError on every rank."""
        size = comm.Get_size()
        agree(comm, None if config.clients >= size else
              f"--clients {config.clients} is fewer than the {size} ranks; every rank needs "
              f"at least one client (use --clients >= {size} or fewer ranks)")
        regression = model.regression
        agree(comm, f"--partition {config.partition} needs class labels but --model "
              f"{model.name} is regression; use --partition iid or shards"
              if regression and config.partition in ("dirichlet", "labels") else None)
        starts, counts = block_layout(dataset.train, comm)
        labels = gather_labels(dataset.train, comm, starts=starts, counts=counts)
        groups = labels if config.partition != "kmeans" else _feature_clusters(
            config, dataset, comm, starts=starts, counts=counts)
        partition = checked(comm, partition_rows, groups, clients=config.clients,
                            scheme=config.partition, seed=config.seed, alpha=config.alpha,
                            labels_per_client=config.labels_per_client,
                            n_classes=dataset.n_classes)
        owner = assign_clients(partition.sizes, size)
        clients = distribute_rows(dataset.train, labels, partition, owner, comm,
                                  starts=starts, counts=counts)
        trainer = LocalTrainer(model, clients=clients,
                               epochs=config.local_epochs, batch=config.local_batch,
                               lr=config.local_lr, weight_decay=config.weight_decay,
                               prox_mu=config.prox_mu, seed=config.seed, dtype=params.dtype)
        server = ServerOptimizer(name=config.server_opt, lr=config.server_lr,
                                 momentum=config.server_momentum, beta1=config.server_beta1,
                                 beta2=config.server_beta2, tau=config.server_tau)
        server.allocate(params)
        histograms = (None if regression
                      else partition.label_histograms(labels, dataset.n_classes))
        test: Callable[[np.ndarray], dict[str, Any]] | None = None
        if dataset.test.n_total > 0:
            test = (Evaluator(model, shard=dataset.test, comm=comm)
                    if regression else
                    FederatedEvaluator(model, shard=dataset.test, comm=comm,
                                       n_classes=dataset.n_classes, histograms=histograms))
        privacy = ClientPrivacy(clip=config.dp_clip, noise=config.dp_noise,
                                delta=config.dp_delta, q=config.client_fraction,
                                clients=config.clients, seed=config.seed)
        return cls(
            comm=comm, layout=model.layout, params=params, trainer=trainer, clients=clients,
            partition=partition, owner=owner, server=server,
            aggregation=_aggregation(config, comm, layout=model.layout, dtype=params.dtype,
                                     partition=partition, dp=privacy.dp),
            privacy=privacy, test=test, rounds=config.rounds, eval_every=config.eval_every,
            seed=config.seed, client_fraction=config.client_fraction, regression=regression,
            histograms=histograms)

    # -- the loop's hooks --------------------------------------------------------------------
    @property
    def total_units(self) -> int:
        return self.rounds

    def units(self, start: int) -> Iterator[Unit]:
        for r in range(start, self.rounds):
            yield Unit(r, r, 0, (r + 1) % self.eval_every == 0 or r == self.rounds - 1)

    def sampled_clients(self, round_index: int) -> np.ndarray:
        """Ids of the clients of a round (the same on every rank)."""
        return sample_clients(seed=self.seed, round_index=round_index,
                              clients=self.partition.clients, fraction=self.client_fraction,
                              poisson=self.privacy.dp)

    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        n = self.layout.size
        message = self.message
        message.fill(0)
        payload, tail = message[:n], message[n:]
        sampled = self.sampled_clients(unit.period)
        self._sampled = sampled
        owners = self.owner[sampled]
        self._counts[:] = np.bincount(owners, minlength=len(self._counts))
        privacy = self.privacy
        for j, client in enumerate(sampled[owners == self._rank]):
            index = self.clients.local_index(int(client))
            stats = self.trainer.train(index, unit.period, self.params)
            delta = self.trainer.delta
            privacy.prepare(delta)
            weight = privacy.weight(len(self.clients.rows_of(index)))
            if self._updates is not None:
                self._updates[j] = delta
            else:
                delta *= weight
                payload += delta
            tail[WEIGHT] += weight
            with np.errstate(over="ignore"):  # too big for the dtype: inf, which apply() reports
                tail[LOSS] += stats.loss_sum
            tail[CORRECT] += stats.correct
            tail[ROWS] += stats.rows
            tail[CLIENTS] += 1
        tail[BYTES] = self.aggregation.bytes_sent(message, self._counts)
        vote(message, stop_requested)

    def reduce(self, unit: Unit) -> bool:
        self.aggregation.reduce(self.message, self._updates, self._counts, unit.period)
        return voted(self.message)

    def apply(self, unit: Unit) -> None:
        n = self.layout.size
        update, tail = self.message[:n], self.message[n:]
        loss = float(tail[LOSS])
        if not math.isfinite(loss) or loss >= TAIL_LIMIT:  # secure: non-finite → the limit
            raise shared_error(f"training diverged: the clients' training loss is not finite "
                               f"in round {unit.period + 1}; try a smaller --local-lr or "
                               "--server-lr; the last good checkpoint is kept")
        if not self.aggregation.individual:  # a robust rule's result is the update itself
            self.privacy.mean(update, float(tail[WEIGHT]), unit.period)
        self.server.step(self.params, update)
        self.privacy.step()
        self._period += [tail[LOSS], tail[CORRECT], tail[ROWS], tail[CLIENTS], tail[BYTES]]

    def evaluate(self, unit: Unit) -> dict[str, Any]:
        loss, correct, rows, updates, sent = (float(v) for v in self._period)
        self._period[:] = 0.0
        metrics: dict[str, Any] = {"round": unit.period + 1,
                                   "sampled_clients": len(self._sampled),
                                   "client_updates": round(updates),
                                   "samples": round(rows)}
        train = summarize(loss, correct, rows, label_stats=None)
        if self.regression:
            train.pop("accuracy", None)
        metrics.update({f"train_{key}": value for key, value in train.items()})
        if self.test is not None:
            for key, value in self.test(self.params).items():
                name = key if key.startswith("client_") else f"test_{key}"
                metrics[name] = value
        metrics["bytes_sent_per_rank"] = sent / self.comm.Get_size()
        metrics.update(self.privacy.metrics())
        return metrics

    # -- checkpoints and outputs -------------------------------------------------------------
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"params": self.params.copy()}
        arrays.update({f"server_{name}": value.copy()
                       for name, value in self.server.state.items()})
        meta = {"server_steps": self.server.steps, "dp_rounds": self.privacy.rounds,
                "period_sums": [float(v) for v in self._period]}
        return arrays, meta

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.params[...] = arrays["params"]
        for name, value in self.server.state.items():
            value[...] = arrays[f"server_{name}"]
        self.server.steps = int(meta["server_steps"])
        self.privacy.rounds = int(meta["dp_rounds"])
        self._period[:] = meta.get("period_sums", [0.0] * len(self._period))

    def summary(self) -> dict[str, Any]:
        """summary.json's ``federated`` section: the clients (the same on every rank)."""
        out: dict[str, Any] = {
            "clients": self.partition.clients,
            "clients_per_round": (clients_per_round(self.partition.clients,
                                                    self.client_fraction)
                                  if not self.privacy.dp else None),
            "client_sizes": self.partition.sizes.tolist(),
            "client_ranks": self.owner.tolist(),
        }
        if self.histograms is not None:
            out["label_histograms"] = self.histograms.tolist()
        dp = self.privacy.summary()
        if dp is not None:
            out["dp"] = dp
        return {"federated": out}


def _aggregation(config: TrainConfig, comm: MPI.Comm, *, layout: Layout, dtype: np.dtype,
                 partition: Partition, dp: bool) -> Aggregation:
    """Collective: the aggregation rule of ``config`` (secure aggregation agrees on keys)."""
    n = layout.size
    if config.aggregate != "mean":
        return RobustRule(RobustReducer(comm, rule=config.aggregate, n=n, dtype=dtype,
                                        trim_fraction=config.trim_fraction,
                                        byzantine=config.byzantine), n=n)
    if not config.secure_agg:
        return WeightedSum(comm, algorithm=config.reduce,
                           shared_memory=shared_memory_allowed(config))
    checked(comm, require_cryptography)
    weight_bound = config.clients if dp else partition.sizes.sum()
    scales = np.full(n + TAIL, TAIL_SCALE)
    limits = np.full(n + TAIL, TAIL_LIMIT)
    bound = config.dp_clip * float(weight_bound)
    scales[:n] = payload_scale(bound)
    limits[:n] = bound
    return SecureWeightedSum(SecureSum(comm, scales=scales, limits=limits))


__all__ = ["TAIL", "FederatedStrategy"]


def _feature_clusters(config: TrainConfig, dataset: Dataset, comm: MPI.Comm, *,
                      starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Collective (``--partition kmeans``): the cluster of every training row (global
    order) in a k-means of the features with one cluster per client."""
    train = dataset.train
    agree(comm, None if config.clients <= train.n_total else
          f"--partition kmeans makes one cluster per client, but --clients {config.clients} "
          f"is more than the {train.n_total} training rows")
    clusters = cluster_rows(comm, train.X, k=config.clients, first_row=train.start,
                            rows=train.n_total, seed=config.seed, algorithm=config.reduce)
    return gather_labels(dataclasses.replace(train, y=clusters), comm, starts=starts,
                         counts=counts)
