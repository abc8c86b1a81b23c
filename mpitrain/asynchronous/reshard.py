"""Move a split's rows so that only some ranks hold them: the parameter-server layout, where
the server ranks train on nothing and the workers hold contiguous blocks of all rows.

Rows keep their global order: worker ``w`` of ``W`` gets block ``w`` of the split
(:func:`mpitrain.data.block_range`), whatever blocks the ranks held before. One
``Alltoallv`` for the features and one for the labels.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.data import Shard, block_range

_MPI_TYPES = {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE,
              np.dtype(np.int64): MPI.INT64_T}


def reshard(shard: Shard, comm: MPI.Comm, *, holders: range) -> Shard:
    """Collective: ``shard``'s split re-split into contiguous blocks over the ranks in
    ``holders`` (in order); every other rank gets an empty shard."""
    size, rank = comm.Get_size(), comm.Get_rank()
    n = shard.n_total
    target = [(0, 0)] * size
    for w, holder in enumerate(holders):
        target[holder] = block_range(n, len(holders), w)
    mine = np.array([shard.start, shard.start + len(shard.y)], dtype=np.int64)
    sources = np.empty((size, 2), dtype=np.int64)
    comm.Allgather(mine, sources)
    send = np.array([_overlap(mine, target[r]) for r in range(size)], dtype=np.int64)
    recv = np.array([_overlap(sources[r], target[rank]) for r in range(size)], dtype=np.int64)
    lo, hi = target[rank]
    X = np.empty((hi - lo, shard.X.shape[1]), dtype=shard.X.dtype)
    y = np.empty(hi - lo, dtype=shard.y.dtype)
    for array, out, width in ((shard.X, X, shard.X.shape[1]), (shard.y, y, 1)):
        send_counts = (send[:, 1] - send[:, 0]).clip(0) * width
        send_displs = (send[:, 0] - shard.start).clip(0) * width
        recv_counts = (recv[:, 1] - recv[:, 0]).clip(0) * width
        recv_displs = (recv[:, 0] - lo).clip(0) * width
        kind = _MPI_TYPES[array.dtype]
        comm.Alltoallv([np.ascontiguousarray(array), (send_counts, send_displs), kind],
                       [out, (recv_counts, recv_displs), kind])
    return Shard(X=X, y=y, start=lo, n_total=n)


def _overlap(a, b) -> tuple[int, int]:
    """[start, stop) of the intersection of two ranges (stop <= start: empty)."""
    start, stop = max(int(a[0]), int(b[0])), min(int(a[1]), int(b[1]))
    return (start, stop) if stop > start else (0, 0)
