"""Federated averaging over MPI: K simulated clients on P ranks, one unit of the loop per round.

Round r (the same on every rank, for any P):

- ``contribute``: sample the round's clients from (seed, r); this rank trains the sampled
  clients it owns one after another (local SGD / FedProx from the global model, see
  :mod:`mpitrain.federated.local`), clips each update when asked, and writes ONE message:
  ``Σ_c w_c·Δ_c | weight, loss, correct, rows, clients, bytes, stop`` with ``w_c`` = the
  client's row count (1 under DP).
- ``reduce``: ONE collective sums the messages, through ``--reduce``; with ``--secure-agg``
  the message is masked and summed as integers (:mod:`mpitrain.federated.secure`); a robust
  rule gathers the individual updates instead (:mod:`mpitrain.federated.robust`).
- ``apply``: the mean update (Σ w_c Δ_c / Σ w_c; under DP the noised sum over q·K) goes
  through the server optimizer (:mod:`mpitrain.federated.server`); the accountant counts
  the round.
- ``evaluate`` after every ``--eval-every`` rounds and the last one.

Everything random is keyed by (seed, round, client), so checkpoints hold only the global
model, the server optimizer's state, the accountant's round count and the period's sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI

from mpitrain.kernels.network import SQUARED

from ..config import TrainConfig, shared_memory_allowed
from ..data import Dataset
from ..errors import agree, checked, shared_error
from ..evaluation import Evaluator, summarize
from ..federated.clients import (
    LocalClients,
    assign_clients,
    block_layout,
    distribute_rows,
    gather_labels,
)
from ..federated.local import LocalTrainer, warm_federated_kernels
from ..federated.metrics import FederatedEvaluator
from ..federated.partition import Partition, partition_rows
from ..federated.privacy import RdpAccountant, add_gaussian_noise, clip_update
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
from ..models import Layout
from .base import Strategy, Unit

# Tail slots after the n payload numbers; STOP is last (written by the loop).
WEIGHT, LOSS, CORRECT, ROWS, CLIENTS, BYTES, STOP = range(7)
TAIL = 7


@dataclass(kw_only=True)
class FederatedStrategy(Strategy):
    """FedAvg and its relatives as hooks of the shared loop (see the module docstring)."""

    comm: MPI.Comm
    layout: Layout
    params: np.ndarray
    trainer: LocalTrainer
    clients: LocalClients
    partition: Partition
    owner: np.ndarray  # rank of every client
    server: ServerOptimizer
    test: Callable[[np.ndarray], dict[str, Any]] | None
    rounds: int
    eval_every: int
    seed: int
    client_fraction: float
    regression: bool = False
    clip: float = 0.0
    noise: float = 0.0
    dp_delta: float = 1e-5
    reduce_algorithm: str = "auto"
    shared_memory: bool = True
    robust: RobustReducer | None = None
    secure: SecureSum | None = None
    accountant: RdpAccountant | None = None
    histograms: np.ndarray | None = None
    message: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = self.layout.size
        dtype = self.params.dtype
        self.message = np.zeros(n + TAIL, dtype=dtype)
        self._rank = self.comm.Get_rank()
        self._noise = np.empty(n, dtype=dtype) if self.dp else None
        self._updates = None
        if self.robust is not None:
            most = min(clients_per_round(self.partition.clients, self.client_fraction),
                       len(self.clients.ids))
            self._updates = np.empty((most, n), dtype=dtype)
        self._counts = np.zeros(self.comm.Get_size(), dtype=np.int64)
        self._sampled = np.empty(0, dtype=np.int64)
        self._period = np.zeros(5)  # loss, correct, rows, client updates, bytes

    @property
    def dp(self) -> bool:
        """Client-level DP (noise on the clipped sum, Poisson client sampling)."""
        return self.noise > 0.0

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
                              poisson=self.dp)

    # -- the four hooks -----------------------------------------------------------------
    def contribute(self, unit: Unit) -> None:
        n = self.layout.size
        message = self.message
        message.fill(0)
        payload, tail = message[:n], message[n:]
        sampled = self.sampled_clients(unit.period)
        self._sampled = sampled
        owners = self.owner[sampled]
        self._counts[:] = np.bincount(owners, minlength=len(self._counts))
        for j, client in enumerate(sampled[owners == self._rank]):
            index = self.clients.local_index(int(client))
            stats = self.trainer.train(index, unit.period, self.params)
            delta = self.trainer.delta
            if self.clip > 0.0:
                clip_update(delta, self.clip)
            weight = 1.0 if self.dp else float(len(self.clients.rows_of(index)))
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
        tail[BYTES] = self._round_bytes()

    def reduce(self, unit: Unit) -> None:
        n = self.layout.size
        if self.robust is not None:
            self.robust.reduce(self._updates, self._counts, self.message, slice(n, n + TAIL))
        elif self.secure is not None:
            self.secure.reduce(self.message, unit.period)
        else:
            super().reduce(unit)

    def apply(self, unit: Unit) -> None:
        n = self.layout.size
        update, tail = self.message[:n], self.message[n:]
        loss = float(tail[LOSS])
        if not math.isfinite(loss) or loss >= TAIL_LIMIT:  # secure: non-finite → the limit
            raise shared_error(f"training diverged: the clients' training loss is not finite "
                               f"in round {unit.period + 1}; try a smaller --local-lr or "
                               "--server-lr; the last good checkpoint is kept")
        if self.robust is None:
            if self.dp:
                add_gaussian_noise(update, self.noise * self.clip, self._noise,
                                   seed=self.seed, round_index=unit.period)
                update *= 1.0 / (self.client_fraction * self.partition.clients)
            elif tail[WEIGHT] > 0:
                update *= 1.0 / float(tail[WEIGHT])
        self.server.step(self.params, update)
        if self.accountant is not None:
            self.accountant.step()
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
        if self.accountant is not None:
            metrics["epsilon"] = self.accountant.epsilon(self.dp_delta)
            metrics["delta"] = self.dp_delta
        return metrics

    # -- bookkeeping ----------------------------------------------------------------------
    def _round_bytes(self) -> float:
        """Bytes this rank sends in this round's reduction (allreduce: 2(P-1)/P of the
        message, the bandwidth-optimal volume of ring, tree reduce+bcast and MPICH alike)."""
        size = self.comm.Get_size()
        if self.robust is not None:
            return self.robust.estimate_bytes(self._counts)
        nbytes = self.secure.nbytes if self.secure is not None else self.message.nbytes
        return 2.0 * (size - 1) / size * nbytes

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"params": self.params.copy()}
        arrays.update({f"server_{name}": value.copy()
                       for name, value in self.server.state.items()})
        meta = {"server_steps": self.server.steps,
                "dp_rounds": self.accountant.rounds if self.accountant is not None else 0,
                "period_sums": [float(v) for v in self._period]}
        return arrays, meta

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.params[...] = arrays["params"]
        for name, value in self.server.state.items():
            value[...] = arrays[f"server_{name}"]
        self.server.steps = int(meta["server_steps"])
        if self.accountant is not None:
            self.accountant.rounds = int(meta["dp_rounds"])
        self._period[:] = meta.get("period_sums", [0.0] * len(self._period))

    def summary(self) -> dict[str, Any]:
        """What summary.json records about the clients (the same on every rank)."""
        out: dict[str, Any] = {
            "clients": self.partition.clients,
            "clients_per_round": (clients_per_round(self.partition.clients,
                                                    self.client_fraction)
                                  if not self.dp else None),
            "client_sizes": self.partition.sizes.tolist(),
            "client_ranks": self.owner.tolist(),
        }
        if self.histograms is not None:
            out["label_histograms"] = self.histograms.tolist()
        if self.accountant is not None:
            out["dp"] = {"sampling": "poisson", "q": self.client_fraction,
                         "noise_multiplier": self.noise, "clip": self.clip,
                         "delta": self.dp_delta,
                         "epsilon": self.accountant.epsilon(self.dp_delta)}
        return out


def build_federated_strategy(config: TrainConfig, *, layout: Layout, kind: int,
                             params: np.ndarray, dataset: Dataset,
                             comm: MPI.Comm) -> FederatedStrategy:
    """Collective: partition the training rows into clients, move them to their ranks and
    assemble the strategy. Bad combinations with the data or the rank count raise the same
    UserError on every rank."""
    size = comm.Get_size()
    agree(comm, None if config.clients >= size else
          f"--clients {config.clients} is fewer than the {size} ranks; every rank needs at "
          f"least one client (use --clients >= {size} or fewer ranks)")
    regression = kind == SQUARED
    starts, counts = block_layout(dataset.train, comm)
    labels = gather_labels(dataset.train, comm, starts=starts, counts=counts)
    partition = checked(comm, partition_rows, labels, clients=config.clients,
                        scheme=config.partition, seed=config.seed, alpha=config.alpha,
                        labels_per_client=config.labels_per_client,
                        n_classes=dataset.n_classes)
    owner = assign_clients(partition.sizes, size)
    clients = distribute_rows(dataset.train, labels, partition, owner, comm, starts=starts,
                              counts=counts)
    warm_federated_kernels(comm, dtype=params.dtype, label_dtype=clients.y.dtype,
                           loss_kind=kind)
    trainer = LocalTrainer(layout, loss_kind=kind, clients=clients, epochs=config.local_epochs,
                           batch=config.local_batch, lr=config.local_lr,
                           weight_decay=config.weight_decay, prox_mu=config.prox_mu,
                           seed=config.seed, dtype=params.dtype)
    server = ServerOptimizer(name=config.server_opt, lr=config.server_lr,
                             momentum=config.server_momentum, beta1=config.server_beta1,
                             beta2=config.server_beta2, tau=config.server_tau)
    server.allocate(params)
    histograms = (None if regression
                  else partition.label_histograms(labels, dataset.n_classes))
    test: Callable[[np.ndarray], dict[str, Any]] | None = None
    if dataset.test.n_total > 0:
        test = (Evaluator(layout, loss_kind=kind, shard=dataset.test, comm=comm) if regression
                else FederatedEvaluator(layout, loss_kind=kind, shard=dataset.test, comm=comm,
                                        n_classes=dataset.n_classes, histograms=histograms))
    dp = config.dp_noise > 0.0
    robust = secure = accountant = None
    if config.aggregate != "mean":
        robust = RobustReducer(comm, rule=config.aggregate, n=layout.size, dtype=params.dtype,
                               trim_fraction=config.trim_fraction, byzantine=config.byzantine)
    if config.secure_agg:
        checked(comm, require_cryptography)
        weight_bound = config.clients if dp else partition.sizes.sum()
        scales = np.full(layout.size + TAIL, TAIL_SCALE)
        limits = np.full(layout.size + TAIL, TAIL_LIMIT)
        bound = config.dp_clip * float(weight_bound)
        scales[:layout.size] = payload_scale(bound)
        limits[:layout.size] = bound
        secure = SecureSum(comm, scales=scales, limits=limits)
    if dp:
        accountant = RdpAccountant(q=config.client_fraction, noise=config.dp_noise)
    return FederatedStrategy(
        comm=comm, layout=layout, params=params, trainer=trainer, clients=clients,
        partition=partition, owner=owner, server=server, test=test, rounds=config.rounds,
        eval_every=config.eval_every, seed=config.seed, client_fraction=config.client_fraction,
        regression=regression, clip=config.dp_clip, noise=config.dp_noise,
        dp_delta=config.dp_delta, reduce_algorithm=config.reduce,
        shared_memory=shared_memory_allowed(config), robust=robust, secure=secure,
        accountant=accountant, histograms=histograms)


__all__ = ["TAIL", "FederatedStrategy", "build_federated_strategy"]
