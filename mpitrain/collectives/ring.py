"""``ring``: reduce-scatter then allgather around the ring of ranks, pipelined in segments.

The flat buffer of ``n`` elements is cut into ``P`` chunks (chunk ``i`` starts at
``i*q + min(i, r)`` with ``q, r = divmod(n, P)``: the first ``r`` chunks are one element
longer, chunks may be empty). Each chunk is cut the same way into ``nseg`` segments of at
most ``segment_bytes``. A *block* is one segment of one step; block ``k`` belongs to step
``k // nseg``. Steps ``0 .. P-2`` reduce-scatter (rank ``p`` receives chunk ``p-s-1``
from its left neighbour into scratch and adds it into its own copy), steps ``P-1 .. 2P-3``
allgather (the received segment lands directly in the buffer). Every received block ``k``
is forwarded to the right neighbour as block ``k + nseg`` as soon as it has been reduced,
so the reduction of one segment overlaps the transfer of the next and steps overlap too.

Receives are posted ``window`` blocks ahead (reduce-scatter blocks use ``window`` scratch
slots taken from :mod:`scratch`). All messages of a call carry its two tags (one per
phase) on the caller's private communicator; MPI's non-overtaking rule keeps them in order.

Progress is made only inside :meth:`RingAllreduce.test` / :meth:`RingAllreduce.wait`
(MPI itself moves already-posted messages during any MPI call).
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import scratch
from mpitrain.collectives.args import MPI_TYPES
from mpitrain.kernels.reduce import add_into, scale_inplace

# Measured on 2 ranks (MPICH 5.0 wheel, CMA single-copy, 2 MiB L2 per core, 32 MiB L3):
# chunks that fit in cache go fastest as one Sendrecv per step (segmenting only adds
# per-message cost); from ~6 MiB chunks the whole-chunk scratch spills to DRAM, and 1 MiB
# segments with 2 receives in flight win (+20-30% busbw at 16-64 MiB). Persistent requests:
# a 4-byte Isend+Irecv+Waitall costs ~5.8 us in mpi4py, Startall+Waitall of persistent ones
# ~2.4 us, Sendrecv ~1.3 us. Only the scratch receives could be persistent (sends come from
# the caller's buffer), saving ~1.7 us per 1 MiB block of 70-100 us, under 1% of a 64 MiB
# allreduce; small messages already use Sendrecv. So they are not used.
SEGMENT_BYTES = 1024 * 1024
WINDOW = 2
# Blocking calls whose chunks are shorter than this take the unsegmented Sendrecv ring.
PIPELINE_MIN_BYTES = 6 * 1024 * 1024


def chunk_offsets(n: int, size: int) -> list[int]:
    """Start of each of the ``size`` chunks of ``n`` elements, plus ``n`` at the end."""
    q, rem = divmod(n, size)
    return [i * q + min(i, rem) for i in range(size + 1)]


def segment_bounds(off: list[int], chunk: int, j: int, nseg: int) -> tuple[int, int]:
    """``[lo, hi)`` of segment ``j`` of ``nseg`` of chunk ``chunk`` (``off`` from
    :func:`chunk_offsets`); cut like the chunks, so segments may be empty."""
    start = off[chunk]
    sq, sr = divmod(off[chunk + 1] - start, nseg)
    lo = start + j * sq + min(j, sr)
    return lo, lo + sq + (j < sr)


def segment_count(n: int, size: int, per_segment: int) -> int:
    """Segments per chunk so that none is longer than ``per_segment`` elements."""
    longest = -(-n // size)
    return max(1, -(-longest // max(1, per_segment)))


class RingAllreduce:
    """One ring allreduce in flight over ``flat`` (a 1-D view of ``buf``)."""

    def __init__(
        self,
        buf: np.ndarray,
        flat: np.ndarray,
        comm: MPI.Comm,
        tags: tuple[int, int],
        mean: bool,
        segment_bytes: int | None = None,
        window: int | None = None,
    ) -> None:
        segment_bytes = SEGMENT_BYTES if segment_bytes is None else segment_bytes
        window = WINDOW if window is None else window
        size, rank = comm.Get_size(), comm.Get_rank()
        self._buf, self._flat, self._comm, self._tags = buf, flat, comm, tags
        self._size, self._rank = size, rank
        self._left, self._right = (rank - 1) % size, (rank + 1) % size
        self._mpitype = MPI_TYPES[flat.dtype]
        self._factor = 1.0 / size if mean else None
        self._off = chunk_offsets(flat.size, size)
        self._nseg = nseg = segment_count(flat.size, size, segment_bytes // flat.itemsize)
        longest = -(-flat.size // size)  # elements of the first (longest) chunk
        self._seg = -(-longest // nseg)  # longest segment, in elements
        self._rs_blocks = (size - 1) * nseg
        self._nblocks = 2 * self._rs_blocks
        self._window = max(1, min(window, self._rs_blocks))
        self._scratch = scratch.acquire(flat.dtype, self._window * self._seg)
        self._recvs: list[MPI.Request | None] = [None] * self._nblocks
        self._regions: list[tuple[int, int]] = [(0, 0)] * self._nblocks
        self._sends: list[MPI.Request | None] = [None] * self._nblocks
        self._posted = 0  # receives posted: blocks [0, _posted)
        self._done = 0  # blocks received and processed: [0, _done)
        self._finished = False
        for j in range(min(nseg, self._nblocks)):
            self._send(j, *self._segment(rank, j))
        self._post_recvs()

    # -- geometry ---------------------------------------------------------------------
    def _segment(self, chunk: int, j: int) -> tuple[int, int]:
        return segment_bounds(self._off, chunk, j, self._nseg)

    def _recv_chunk(self, k: int) -> int:
        step = k // self._nseg
        if step < self._size - 1:
            return (self._rank - step - 1) % self._size
        return (self._rank - step + self._size - 1) % self._size

    # -- messages ---------------------------------------------------------------------
    def _send(self, k: int, lo: int, hi: int) -> None:
        tag = self._tags[k >= self._rs_blocks]
        spec = [self._flat[lo:hi], self._mpitype]
        self._sends[k] = self._comm.Isend(spec, self._right, tag)

    def _post_recvs(self) -> None:
        """Post every receive the window and the send-buffer rule allow (never blocks)."""
        limit = min(self._done + self._window, self._nblocks)
        while self._posted < limit:
            m = self._posted
            lo, hi = self._segment(self._recv_chunk(m), m % self._nseg)
            if m < self._rs_blocks:
                slot = (m % self._window) * self._seg
                view = self._scratch[slot : slot + hi - lo]
            else:
                # The region was sent in reduce-scatter block m - rs_blocks: that send
                # must be complete before anything may be received into it.
                dep = self._sends[m - self._rs_blocks]
                if dep is not None and not dep.Test():
                    return
                view = self._flat[lo:hi]
            self._regions[m] = (lo, hi)
            self._recvs[m] = self._comm.Irecv([view, self._mpitype], self._left,
                                              self._tags[m >= self._rs_blocks])
            self._posted += 1

    def _on_received(self, k: int) -> None:
        lo, hi = self._regions[k]
        if k < self._rs_blocks:
            slot = (k % self._window) * self._seg
            dst = self._flat[lo:hi]
            add_into(dst, self._scratch[slot : slot + hi - lo])
            if self._factor is not None and k >= self._rs_blocks - self._nseg:
                scale_inplace(dst, self._factor)  # this rank's fully reduced chunk
        if k + self._nseg < self._nblocks:
            self._send(k + self._nseg, lo, hi)

    # -- driving ------------------------------------------------------------------------
    def _advance(self, blocking: bool) -> bool:
        while self._done < self._nblocks:
            self._post_recvs()
            k = self._done
            req = self._recvs[k]
            if req is None:  # not posted: waiting for an old send to complete
                dep = self._sends[k - self._rs_blocks]
                if blocking:
                    dep.Wait()
                elif not dep.Test():
                    return False
                continue
            if blocking:
                req.Wait()
            elif not req.Test():
                return False
            self._recvs[k] = None
            self._on_received(k)
            self._done += 1
        sends = [req for req in self._sends if req is not None]
        if blocking:
            MPI.Request.Waitall(sends)
        elif not MPI.Request.Testall(sends):
            return False
        if not self._finished:
            self._finished = True
            scratch.release(self._scratch)
        return True

    def test(self) -> bool:
        """Progress as far as possible without blocking; True when the result is ready."""
        return self._finished or self._advance(blocking=False)

    def wait(self) -> np.ndarray:
        """Drive the ring to completion and return the buffer."""
        if not self._finished:
            self._advance(blocking=True)
        return self._buf


def sendrecv_reduce_scatter(flat: np.ndarray, comm: MPI.Comm, tag: int, own: int) -> None:
    """The ring's reduce-scatter, one blocking Sendrecv per step: afterwards chunk ``own``
    of ``flat`` holds the sum over all ranks (``own`` is ``rank + 1`` in the allreduce,
    ``rank`` in :func:`mpitrain.collectives.reduce_scatter`; each rank must own a
    different chunk, in ring order). The other chunks hold partial sums."""
    size = comm.Get_size()
    off = chunk_offsets(flat.size, size)
    rank = comm.Get_rank()
    right, left = (rank + 1) % size, (rank - 1) % size
    mpitype = MPI_TYPES[flat.dtype]
    tmp = scratch.acquire(flat.dtype, -(-flat.size // size))
    for step in range(size - 1):
        out, into = (own - 1 - step) % size, (own - 2 - step) % size
        dst = flat[off[into] : off[into + 1]]
        got = tmp[: dst.size]
        comm.Sendrecv([flat[off[out] : off[out + 1]], mpitype], right, tag,
                      [got, mpitype], left, tag)
        add_into(dst, got)
    scratch.release(tmp)


def sendrecv_allgather(flat: np.ndarray, comm: MPI.Comm, tag: int, own: int) -> None:
    """The ring's allgather, one blocking Sendrecv per step: every rank starts with chunk
    ``own`` of ``flat`` (``own`` as in :func:`sendrecv_reduce_scatter`) and ends with all
    of them."""
    size = comm.Get_size()
    off = chunk_offsets(flat.size, size)
    rank = comm.Get_rank()
    right, left = (rank + 1) % size, (rank - 1) % size
    mpitype = MPI_TYPES[flat.dtype]
    for step in range(size - 1):
        out, into = (own - step) % size, (own - step - 1) % size
        comm.Sendrecv([flat[off[out] : off[out + 1]], mpitype], right, tag,
                      [flat[off[into] : off[into + 1]], mpitype], left, tag)


def _sendrecv_ring(flat: np.ndarray, comm: MPI.Comm, tags: tuple[int, int], mean: bool) -> None:
    """The same ring without pipelining: one blocking Sendrecv per step (least overhead)."""
    size = comm.Get_size()
    own = (comm.Get_rank() + 1) % size
    sendrecv_reduce_scatter(flat, comm, tags[0], own)
    if mean:
        off = chunk_offsets(flat.size, size)
        scale_inplace(flat[off[own] : off[own + 1]], 1.0 / size)
    sendrecv_allgather(flat, comm, tags[1], own)


def allreduce(flat: np.ndarray, comm: MPI.Comm, tags: tuple[int, int], mean: bool) -> None:
    """Blocking ring allreduce of ``flat`` in place: pipelined only for long chunks."""
    if flat.nbytes < PIPELINE_MIN_BYTES * comm.Get_size():
        _sendrecv_ring(flat, comm, tags, mean)
    else:
        RingAllreduce(flat, flat, comm, tags, mean).wait()
