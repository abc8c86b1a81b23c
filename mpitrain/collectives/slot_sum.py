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

Started (nonblocking) calls, for reductions that complete some steps after they start
(``--mode ssp``; :class:`mpitrain.collectives.Allreducer` with ``in_flight``): with ``S``
slots per rank, call ``k`` uses slot ``k mod S``. :meth:`SharedMemoryAllreduce.start`
publishes ``k + 1`` in the rank's first counter and returns at once; finishing it
(:meth:`~SharedMemoryAllreduce.finish`, calls in order) waits until every rank has
published ``k + 1``, sums slot ``k mod S`` of every rank in rank order (the blocking
call's sum: the same bits) and publishes ``k + 1`` in the rank's second counter ("read up
to"). Before writing call ``k`` (:meth:`~SharedMemoryAllreduce.writable_slot`) a rank
waits until every rank has read call ``k - S``. Nobody waits on anything but published
counters, so no MPI call is needed for progress. With ``d`` calls in flight (call ``k``
finished before call ``k + d + 1`` starts), ``S = 2d + 1`` slots make the slot wait
implied (up to the other ranks' sum of an older call) by the finishing wait: a rank can
run ``d`` calls ahead of the slowest, as with MPI's nonblocking reductions.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.shared_memory import Counters, free_window, shared_arrays
from mpitrain.kernels.reduce import add_into
from mpitrain.kernels.shared import sum_slots

WORD = 8  # slot sizes are multiples of this many bytes (the widest dtype)
PUBLISHED, READ = 0, 1  # each rank's counters: calls published, calls read (finished)


class SharedMemoryAllreduce:
    """In-place sum over ``comm`` (one node) via shared memory, of float messages of up to
    ``n`` elements of ``dtype`` (:attr:`capacity` bytes, either float dtype), through
    ``slots`` slots per rank (2 for blocking calls; more for started ones).

    Collective to build and to :meth:`close`; :meth:`__call__`, :meth:`reduce_slot`,
    :meth:`start` and :meth:`finish` are collective too (same order, same message length
    and dtype on every rank) and allocate nothing beyond array views. An object runs either
    blocking calls or started ones, not both.
    """

    def __init__(self, comm: MPI.Comm, *, n: int, dtype: np.dtype, slots: int = 2) -> None:
        if slots < 2:
            raise ValueError(f"slots must be >= 2 (got {slots})")
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.n, self.dtype, self.slots = n, np.dtype(dtype), slots
        self.capacity = max(WORD, -(-n * self.dtype.itemsize // WORD) * WORD)  # bytes a slot
        self.win, self.parts = shared_arrays(comm, count=slots * self.capacity,
                                             dtype=np.uint8)
        self.calls = 0  # calls published by this rank
        self.read = 0  # started calls this rank has finished
        # Per rank: how many calls it has published (the barrier) and read (PUBLISHED, READ).
        self.flags = Counters(comm, per_rank=2)
        # MPICH places the ranks' segments back to back: then one (P, slots, n) array over
        # them lets a single kernel pass read every slot (no Python loop over ranks).
        step = slots * self.capacity
        address = self.parts[0].__array_interface__["data"][0]
        contiguous = all(part.__array_interface__["data"][0] == address + rank * step
                         for rank, part in enumerate(self.parts))
        self._span = (np.frombuffer(MPI.buffer.fromaddress(address, self.size * step),
                                    dtype=np.uint8) if contiguous else None)
        self._views: dict[np.dtype, tuple[list[np.ndarray], np.ndarray | None]] = {}
        mine = self._typed(self.dtype)[0][self.rank]
        self._next = [slot[:n] for slot in mine]  # next_slot() without creating views

    def _typed(self, dtype: np.dtype) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Every rank's slots as ``(slots, capacity / itemsize)`` arrays of ``dtype``, and
        the ``(P, slots, ...)`` array over all of them when the segments are contiguous
        (cached)."""
        views = self._views.get(dtype)
        if views is None:
            per_slot = self.capacity // dtype.itemsize
            slots = [part.view(dtype).reshape(self.slots, per_slot) for part in self.parts]
            together = (None if self._span is None else
                        self._span.view(dtype).reshape(self.size, self.slots, per_slot))
            views = self._views[dtype] = (slots, together)
        return views

    def next_slot(self) -> np.ndarray:
        """This rank's slot (``n`` elements of ``dtype``) for the next call: write the
        message there and call :meth:`reduce_slot` to skip the copy :meth:`__call__` makes."""
        return self._next[self.calls % self.slots]

    def __call__(self, message: np.ndarray) -> None:
        """Replace ``message`` (1-D float32/float64, at most :attr:`capacity` bytes) by its
        sum over the ranks (identical bits on every rank)."""
        self._check(message)
        slots, together = self._typed(message.dtype)
        slots[self.rank][self.calls % self.slots][: message.size] = message
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
        """The bytes of every rank's slots, back to back (rank ``r``'s slot ``b`` at byte
        ``r * slots * capacity + b * capacity``; None when not contiguous); the next call
        uses slot ``calls % slots``."""
        return self._span

    def exchange(self) -> tuple[np.ndarray, int] | None:
        """Collective: the barrier of a call, after which every rank may read every rank's
        :meth:`next_slot` of this call until its next call: returns the bytes of all the
        slots (rank ``r``'s slot of this call starts at byte ``r * slots * capacity + b *
        capacity``) and ``b``; None (before any barrier, on every rank alike) when the
        ranks' segments are not contiguous. An allgather through shared memory (what
        :mod:`.sparse` uses)."""
        if self._span is None:
            return None
        return self._span, self._barrier()

    def _barrier(self) -> int:
        """The call's barrier; returns the slot ``b`` of the call."""
        call = self.start()
        self._await(PUBLISHED, call + 1)
        return call % self.slots

    def _await(self, which: int, value: int) -> None:
        """Wait until counter ``which`` of every other rank reaches ``value``; then no read
        or write of the slots happens before the counters were seen."""
        for rank in range(self.size):
            if rank != self.rank:
                self.flags.wait(rank, which, value)
        self.win.Sync()

    # -- started calls -----------------------------------------------------------------------
    def writable_slot(self) -> np.ndarray:
        """This rank's slot for the next :meth:`start`, once every rank has finished
        reading the call that used it last (waits for that; module docstring)."""
        call = self.calls
        if call >= self.slots:
            self._await(READ, call - self.slots + 1)
        return self._next[call % self.slots]

    def start(self) -> int:
        """Publish this rank's slot of the next call (written since :meth:`writable_slot`,
        or :meth:`next_slot` for a blocking call); returns the call's number. No wait."""
        call = self.calls
        self.calls += 1
        self.win.Sync()  # memory barrier: the slot's data is visible before the flag
        self.flags.publish(PUBLISHED, call + 1)
        return call

    def ready(self, call: int) -> bool:
        """Whether every rank has published ``call`` (so :meth:`finish` would not wait)."""
        return all(self.flags.read(rank, PUBLISHED) > call for rank in range(self.size))

    def finish(self, call: int, out: np.ndarray) -> None:
        """Collective: wait until every rank has started ``call`` (the oldest unfinished
        one: ValueError otherwise), sum its slots in rank order into ``out`` (private, at
        most :attr:`capacity` bytes; the first ``out.size`` elements of ``out.dtype``, the
        bits of a blocking call), then announce this rank has read it."""
        if call != self.read or call >= self.calls:
            raise ValueError(f"call {call} cannot finish now (next to finish: {self.read}, "
                             f"started: {self.calls})")
        self._check(out)
        self._await(PUBLISHED, call + 1)
        self._add_slots(out, *self._typed(out.dtype), call % self.slots)
        self.win.Sync()  # the reads are done before the slot is announced free
        self.read = call + 1
        self.flags.publish(READ, self.read)

    def _sum(self, out: np.ndarray, slots: list[np.ndarray],
             together: np.ndarray | None) -> None:
        """The barrier, then the sum of slot ``b`` of every rank, in rank order, into ``out``."""
        self._add_slots(out, slots, together, self._barrier())

    def _add_slots(self, out: np.ndarray, slots: list[np.ndarray],
                   together: np.ndarray | None, b: int) -> None:
        """``out`` = slot ``b`` of every rank, added in rank order."""
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
