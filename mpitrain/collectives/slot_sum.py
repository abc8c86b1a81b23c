"""Sum the step message through an MPI-3 shared-memory window when all ranks share a node.

A training step's message is small (tens of KB) and sent every ~150 us, so what an
allreduce costs is latency, not bandwidth: on 2 ranks of one node MPICH's ``Allreduce`` of
the standard workload's 39 KB message takes ~16 us, where the protocol below takes ~4-6 us
(measured on the 2-core machine of the performance issue). For a ~150 us step that is the
difference between ~88% and ~92% weak-scaling efficiency.

Protocol per call ``k`` (all ranks, same order): the message is in this rank's slot ``b``
(``b = k mod 2``; the gradient kernel writes it there directly, or it is copied in),
``Win_sync`` (a memory barrier), the rank publishes ``k`` in its flag (its own cache line of
a second shared window), waits until every flag reads ``>= k``, ``Win_sync`` again, then
sums the ``P`` slots ``b`` in rank order into its private result, so every rank ends with
the same bits. The flags are a barrier that costs a cache-line transfer (~1 us) instead of
MPICH's ``Barrier`` (~3-4 us here). Two slots make one barrier per call enough: a rank
rewrites slot ``b`` two calls later, after publishing ``k + 1``, which it does only after
finishing its reads of call ``k``, and nobody passes barrier ``k + 1`` before that.
A waiting rank polls its flags, yielding its core after a short while of polling, or on
every poll when the node runs more ranks than this process has cores.

Each rank reads ``P`` messages per call, so this suits the few-ranks-per-node case it is
chosen for; it is only built when every rank of the communicator is on one node. It is the
``shm`` algorithm of :func:`mpitrain.collectives.allreduce` (which keeps one per
communicator, grown to the largest message so far) and of
:class:`mpitrain.collectives.Allreducer` (one of the message's size, zero copy).

The slots are a whole number of 8-byte words, so one window serves float32 and float64
messages of any length up to its capacity (a shorter message uses the start of the slots).
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.shared_memory import Counters, free_window, shared_arrays
from mpitrain.kernels.reduce import add_into
from mpitrain.kernels.shared import sum_slots

WORD = 8  # slot sizes are multiples of this many bytes (the widest dtype)


class SharedMemoryAllreduce:
    """In-place sum over ``comm`` (one node) via shared memory, of float messages of up to
    ``n`` elements of ``dtype`` (:attr:`capacity` bytes, either float dtype).

    Collective to build and to :meth:`close`; :meth:`__call__` and :meth:`reduce_slot` are
    collective too (same order, same message length and dtype on every rank) and allocate
    nothing beyond array views.
    """

    def __init__(self, comm: MPI.Comm, *, n: int, dtype: np.dtype) -> None:
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.n, self.dtype = n, np.dtype(dtype)
        self.capacity = max(WORD, -(-n * self.dtype.itemsize // WORD) * WORD)  # bytes a slot
        self.win, self.parts = shared_arrays(comm, count=2 * self.capacity, dtype=np.uint8)
        self.calls = 0
        # One counter per rank holding how many calls it has published: the barrier.
        self.flags = Counters(comm)
        # MPICH places the ranks' segments back to back: then one (P, 2, slot) array over
        # them lets a single kernel pass read every slot (no Python loop over ranks).
        step = 2 * self.capacity
        address = self.parts[0].__array_interface__["data"][0]
        contiguous = all(part.__array_interface__["data"][0] == address + rank * step
                         for rank, part in enumerate(self.parts))
        self._span = (np.frombuffer(MPI.buffer.fromaddress(address, self.size * step),
                                    dtype=np.uint8) if contiguous else None)
        self._views: dict[np.dtype, tuple[list[np.ndarray], np.ndarray | None]] = {}
        mine = self._typed(self.dtype)[0][self.rank]
        self._next = [mine[0][:n], mine[1][:n]]  # next_slot() without creating views

    def _typed(self, dtype: np.dtype) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Every rank's two slots as ``(2, capacity / itemsize)`` arrays of ``dtype``, and the
        ``(P, 2, ...)`` array over all of them when the segments are contiguous (cached)."""
        views = self._views.get(dtype)
        if views is None:
            per_slot = self.capacity // dtype.itemsize
            slots = [part.view(dtype).reshape(2, per_slot) for part in self.parts]
            together = (None if self._span is None
                        else self._span.view(dtype).reshape(self.size, 2, per_slot))
            views = self._views[dtype] = (slots, together)
        return views

    def next_slot(self) -> np.ndarray:
        """This rank's slot (``n`` elements of ``dtype``) for the next call: write the
        message there and call :meth:`reduce_slot` to skip the copy :meth:`__call__` makes."""
        return self._next[self.calls & 1]

    def __call__(self, message: np.ndarray) -> None:
        """Replace ``message`` (1-D float32/float64, at most :attr:`capacity` bytes) by its
        sum over the ranks (identical bits on every rank)."""
        self._check(message)
        slots, together = self._typed(message.dtype)
        slots[self.rank][self.calls & 1][: message.size] = message
        self._sum(message, slots, together)

    def reduce_slot(self, out: np.ndarray) -> None:
        """Collective: sum every rank's :meth:`next_slot` (or its first ``out.size``
        elements of ``out.dtype``) into ``out`` (not a slot)."""
        self._check(out)
        slots, together = self._typed(out.dtype)
        self._sum(out, slots, together)

    def _check(self, message: np.ndarray) -> None:
        """ValueError (the same on every rank: lengths agree) for a message too long."""
        if message.nbytes > self.capacity:
            raise ValueError(f"message of {message.nbytes} bytes does not fit the slots "
                             f"({self.capacity} bytes)")

    @property
    def contiguous(self) -> bool:
        """Whether the ranks' slots lie back to back (what :meth:`exchange` needs)."""
        return self._span is not None

    @property
    def span(self) -> np.ndarray | None:
        """The bytes of every rank's two slots, back to back (rank ``r``'s slot ``b`` at
        byte ``r * 2 * capacity + b * capacity``; None when not contiguous); the next call
        uses slots ``calls & 1``."""
        return self._span

    def exchange(self) -> tuple[np.ndarray, int] | None:
        """Collective: the barrier of a call, after which every rank may read every rank's
        :meth:`next_slot` of this call until its next call: returns the bytes of all the
        slots (rank ``r``'s slot of this call starts at byte ``r * 2 * capacity + b *
        capacity``) and ``b``; None (before any barrier, on every rank alike) when the
        ranks' segments are not contiguous. An allgather through shared memory (what
        :mod:`.sparse` uses)."""
        if self._span is None:
            return None
        return self._span, self._barrier()

    def _barrier(self) -> int:
        """The call's barrier; returns the slot ``b`` of the call."""
        b = self.calls & 1
        self.calls += 1
        calls = self.calls
        self.win.Sync()  # memory barrier: the slot's data is visible before the flag
        self.flags.publish(0, calls)
        for rank in range(self.size):
            if rank != self.rank:
                self.flags.wait(rank, 0, calls)
        self.win.Sync()  # and no read of the slots before the flags were seen
        return b

    def _sum(self, out: np.ndarray, slots: list[np.ndarray],
             together: np.ndarray | None) -> None:
        """The barrier, then the sum of slot ``b`` of every rank, in rank order, into ``out``."""
        b = self._barrier()
        if together is not None:
            sum_slots(together, b, out)
            return
        out[...] = slots[0][b][: out.size]
        for rank in range(1, self.size):
            add_into(out, slots[rank][b])

    def close(self) -> None:
        """Collective: release the windows (idempotent)."""
        if self.win != MPI.WIN_NULL:
            self.parts = []
            self._views.clear()
            self._next = []
            self._span = None
            free_window(self.win)
            self.win = MPI.WIN_NULL
            self.flags.close()
