"""A client's local training: E epochs of minibatch SGD (or FedProx) from the global model.

Runs on the numba kernels (the model's gradient kernel for the summed batch gradient,
``sgd_update`` / ``proximal_sgd_update`` for the step) with buffers preallocated for the
rank's largest client, so training a client allocates only its random generator. The
client's stream is keyed by ``(seed, CLIENT_STREAM, round, client id)``: the same on any
rank, for any P.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpitrain.kernels.optimizers import proximal_sgd_update, sgd_update

from ..models import BoundModel
from .clients import LocalClients

CLIENT_STREAM = 0xC11E


@dataclass
class ClientStats:
    """What one client's local training reports (sums over every local step)."""

    loss_sum: float = 0.0
    correct: float = 0.0
    rows: int = 0  # rows processed (E × client size)


class LocalTrainer:
    """Trains this rank's clients one after another; ``delta`` holds the last update."""

    def __init__(self, model: BoundModel, *, clients: LocalClients, epochs: int,
                 batch: int, lr: float, weight_decay: float, prox_mu: float, seed: int,
                 dtype: np.dtype) -> None:
        self.model = model
        self.clients = clients
        self.epochs, self.batch, self.lr = epochs, batch, lr
        self.weight_decay, self.prox_mu, self.seed = weight_decay, prox_mu, seed
        largest = max(1, clients.largest)
        self.max_rows = largest if batch == 0 else min(batch, largest)
        self.work = model.workspace(self.max_rows, np.dtype(dtype))
        self.grad = np.empty(model.size, dtype=dtype)
        self.local = np.empty(model.size, dtype=dtype)
        self.order = np.empty(largest, dtype=np.int64)

    @property
    def delta(self) -> np.ndarray:
        """``local - global`` of the client trained last (valid until the next call)."""
        return self.local

    def train(self, index: int, round_index: int, params: np.ndarray) -> ClientStats:
        """Train the client at position ``index`` of this rank's clients from ``params``;
        leaves its update ``local - params`` in :attr:`delta`."""
        clients = self.clients
        rows = clients.rows_of(index)
        count = len(rows)
        client = int(clients.ids[index])
        rng = np.random.default_rng([self.seed, CLIENT_STREAM, round_index, client])
        batch = count if self.batch == 0 else min(self.batch, count)
        order = self.order[:count]
        local, grad, work = self.local, self.grad, self.work
        np.copyto(local, params)
        stats = ClientStats()
        for _ in range(self.epochs):
            order[:] = rows
            if batch < count:
                rng.shuffle(order)
            for start in range(0, count, batch):
                chunk = order[start:start + batch]
                loss, correct = self.model.gradient(local, grad, clients.X, clients.y, chunk,
                                                    work)
                scale = 1.0 / len(chunk)
                if self.prox_mu > 0.0:
                    proximal_sgd_update(local, grad, params, scale, self.lr, self.weight_decay,
                                        self.prox_mu)
                else:
                    sgd_update(local, grad, scale, self.lr, self.weight_decay)
                stats.loss_sum += loss
                stats.correct += correct
                stats.rows += len(chunk)
        local -= params
        return stats
