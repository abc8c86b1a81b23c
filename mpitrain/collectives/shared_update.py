"""The node-shared update's memory and barriers (``--reduce shared-update``): one copy of
the parameters and of the optimizer state per node, in MPI-3 shared-memory windows, and
every rank's step message in a shared slot.

Per step ``k`` (all ranks, same order; the training side is
:mod:`mpitrain.strategies.node_shared`):

1. the gradient kernel writes the rank's step message (``gradient | tail``) straight into
   :attr:`SharedUpdate.slot` (no copy);
2. :meth:`SharedUpdate.gather`: ``Win_sync`` (a memory barrier), publish ``k`` in the
   rank's first counter, wait until every rank's reads ``>= k``, ``Win_sync``; then sum,
   for the rank's own contiguous slice ``[lo, hi)`` of the gradient, every rank's slot in
   rank order (the bits of the slot sum ``--reduce shm`` computes for those elements), and
   the tail of every slot (every rank sums the tail itself);
3. the caller updates ``params[lo:hi]`` and its slice of the optimizer state (the same
   elementwise kernels as the unsharded update);
4. :meth:`SharedUpdate.release`: ``Win_sync``, publish ``k`` in the second counter, wait
   for every rank's. After it every rank's next forward pass reads the updated
   parameters, and no rank rewrites its slot before every rank has read it (one slot per
   rank is enough: a slot is written again only after the second barrier of the step
   that read it).

Per step: two counter flips (~1 us each) instead of an allreduce, and each rank reads
``P`` slices of ``n/P`` elements and updates ``n/P`` parameters instead of ``n``. Nothing
else crosses between ranks: no allgather (the parameters are shared), no copy of the
reduced gradient.

Measured on the 2-vCPU machine of issue 13 (``OMP_NUM_THREADS=1 mpiexec -n 2 python
benchmarks/shared_update.py``: per step, the message write, the reduction and the update,
against each allreduce followed by the full update; the table is in that script): it
overtakes the best allreduce + full update between 16 and 32 KB of step message on 2 and
3 ranks, and is 15-50% faster from 128 KiB up to 9.6 MB (2 ranks, SGD: 20.1 against 25.3
us at 128 KiB, 63.5 against 115 us at 1 MiB, 2.06 against 3.70 ms at 9.6 MB). ``--reduce
auto`` takes it from :data:`mpitrain.collectives.select.SHARED_UPDATE_FROM_BYTES`
(128 KiB).

Only when every rank of the communicator is on one node and shared memory is allowed.
A rank that raises between the barriers leaves the others polling; an unexpected error
aborts the job (MPI Abort, rank named) and errors found from the reduced tail (a diverged
loss) are raised by every rank at the same point, so none waits forever.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.context import state_of
from mpitrain.collectives.ring import chunk_offsets
from mpitrain.collectives.shared_memory import Counters, free_window, shared_arrays
from mpitrain.kernels.reduce import add_into
from mpitrain.kernels.shared import sum_range

ALIGN = 64  # bytes: each rank's slot, the parameters and each state buffer start on a line
GATHERED, RELEASED = 0, 1  # each rank's counters: steps published, steps updated


def _padded(count: int, itemsize: int) -> int:
    """``count`` elements rounded up to a whole number of :data:`ALIGN` bytes."""
    per_line = max(1, ALIGN // itemsize)
    return max(per_line, -(-count // per_line) * per_line)


class SharedUpdate:
    """Shared memory for the node-shared update of ``n`` parameters of ``dtype`` with
    ``buffers`` optimizer state buffers (0 for SGD, 1 for momentum, 2 for Adam) and step
    messages of ``n + tail`` elements, over ``comm`` (every rank on one node: the caller
    checks). Collective to build (rank 0 writes ``initial`` into the shared parameters and
    zeroes the state) and to :meth:`close`; :meth:`gather` and :meth:`release` are
    collective too.

    :attr:`params` and :attr:`state` are the node's one copy; :attr:`lo`, :attr:`hi` the
    slice this rank sums and updates (the chunks of :func:`~mpitrain.collectives.ring.
    chunk_offsets`, as ``--shard``).
    """

    def __init__(self, comm: MPI.Comm, *, n: int, tail: int, dtype: np.dtype, buffers: int,
                 initial: np.ndarray) -> None:
        self.comm = state_of(comm).comm  # the private duplicate (kernels loaded)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.n, self.tail, self.dtype = n, tail, np.dtype(dtype)
        offsets = chunk_offsets(n, self.size)
        self.lo, self.hi = int(offsets[self.rank]), int(offsets[self.rank + 1])
        itemsize = self.dtype.itemsize
        # every rank's slot, back to back when MPI lays the segments out so (MPICH does)
        self.capacity = _padded(n + tail, itemsize)
        self._slots_win, parts = shared_arrays(self.comm, count=self.capacity,
                                               dtype=self.dtype)
        self.slot = parts[self.rank][: n + tail]
        self._parts = parts
        address = parts[0].__array_interface__["data"][0]
        step = self.capacity * itemsize
        contiguous = all(part.__array_interface__["data"][0] == address + r * step
                         for r, part in enumerate(parts))
        self._span = (np.frombuffer(MPI.buffer.fromaddress(address, self.size * step),
                                    dtype=self.dtype).reshape(self.size, self.capacity)
                      if contiguous else None)
        # the parameters and the optimizer state: one window on rank 0, read by all
        width = _padded(n, itemsize)
        self.buffers = buffers
        self._model_win = MPI.Win.Allocate_shared(
            (1 + buffers) * width * itemsize if self.rank == 0 else 0, itemsize,
            comm=self.comm)
        memory = np.frombuffer(self._model_win.Shared_query(0)[0], dtype=self.dtype,
                               count=(1 + buffers) * width)
        self._model_win.Lock_all(MPI.MODE_NOCHECK)
        self.params = memory[:n]
        self.state = [memory[(1 + i) * width:(1 + i) * width + n] for i in range(buffers)]
        self.flags = Counters(self.comm, per_rank=2)
        self.steps = 0
        if self.rank == 0:
            self.params[...] = initial
            for buffer in self.state:
                buffer[...] = 0
        self.barrier()

    @property
    def shared_bytes(self) -> int:
        """Bytes of shared memory this object holds on the node (slots, parameters,
        optimizer state; counters left out)."""
        itemsize = self.dtype.itemsize
        return (self.size * self.capacity + (1 + self.buffers) * _padded(self.n, itemsize)
                ) * itemsize

    def barrier(self) -> None:
        """Collective: a memory barrier and an MPI barrier (after one rank wrote the shared
        parameters or state outside the steps: start-up, a restored checkpoint)."""
        self._model_win.Sync()
        self.comm.Barrier()
        self._model_win.Sync()

    def gather(self, out: np.ndarray) -> None:
        """Collective: the first barrier of a step (every rank's :attr:`slot` written), then
        ``out[:hi - lo]`` = the sum of every rank's slot over ``[lo, hi)`` and
        ``out[hi - lo:]`` = the sum of their tails, each in rank order."""
        self.steps += 1
        self._await(self._slots_win, GATHERED)
        m = self.hi - self.lo
        span = self._span
        if span is not None:
            sum_range(span, self.lo, out[:m])
            sum_range(span, self.n, out[m:])
            return
        parts = self._parts
        out[:m] = parts[0][self.lo:self.hi]
        out[m:] = parts[0][self.n:self.n + self.tail]
        for part in parts[1:]:
            add_into(out[:m], part[self.lo:self.hi])
            add_into(out[m:], part[self.n:self.n + self.tail])

    def release(self) -> None:
        """Collective: the second barrier of a step: this rank's slice of the parameters and
        state is updated and its reads of the slots are done."""
        self._await(self._model_win, RELEASED)

    def _await(self, win: MPI.Win, which: int) -> None:
        """Memory barrier, publish this step in counter ``which``, wait for every rank's,
        memory barrier."""
        win.Sync()
        flags, steps = self.flags, self.steps
        flags.publish(which, steps)
        for rank in range(self.size):
            if rank != self.rank:
                flags.wait(rank, which, steps)
        win.Sync()

    def close(self) -> None:
        """Collective: release the windows (idempotent); :attr:`params` and :attr:`state`
        must not be used after (copy them out first)."""
        if self._slots_win == MPI.WIN_NULL:
            return
        self.slot = self.params = np.zeros(0, dtype=self.dtype)
        self.state, self._parts, self._span = [], [], None
        self.flags.close()
        free_window(self._model_win)
        free_window(self._slots_win)
        self._model_win = self._slots_win = MPI.WIN_NULL
