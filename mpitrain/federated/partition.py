"""Split the global training rows into K clients: ``iid``, ``dirichlet``, ``shards``, ``labels``.

Every partitioner reads the GLOBAL label array (identical on every rank, in global training
order) and a generator keyed by ``(seed, PARTITION_STREAM)``; nothing depends on the number of
ranks, so the clients are the same for any P. The result is CSR-shaped: the global training
positions of client 0, then client 1, ... and the offsets between them.

- ``iid``: one seeded permutation cut into K nearly equal parts.
- ``dirichlet``: for each class, client proportions drawn from Dir(alpha·1_K) (Hsu et al.
  2019); small alpha gives few classes per client and very unequal sizes.
- ``shards``: McMahan et al. 2017's pathological split: sort by label, cut into 2K equal
  shards, give each client two random shards (most clients see two classes).
- ``labels``: each client holds ``labels_per_client`` classes (assigned round-robin over a
  seeded class permutation, so every class has a client when K·L >= classes); a class's rows
  are split evenly between the clients holding it.
- ``kmeans``: client c holds the rows of cluster c of a k-means (K = clients) of the
  features (non-IID by feature space); the caller passes the global cluster of every row
  as ``labels`` (:func:`mpitrain.clustering.lloyd.cluster_rows`, the same for any P).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError

PARTITIONS = ("iid", "dirichlet", "shards", "labels", "kmeans")
PARTITION_STREAM = 0xFED1


@dataclass(frozen=True, eq=False)
class Partition:
    """Client ``c`` holds global training positions ``rows[offsets[c]:offsets[c + 1]]``."""

    rows: np.ndarray  # int64
    offsets: np.ndarray  # int64, K + 1

    @property
    def clients(self) -> int:
        return len(self.offsets) - 1

    @property
    def sizes(self) -> np.ndarray:
        """Rows of each client (int64, K)."""
        return np.diff(self.offsets)

    def client(self, c: int) -> np.ndarray:
        """Global training positions of client ``c`` (a view)."""
        return self.rows[self.offsets[c]:self.offsets[c + 1]]

    def client_of(self, n_rows: int) -> np.ndarray:
        """Client of every global training position (int64, -1 for a row of no client)."""
        owner = np.full(n_rows, -1, dtype=np.int64)
        owner[self.rows] = np.repeat(np.arange(self.clients, dtype=np.int64), self.sizes)
        return owner

    def label_histograms(self, labels: np.ndarray, n_classes: int) -> np.ndarray:
        """(K, n_classes) int64: rows of each class held by each client."""
        client = np.repeat(np.arange(self.clients, dtype=np.int64), self.sizes)
        flat = client * n_classes + labels[self.rows].astype(np.int64)
        counts = np.bincount(flat, minlength=self.clients * n_classes)
        return counts.reshape(self.clients, n_classes)


def partition_rows(labels: np.ndarray, *, clients: int, scheme: str, seed: int,
                   alpha: float = 0.5, labels_per_client: int = 2,
                   n_classes: int = 0) -> Partition:
    """Partition the rows of the global ``labels`` into ``clients`` clients (local, pure).

    ``n_classes`` is needed by ``dirichlet`` and ``labels`` (class labels ``0..k-1``).
    Raises UserError when a client would end up with no rows.
    """
    n = len(labels)
    rng = np.random.default_rng([seed, PARTITION_STREAM])
    if scheme == "iid":
        _require(clients <= n, f"--clients {clients} is more than the {n} training rows")
        parts = _split_even(rng.permutation(n), clients)
    elif scheme == "shards":
        _require(2 * clients <= n, f"--partition shards cuts {n} training rows into 2 × "
                 f"--clients = {2 * clients} shards; use at most {n // 2} clients")
        perm = rng.permutation(n)
        by_label = perm[np.argsort(labels[perm], kind="stable")]
        shards = _split_even(by_label, 2 * clients)
        pick = rng.permutation(2 * clients)
        parts = [np.concatenate([shards[pick[2 * c]], shards[pick[2 * c + 1]]])
                 for c in range(clients)]
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, rng, clients=clients, alpha=alpha, n_classes=n_classes)
    elif scheme == "kmeans":  # labels are the rows' clusters 0..clients-1
        parts = [np.flatnonzero(labels == c) for c in range(clients)]
    elif scheme == "labels":
        parts = _by_labels(labels, rng, clients=clients, per_client=labels_per_client,
                           n_classes=n_classes)
    else:
        raise ValueError(f"unknown partition {scheme!r}")
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    empty = np.flatnonzero(sizes == 0)
    _require(len(empty) == 0, f"--clients {clients} is too many for {n} training rows with "
             f"--partition {scheme}: client {empty[0] if len(empty) else 0} gets no rows")
    offsets = np.zeros(clients + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    rows = np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)
    return Partition(rows, offsets)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _split_even(order: np.ndarray, parts: int) -> list[np.ndarray]:
    """Cut ``order`` into ``parts`` consecutive pieces whose sizes differ by at most one."""
    q, r = divmod(len(order), parts)
    bounds = [c * q + min(c, r) for c in range(parts + 1)]
    return [order[bounds[c]:bounds[c + 1]] for c in range(parts)]


def _class_rows(labels: np.ndarray, rng: np.random.Generator, n_classes: int) -> list[np.ndarray]:
    """Shuffled global positions of each class."""
    return [rng.permutation(np.flatnonzero(labels == k)) for k in range(n_classes)]


def _dirichlet(labels: np.ndarray, rng: np.random.Generator, *, clients: int, alpha: float,
               n_classes: int) -> list[np.ndarray]:
    """Per class, client shares ~ Dir(alpha); an empty client then takes one row from the
    largest client (deterministic), so every client has data when K <= rows."""
    _require(clients <= len(labels),
             f"--clients {clients} is more than the {len(labels)} training rows")
    pieces: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for rows in _class_rows(labels, rng, n_classes):
        shares = rng.dirichlet(np.full(clients, alpha))
        cuts = np.floor(np.cumsum(shares)[:-1] * len(rows)).astype(np.int64)
        for c, part in enumerate(np.split(rows, cuts)):
            pieces[c].append(part)
    parts = [np.concatenate(p) if p else np.empty(0, np.int64) for p in pieces]
    for c in range(clients):
        if len(parts[c]) == 0:
            donor = int(np.argmax([len(p) for p in parts]))
            parts[c], parts[donor] = parts[donor][-1:], parts[donor][:-1]
    return parts


def _by_labels(labels: np.ndarray, rng: np.random.Generator, *, clients: int, per_client: int,
               n_classes: int) -> list[np.ndarray]:
    """Client c holds classes perm[(c·L + j) mod k], j < L; each class is split evenly."""
    _require(per_client <= n_classes, f"--labels-per-client must be at most the number of "
             f"classes, {n_classes} (got {per_client})")
    _require(clients * per_client >= n_classes, f"--partition labels with --clients {clients} "
             f"and --labels-per-client {per_client} leaves classes without a client; need "
             f"clients × labels-per-client >= {n_classes}")
    perm = rng.permutation(n_classes)
    holders: list[list[int]] = [[] for _ in range(n_classes)]
    for c in range(clients):
        for j in range(per_client):
            holders[int(perm[(c * per_client + j) % n_classes])].append(c)
    pieces: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for k, rows in enumerate(_class_rows(labels, rng, n_classes)):
        for c, part in zip(holders[k], np.array_split(rows, len(holders[k])), strict=True):
            pieces[c].append(part)
    return [np.concatenate(p) if p else np.empty(0, np.int64) for p in pieces]
