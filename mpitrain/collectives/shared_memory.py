"""MPI-3 shared-memory windows and the polling counters the shared-memory reductions use.

Two reductions move data through memory every rank of a node can read: the step reduction
of :mod:`mpitrain.collectives.slot_sum` and the ring's intra-node transport
(:mod:`mpitrain.collectives.shared_ring`). Both need per-rank arrays in a shared window and
per-rank counters that other ranks poll instead of calling ``MPI_Barrier`` (a counter flip
costs one cache-line transfer, ~1 us, against ~3-4 us for MPICH's barrier here).
"""

from __future__ import annotations

import os
import time

import numpy as np
from mpi4py import MPI

LINE = 128  # bytes between two ranks' counters: no false sharing, even with pair prefetch
SPINS_BEFORE_YIELD = 2000  # ~0.2-0.5 ms of polling, then yield the core on every poll


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def yield_core() -> None:
    """Give the core to another runnable process (a 0-second sleep where sched_yield is
    missing)."""
    if hasattr(os, "sched_yield"):
        os.sched_yield()
    else:
        time.sleep(0)


def single_node(comm: MPI.Comm) -> bool:
    """Collective: True when every rank of ``comm`` shares one node (same on all ranks)."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return node.Get_size() == comm.Get_size()
    finally:
        node.Free()


def shared_arrays(comm: MPI.Comm, *, count: int,
                  dtype: np.dtype) -> tuple[MPI.Win, list[np.ndarray]]:
    """Collective: a window with ``count`` elements per rank, and every rank's part as a
    1-D array in rank order. The window is locked for passive access (``Win.Sync`` is the
    memory barrier); release it with :func:`free_window`."""
    dtype = np.dtype(dtype)
    win = MPI.Win.Allocate_shared(count * dtype.itemsize, dtype.itemsize, comm=comm)
    parts = [np.frombuffer(win.Shared_query(rank)[0], dtype=dtype, count=count)
             for rank in range(comm.Get_size())]
    win.Lock_all(MPI.MODE_NOCHECK)
    return win, parts


def free_window(win: MPI.Win) -> None:
    """Collective: unlock and free a window from :func:`shared_arrays`."""
    if win != MPI.WIN_NULL:
        win.Unlock_all()
        win.Free()


class Counters:
    """``per_rank`` monotonic int64 counters per rank, each on its own cache line.

    A rank only writes its own counters and polls the others'. Collective to build (all
    counters start at 0) and to :meth:`close`.
    """

    def __init__(self, comm: MPI.Comm, *, per_rank: int = 1) -> None:
        stride = LINE // 8
        self.win, parts = shared_arrays(comm, count=per_rank * stride, dtype=np.int64)
        # counters[rank][i] is a 1-element view, so reading it always reads memory
        self.counters = [[part[i * stride : i * stride + 1] for i in range(per_rank)]
                         for part in parts]
        self.own = self.counters[comm.Get_rank()]
        for counter in self.own:
            counter[0] = 0
        # More ranks than cores: a polling rank would take the core of the rank it waits
        # for, so yield on every poll; otherwise poll a while first (a flip takes ~1 us).
        self.patience = 0 if comm.Get_size() > cores() else SPINS_BEFORE_YIELD
        comm.Barrier()  # every counter is 0 before anybody publishes

    def publish(self, which: int, value: int) -> None:
        """Set this rank's counter ``which`` (after a ``Win.Sync`` of the data it announces)."""
        self.own[which][0] = value

    def read(self, rank: int, which: int) -> int:
        """The current value of counter ``which`` of ``rank``."""
        return int(self.counters[rank][which][0])

    def wait(self, rank: int, which: int, value: int) -> None:
        """Poll until counter ``which`` of ``rank`` reaches ``value``."""
        counter = self.counters[rank][which]
        spins = 0
        while counter[0] < value:
            spins += 1
            if spins > self.patience:  # the rank we wait for may need this core
                yield_core()

    def close(self) -> None:
        """Collective: release the window."""
        self.counters = []
        self.own = []
        free_window(self.win)
        self.win = MPI.WIN_NULL
