"""Per-communicator state of the collectives, cached on the communicator as an MPI attribute.

The first collective call on a communicator (on every rank, since calls are collective):

- duplicates it, so the point-to-point messages of the ring never match a message of the
  caller's own traffic on the same communicator (the duplicate is freed when the
  communicator is);
- compiles (or loads from numba's cache) the reduction kernels in the same waves as
  :mod:`mpitrain.runtime.compile` (rank 0, then one rank per node, then the rest), so processes
  never race on the cache files.

Each call then takes the next sequence number, identical on all ranks because calls happen
in the same order everywhere, and derives its message tags from it, so several nonblocking
allreduces can be in flight on one communicator at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.shared_memory import single_node
from mpitrain.collectives.shared_ring import SharedRing
from mpitrain.kernels import reduce as kreduce
from mpitrain.runtime.compile import in_waves

# Tags of one call are 2*(seq % TAG_SLOTS) + phase; the result stays below 32767, the smallest
# MPI_TAG_UB the standard allows. More than TAG_SLOTS calls in flight at once would reuse tags.
TAG_SLOTS = 16000

_KEYVAL: int | None = None
_KERNELS_READY = False


@dataclass
class CommState:
    """What the collectives keep per communicator."""

    comm: MPI.Comm  # private duplicate used for all traffic
    seq: int = 0
    # the ring's shared-memory transport; None until asked for, or when ranks span nodes
    shared_ring: SharedRing | None = field(default=None, repr=False)
    _one_node: bool | None = None

    def node_ring(self) -> SharedRing | None:
        """Collective on first call: the shared-memory ring when every rank is on one
        node (built once, then cached), else None."""
        if self._one_node is None:
            self._one_node = self.comm.Get_size() > 1 and single_node(self.comm)
            if self._one_node:
                self.shared_ring = SharedRing(self.comm)
        return self.shared_ring

    def next_tags(self) -> tuple[int, int]:
        """Two tags (reduce-scatter, allgather) unique to the next call."""
        base = 2 * (self.seq % TAG_SLOTS)
        self.seq += 1
        return base, base + 1


def _warm_kernels(comm: MPI.Comm) -> None:
    """Collective: load the kernels in waves (rank 0, then the first rank of every other
    node, then the rest) so no two processes write the same numba cache entries at once.
    Skipped when every rank has them already (one tiny Allreduce)."""
    ready = np.array([int(_KERNELS_READY)], dtype=np.int32)
    comm.Allreduce(MPI.IN_PLACE, ready, op=MPI.MIN)
    if ready[0]:
        return
    in_waves(comm, _load_kernels)


def _load_kernels() -> None:
    global _KERNELS_READY
    if not _KERNELS_READY:
        kreduce.warm_up()
        _KERNELS_READY = True


def _free_state(comm: MPI.Comm, keyval: int, state: CommState) -> None:
    """Attribute delete callback: freeing ``comm`` (collective) frees its duplicate and
    shared window too."""
    if state.shared_ring is not None:
        state.shared_ring.close()
    state.comm.Free()


def state_of(comm: MPI.Comm) -> CommState:
    """Collective on first use of ``comm``: the cached :class:`CommState` of ``comm``."""
    global _KEYVAL
    if _KEYVAL is None:
        _KEYVAL = MPI.Comm.Create_keyval(delete_fn=_free_state)
    state = comm.Get_attr(_KEYVAL)
    if state is None:
        private = comm.Dup()
        _warm_kernels(private)
        state = CommState(private)
        comm.Set_attr(_KEYVAL, state)
    return state
