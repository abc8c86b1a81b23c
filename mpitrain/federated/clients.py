"""Clients on ranks: which rank simulates which client, and moving each client's rows there.

The data loader gives every rank a contiguous block of the training rows. Federated mode
needs the rows of a client on the rank that trains it, so:

1. :func:`gather_labels` (one ``Allgatherv``): every rank gets the global label array, which
   the partitioner needs (8 bytes per training row on every rank).
2. :func:`assign_clients`: contiguous ranges of client ids per rank, balanced by row count;
   a function of the client sizes and P only, so every rank computes the same owners.
3. :func:`distribute_rows` (one ``Alltoallv`` of feature rows): every rank sends each of its
   block's rows to the owner of the row's client. Since every rank knows the partition and
   every block, counts need no exchange. Rows arrive in global order; each client's row list
   keeps the partition's order, so local training does not depend on P.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from ..data import Shard
from .partition import Partition


@dataclass(frozen=True, eq=False)
class LocalClients:
    """The clients one rank simulates and their rows.

    Client ``ids[i]`` trains on rows ``rows[offsets[i]:offsets[i + 1]]`` of ``X``/``y``.
    """

    X: np.ndarray  # (n_mine, d) C-contiguous
    y: np.ndarray  # (n_mine,)
    ids: np.ndarray  # int64 global client ids, ascending
    rows: np.ndarray  # int64 local row indices, client by client
    offsets: np.ndarray  # int64, len(ids) + 1

    def local_index(self, client: int) -> int:
        """Position of global client ``client`` in ``ids``."""
        return int(np.searchsorted(self.ids, client))

    def rows_of(self, index: int) -> np.ndarray:
        """Local row indices of the client at position ``index`` (a view)."""
        return self.rows[self.offsets[index]:self.offsets[index + 1]]

    @property
    def largest(self) -> int:
        """Rows of this rank's largest client (0 without clients)."""
        return int(np.diff(self.offsets).max()) if len(self.ids) else 0


def block_layout(shard: Shard, comm: MPI.Comm) -> tuple[np.ndarray, np.ndarray]:
    """Collective: (start, count) of every rank's block of training rows (tiny metadata)."""
    pairs = comm.allgather((int(shard.start), int(shard.n_local)))
    starts = np.array([p[0] for p in pairs], dtype=np.int64)
    counts = np.array([p[1] for p in pairs], dtype=np.int64)
    return starts, counts


def gather_labels(shard: Shard, comm: MPI.Comm, *, starts: np.ndarray,
                  counts: np.ndarray) -> np.ndarray:
    """Collective (``Allgatherv``): the labels of all training rows, in global order."""
    labels = np.empty(int(counts.sum()), dtype=shard.y.dtype)
    kind = from_numpy_dtype(shard.y.dtype)
    send = np.ascontiguousarray(shard.y)
    comm.Allgatherv([send, kind], [labels, (counts, starts), kind])
    return labels


def assign_clients(sizes: np.ndarray, ranks: int) -> np.ndarray:
    """Owner rank of each client: contiguous id ranges, >= 1 client per rank, cut where the
    running row total crosses r/P of all rows (balanced work when every client is sampled).
    """
    clients = len(sizes)
    if clients < ranks:
        raise ValueError(f"need at least one client per rank ({clients} < {ranks})")
    total = np.cumsum(sizes, dtype=np.float64)
    bounds = [0]
    for r in range(1, ranks):
        cut = int(np.searchsorted(total, total[-1] * r / ranks, side="left")) + 1
        bounds.append(min(max(cut, bounds[-1] + 1), clients - (ranks - r)))
    bounds.append(clients)
    owner = np.empty(clients, dtype=np.int64)
    for r in range(ranks):
        owner[bounds[r]:bounds[r + 1]] = r
    return owner


def distribute_rows(shard: Shard, labels: np.ndarray, partition: Partition, owner: np.ndarray,
                    comm: MPI.Comm, *, starts: np.ndarray, counts: np.ndarray) -> LocalClients:
    """Collective (one ``Alltoallv``): move every training row to the rank of its client.

    Each rank sends the rows of its block in global order, grouped by destination; the
    receiver therefore gets its rows sorted by global position. Labels come from the global
    ``labels`` array, so only features travel.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    n_total = len(labels)
    row_client = partition.client_of(n_total)
    row_owner = np.where(row_client >= 0, owner[np.maximum(row_client, 0)], -1)
    start, count = int(starts[rank]), int(counts[rank])
    dest = row_owner[start:start + count]
    keep = dest >= 0
    order = np.flatnonzero(keep)[np.argsort(dest[keep], kind="stable")]
    send = np.ascontiguousarray(shard.X[order])
    send_counts = np.bincount(dest[keep], minlength=size).astype(np.int64)
    recv_counts = np.array([np.count_nonzero(row_owner[s:s + c] == rank)
                            for s, c in zip(starts, counts, strict=True)], dtype=np.int64)
    width = shard.X.shape[1]
    recv = np.empty((int(recv_counts.sum()), width), dtype=shard.X.dtype)
    row_type = from_numpy_dtype(shard.X.dtype).Create_contiguous(width).Commit()
    try:
        comm.Alltoallv([send, (send_counts, _displacements(send_counts)), row_type],
                       [recv, (recv_counts, _displacements(recv_counts)), row_type])
    finally:
        row_type.Free()
    mine = np.flatnonzero(row_owner == rank)  # global positions, the order rows arrived in
    ids = np.flatnonzero(owner == rank).astype(np.int64)
    client_rows = [np.searchsorted(mine, partition.client(int(c))) for c in ids]
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in client_rows], out=offsets[1:])
    rows = (np.concatenate(client_rows).astype(np.int64) if client_rows
            else np.empty(0, np.int64))
    y = np.ascontiguousarray(labels[mine])
    return LocalClients(X=recv, y=y, ids=ids, rows=rows, offsets=offsets)


def _displacements(counts: np.ndarray) -> np.ndarray:
    out = np.zeros_like(counts)
    np.cumsum(counts[:-1], out=out[1:])
    return out
