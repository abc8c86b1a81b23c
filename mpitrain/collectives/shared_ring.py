"""``ring`` between the ranks of one node: the same ring, messages passed in shared memory.

MPICH moves a large intra-node message with one kernel copy (``process_vm_readv``) at
10-15 GB/s here, against 45-80 GB/s for an in-cache copy by one core, and the ring over
point-to-point messages (:mod:`.ring`) sits at that ceiling. When every rank of the
communicator is on one node, the ring instead passes its messages through an MPI-3
shared-memory window: each rank owns ``SLOTS`` message slots of ``SLOT_BYTES``; the left
neighbour reads them directly, and the reduction kernel writes the next message straight
into the next slot (no scratch, no extra copy).

Same ring, same result: the buffer is cut into the same chunks and segments as the
point-to-point ring (segment ``j`` of every chunk forms *piece* ``j``; pieces are reduced
one after another, each by ``P - 1`` reduce-scatter and ``P - 1`` allgather steps), and
every element is summed in the same order, so both transports give identical bits.

Messages are numbered across calls (every rank makes the same calls, so the numbers agree).
Message ``g`` of a rank lives in its slot ``g mod SLOTS``. Two counters per rank, polled by
its neighbours (:class:`mpitrain.shared_memory.Counters`), order everything: *published*
(messages ``< value`` are in the slots) and *consumed* (messages ``< value`` of the left
neighbour have been read). A rank reads message ``g`` of its left neighbour once that one
has published ``g + 1``, and overwrites a slot only after its right neighbour has consumed
what was in it. The user's buffer is never shared, so a call returns as soon as this rank's
own result is complete. Blocking only: :func:`~mpitrain.collectives.start_allreduce` keeps
the point-to-point ring, whose messages MPI progresses during other MPI calls.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from kernels.reduce import add_into, add_to, scale_inplace
from mpitrain.collectives.ring import chunk_offsets, segment_bounds, segment_count
from mpitrain.shared_memory import Counters, free_window, shared_arrays

# Measured on 2 ranks (this module's benchmark, 1-64 MiB float32): see README "Performance".
SLOT_BYTES = 1024 * 1024
SLOTS = 2
# Set to False to send every ring message through MPI even on one node (the same value on
# every rank): for tests and for comparing the transports.
ENABLED = True

PUBLISHED, CONSUMED = 0, 1


class SharedRing:
    """The ring's shared-memory transport over ``comm`` (every rank on one node).

    Collective to build and to :meth:`close`; :meth:`allreduce` allocates nothing.
    """

    def __init__(self, comm: MPI.Comm, *, slot_bytes: int = SLOT_BYTES,
                 slots: int = SLOTS) -> None:
        self.comm = comm
        self.size, self.rank = comm.Get_size(), comm.Get_rank()
        self.left, self.right = (self.rank - 1) % self.size, (self.rank + 1) % self.size
        self.slot_bytes, self.nslots = slot_bytes, slots
        self.win, self.parts = shared_arrays(comm, count=slots * slot_bytes, dtype=np.uint8)
        self.counters = Counters(comm, per_rank=2)
        self.messages = 0  # messages this rank has published (the same count on every rank)

    def allreduce(self, flat: np.ndarray, mean: bool) -> None:
        """Collective: the ring allreduce of ``flat`` (1-D float32/float64) in place."""
        per_slot = self.slot_bytes // flat.itemsize
        mine = self.parts[self.rank].view(flat.dtype).reshape(self.nslots, per_slot)
        theirs = self.parts[self.left].view(flat.dtype).reshape(self.nslots, per_slot)
        off = chunk_offsets(flat.size, self.size)
        nseg = segment_count(flat.size, self.size, per_slot)
        factor = 1.0 / self.size if mean else None
        for j in range(nseg):
            self._piece(flat, [segment_bounds(off, c, j, nseg) for c in range(self.size)],
                        mine, theirs, factor)

    def _slot_for(self, g: int, mine: np.ndarray) -> np.ndarray:
        """This rank's slot for message ``g``, once the right neighbour has consumed the
        message that was there before."""
        self.counters.wait(self.right, CONSUMED, g - self.nslots + 1)
        return mine[g % self.nslots]

    def _piece(self, flat: np.ndarray, bounds: list[tuple[int, int]], mine: np.ndarray,
               theirs: np.ndarray, factor: float | None) -> None:
        """Reduce segment ``bounds[c]`` of every chunk ``c`` around the ring."""
        size, rank, win, counters = self.size, self.rank, self.win, self.counters
        g0 = self.messages
        lo, hi = bounds[rank]
        out = self._slot_for(g0, mine)
        win.Sync()  # the right neighbour's reads of that slot are over
        np.copyto(out[: hi - lo], flat[lo:hi])
        win.Sync()
        counters.publish(PUBLISHED, g0 + 1)
        steps = 2 * size - 2
        for k in range(steps):
            g = g0 + k
            last = k == steps - 1
            counters.wait(self.left, PUBLISHED, g + 1)
            if not last:
                out = self._slot_for(g + 1, mine)
            win.Sync()  # no read before the publication was seen, no write before the consumption
            src = theirs[g % self.nslots]
            if k < size - 1:  # reduce-scatter: add the left's partial sum of chunk c
                lo, hi = bounds[(rank - k - 1) % size]
                own = flat[lo:hi]
                if k < size - 2:  # partial sum: straight into the next message
                    add_to(out[: hi - lo], own, src[: hi - lo])
                else:  # this rank's chunk is complete
                    add_into(own, src[: hi - lo])
                    if factor is not None:
                        scale_inplace(own, factor)
                    np.copyto(out[: hi - lo], own)
            else:  # allgather: take a complete chunk and pass it on
                lo, hi = bounds[(rank - (k - size + 1)) % size]
                flat[lo:hi] = src[: hi - lo]
                if not last:
                    np.copyto(out[: hi - lo], src[: hi - lo])
            win.Sync()
            counters.publish(CONSUMED, g + 1)
            if not last:
                counters.publish(PUBLISHED, g + 2)
        self.messages = g0 + steps

    def close(self) -> None:
        """Collective: release the windows."""
        if self.win != MPI.WIN_NULL:
            self.parts = []
            free_window(self.win)
            self.win = MPI.WIN_NULL
            self.counters.close()
