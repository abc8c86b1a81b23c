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
its neighbours (:class:`mpitrain.collectives.shared_memory.Counters`), order everything: *published*
(messages ``< value`` are in the slots) and *consumed* (messages ``< value`` of the left
neighbour have been read). A rank reads message ``g`` of its left neighbour once that one
has published ``g + 1``, and overwrites a slot only after its right neighbour has consumed
what was in it. The user's buffer is not shared, so a call returns as soon as this rank's
own result is complete.

Buffers from :func:`~mpitrain.collectives.shared_buffer` live in shared memory themselves
(like ``MPI_Alloc_mem`` or NCCL's registered buffers), and the ring then needs no slots and
no copies: each step adds or copies the left neighbour's chunk straight from its buffer
(:meth:`SharedRing.in_place`), moving about half the bytes of the slotted path. Every rank
must then pass the same part (offset) of such a buffer; that is checked before any data
moves (a mismatch raises the same ``ValueError`` on every rank).

Blocking only: :func:`~mpitrain.collectives.start_allreduce` keeps the point-to-point ring,
whose messages MPI progresses during other MPI calls.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.ring import chunk_offsets, segment_bounds, segment_count
from mpitrain.collectives.shared_memory import Counters, free_window, shared_arrays
from mpitrain.kernels.reduce import add_into, add_to, scale_inplace

# 2 slots of 512 KiB: 21.5, 21.6, 15.0, 13.2 GB/s busbw at 1, 4, 16, 64 MiB (float32, 2 ranks);
# slots of 256 KiB to 2 MiB and 2 to 4 slots measured within about +-10% of that.
SLOT_BYTES = 512 * 1024
SLOTS = 2

PUBLISHED, CONSUMED = 0, 1  # counters of the slotted path
# counters of the in-place path on shared buffers: WHERE + (call & 1) holds the part of a
# call (two, so a rank already in the next call cannot overwrite what a slower one reads)
ENTERED, STEPS, WHERE = 0, 1, 2


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
        self.shared: list[tuple[MPI.Win, list[np.ndarray]]] = []  # from :meth:`allocate`
        self.in_place_counters = Counters(comm, per_rank=4)
        self.calls = 0  # in-place calls entered
        self.steps = 0  # in-place steps done

    def allocate(self, nbytes: int) -> np.ndarray:
        """Collective: ``nbytes`` bytes of this rank's part of a new shared window (every
        rank's part is readable by the others; freed by :meth:`close`)."""
        win, parts = shared_arrays(self.comm, count=max(nbytes, 1), dtype=np.uint8)
        self.shared.append((win, parts))
        return parts[self.rank][:nbytes]

    def locate(self, flat: np.ndarray) -> tuple[int, int] | None:
        """(window index, byte offset) of ``flat`` if it lies in this rank's part of a
        window from :meth:`allocate`, else None."""
        start = flat.__array_interface__["data"][0]
        for index, (_, parts) in enumerate(self.shared):
            part = parts[self.rank]
            base = part.__array_interface__["data"][0]
            if base <= start and start + flat.nbytes <= base + part.nbytes:
                return index, start - base
        return None

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

    def in_place(self, flat: np.ndarray, where: tuple[int, int], mean: bool) -> None:
        """Collective: the ring allreduce of ``flat``, a part of a shared buffer (the same
        part on every rank, at ``where`` from :meth:`locate`), reading the neighbours'
        buffers directly.

        Rank ``p`` adds chunk ``p-k-1`` of its left neighbour's buffer into its own at
        reduce-scatter step ``k`` (the left finished step ``k-1``, which completed that
        chunk), and copies chunk ``p-t`` at allgather step ``t``, once its right neighbour
        has finished reduce-scatter step ``t`` (its last read of that chunk). It returns
        when the right neighbour has finished too: nothing reads its buffer any more.
        """
        size, rank = self.size, self.rank
        counters = self.in_place_counters
        index, offset = where
        win = self.shared[index][0]
        code = index * (1 << 48) + offset
        left_part = self.shared[index][1][self.left]
        theirs = left_part[offset : offset + flat.nbytes].view(flat.dtype)
        self.calls += 1
        where_counter = WHERE + (self.calls & 1)
        counters.publish(where_counter, code)
        win.Sync()  # the data and WHERE are visible before ENTERED
        counters.publish(ENTERED, self.calls)
        # Every rank checks every rank's part, so a mismatch raises on all of them alike
        # (nobody is left waiting for a rank that gave up).
        for other in range(size):
            counters.wait(other, ENTERED, self.calls)
        win.Sync()
        parts = [counters.read(other, where_counter) for other in range(size)]
        if any(part != parts[0] for part in parts):
            other = next(r for r, part in enumerate(parts) if part != parts[0])
            raise ValueError(
                f"allreduce on shared buffers: rank {other} passed part "
                f"{divmod(parts[other], 1 << 48)} and rank 0 part {divmod(parts[0], 1 << 48)} "
                "(window, byte offset); every rank must pass the same part")
        off = chunk_offsets(flat.size, size)
        g0 = self.steps
        for k in range(2 * size - 2):
            if k > 0:
                counters.wait(self.left, STEPS, g0 + k)
            if k < size - 1:
                lo, hi = off[(rank - k - 1) % size], off[(rank - k - 1) % size + 1]
                win.Sync()
                add_into(flat[lo:hi], theirs[lo:hi])
                if k == size - 2 and mean:
                    scale_inplace(flat[lo:hi], 1.0 / size)
            else:
                t = k - size + 1
                counters.wait(self.right, STEPS, g0 + t + 1)
                lo, hi = off[(rank - t) % size], off[(rank - t) % size + 1]
                win.Sync()
                flat[lo:hi] = theirs[lo:hi]
            win.Sync()
            counters.publish(STEPS, g0 + k + 1)
        self.steps = g0 + 2 * size - 2
        counters.wait(self.right, STEPS, self.steps)

    def close(self) -> None:
        """Collective: release the windows (shared buffers from :meth:`allocate` too)."""
        if self.win != MPI.WIN_NULL:
            self.parts = []
            free_window(self.win)
            self.win = MPI.WIN_NULL
            self.counters.close()
            self.in_place_counters.close()
            for win, parts in self.shared:
                parts.clear()
                free_window(win)
            self.shared = []
