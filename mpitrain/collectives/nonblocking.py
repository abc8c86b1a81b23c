"""One started (nonblocking) allreduce by an already resolved algorithm, and the handle of a
started slot sum.

:func:`start` is shared by :func:`mpitrain.collectives.start_allreduce` (which checks the
arguments and resolves ``auto`` on every call) and :class:`mpitrain.collectives.Allreducer`
with ``in_flight`` (which does both once), so the two give the same bits for the same
algorithm. :class:`SlotSumHandle` finishes a call started on a
:class:`~mpitrain.collectives.slot_sum.SharedMemoryAllreduce` with several slots per rank:
the nonblocking reduction that needs no MPI call to progress (only a persistent reducer
has it: the slots are its own).
"""

from __future__ import annotations

import numpy as np

from mpitrain.collectives import native, ring, root
from mpitrain.collectives.context import CommState
from mpitrain.collectives.handles import AllreduceHandle, DoneHandle
from mpitrain.collectives.slot_sum import SharedMemoryAllreduce
from mpitrain.kernels.reduce import scale_inplace


def start(buf: np.ndarray, flat: np.ndarray, state: CommState, algorithm: str,
          mean: bool) -> AllreduceHandle:
    """Collective: start reducing ``flat`` (a 1-D view of ``buf``) over ``state.comm`` in
    place with ``algorithm`` (``ring`` over MPI messages, ``mpi`` or ``root``); the
    handle's ``wait()`` returns ``buf``."""
    if flat.size == 0:
        return DoneHandle(buf)
    comm = state.comm
    if algorithm == "ring":
        return ring.RingAllreduce(buf, flat, comm, state.next_tags(), mean)
    if algorithm == "mpi":
        return native.NativeHandle(buf, flat, comm, mean)
    return root.RootHandle(buf, flat, comm, mean)


class SlotSumHandle:
    """Call ``call`` started on ``slots`` (:meth:`SharedMemoryAllreduce.start`): ``wait()``
    sums it into ``out`` (calls finish in the order they started); ``test()`` does so
    only when every rank has started it and it is the oldest unfinished call, so it never
    waits."""

    def __init__(self, slots: SharedMemoryAllreduce, call: int, out: np.ndarray,
                 mean: bool) -> None:
        self._slots, self._call, self._out, self._mean = slots, call, out, mean
        self._done = False

    def test(self) -> bool:
        slots = self._slots
        if not self._done and slots.read == self._call and slots.ready(self._call):
            self.wait()
        return self._done

    def wait(self) -> np.ndarray:
        if not self._done:
            self._slots.finish(self._call, self._out)
            if self._mean:
                scale_inplace(self._out, 1.0 / self._slots.size)
            self._done = True
        return self._out
