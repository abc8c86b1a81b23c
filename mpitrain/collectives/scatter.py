"""Reduce-scatter and allgather of a flat buffer: the two halves of an allreduce, for
sharded training (each rank keeps and updates only its chunk of the model).

Chunk layout: :func:`~mpitrain.collectives.ring.chunk_offsets` ``(n, P)``; rank ``r`` owns
chunk ``r`` (the first ``n % P`` chunks are one element longer; chunks may be empty).
Both run in place on the full-length buffer, by an already resolved algorithm:

- ``"ring"``: the ring allreduce's own halves over point-to-point messages
  (:func:`.ring.sendrecv_reduce_scatter`, :func:`.ring.sendrecv_allgather`), each a
  ``P - 1``-step ring of one Sendrecv per step, ``(P-1)/P · n`` elements sent per rank;
- ``"mpi"``: the MPI library's ``Reduce_scatter`` (into a scratch chunk, then copied into
  place) and ``Allgatherv`` (in place).
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import ring, scratch
from mpitrain.collectives.args import MPI_TYPES
from mpitrain.collectives.context import CommState
from mpitrain.kernels.reduce import scale_inplace


def chunk(flat: np.ndarray, size: int, rank: int) -> np.ndarray:
    """The view of ``flat`` that rank ``rank`` of ``size`` owns."""
    off = ring.chunk_offsets(flat.size, size)
    return flat[off[rank] : off[rank + 1]]


def _counts(n: int, size: int) -> tuple[list[int], list[int]]:
    off = ring.chunk_offsets(n, size)
    return [off[i + 1] - off[i] for i in range(size)], off[:-1]


def reduce_scatter(flat: np.ndarray, state: CommState, algorithm: str, mean: bool) -> None:
    """Collective: leave the sum (``mean``: the average) over all ranks of this rank's chunk
    of ``flat`` in that chunk; the other chunks hold unspecified partial sums."""
    comm = state.comm
    size, rank = comm.Get_size(), comm.Get_rank()
    if flat.size == 0:
        return
    if size > 1:
        if algorithm == "ring":
            ring.sendrecv_reduce_scatter(flat, comm, state.next_tags()[0], rank)
        else:
            counts, _ = _counts(flat.size, size)
            mine = chunk(flat, size, rank)
            tmp = scratch.acquire(flat.dtype, max(counts))
            got = tmp[: mine.size]
            mpitype = MPI_TYPES[flat.dtype]
            comm.Reduce_scatter([flat, mpitype], [got, mpitype], recvcounts=counts,
                                op=MPI.SUM)
            mine[...] = got
            scratch.release(tmp)
    if mean and size > 1:
        scale_inplace(chunk(flat, size, rank), 1.0 / size)


def allgather(flat: np.ndarray, state: CommState, algorithm: str) -> None:
    """Collective: every rank's chunk of ``flat`` into every rank's ``flat``."""
    comm = state.comm
    size = comm.Get_size()
    if flat.size == 0 or size == 1:
        return
    if algorithm == "ring":
        ring.sendrecv_allgather(flat, comm, state.next_tags()[0], comm.Get_rank())
    else:
        counts, displs = _counts(flat.size, size)
        comm.Allgatherv(MPI.IN_PLACE, [flat, counts, displs, MPI_TYPES[flat.dtype]])
