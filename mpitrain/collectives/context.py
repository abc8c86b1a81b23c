"""Per-communicator state of the collectives, cached on the communicator as an MPI attribute.

The first collective call on a communicator (on every rank, since calls are collective):

- duplicates it, so the point-to-point messages of the ring never match a message of the
  caller's own traffic on the same communicator (the duplicate is freed when the
  communicator is);
- compiles (or loads from numba's cache) the reduction kernels in the same waves as
  :mod:`mpitrain.runtime.compile` (rank 0, then one rank per node, then the rest), so processes
  never race on the cache files (:func:`warm`; the 16-bit codecs only when a compressed
  reduction is built).

It also keeps the shared-memory transports of the communicator, built on first need: the
answer to "is every rank on one node" (:meth:`CommState.one_node`), the ring's transport
(:meth:`CommState.node_ring`), the slot sum of ``algorithm="shm"``
(:meth:`CommState.slot_sum`), and the node layout and shared-memory transport of
``algorithm="hierarchical"`` (:meth:`CommState.layout`, :meth:`CommState.hierarchy`).

Each call then takes the next sequence number, identical on all ranks because calls happen
in the same order everywhere, and derives its message tags from it, so several nonblocking
allreduces can be in flight on one communicator at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.hierarchical import HierarchicalAllreduce
from mpitrain.collectives.layout import NodeLayout, node_layout
from mpitrain.collectives.shared_memory import single_node
from mpitrain.collectives.shared_ring import SharedRing
from mpitrain.collectives.slot_sum import SharedMemoryAllreduce
from mpitrain.collectives.tune_cache import TuneCache
from mpitrain.collectives.tune_cache import load as load_tune_cache
from mpitrain.kernels import compress as kcompress
from mpitrain.kernels import reduce as kreduce
from mpitrain.kernels import shared as kshared
from mpitrain.runtime.compile import in_waves

# Tags of one call are 2*(seq % TAG_SLOTS) + phase; the result stays below 32767, the smallest
# MPI_TAG_UB the standard allows. More than TAG_SLOTS calls in flight at once would reuse tags.
TAG_SLOTS = 16000

_KEYVAL: int | None = None
# Kernel groups the collectives call, and those this process has loaded.
KERNELS = {"reduce": kreduce.warm_up, "shared": kshared.warm_up, "compress": kcompress.warm_up}
_LOADED: set[str] = set()


@dataclass
class CommState:
    """What the collectives keep per communicator."""

    comm: MPI.Comm  # private duplicate used for all traffic
    seq: int = 0
    # the ring's shared-memory transport; None until asked for, or when ranks span nodes
    shared_ring: SharedRing | None = field(default=None, repr=False)
    # the slot sum of algorithm="shm"; None until asked for
    shared_sum: SharedMemoryAllreduce | None = field(default=None, repr=False)
    # which ranks share a node, and the rail communicators; None until asked for
    node_layout: NodeLayout | None = field(default=None, repr=False)
    # the shared-memory transport of algorithm="hierarchical"; None until asked for
    shared_hierarchy: HierarchicalAllreduce | None = field(default=None, repr=False)
    # what "auto" resolved to, by (bytes, itemsize, shared_memory, nonblocking)
    # (select.resolve)
    choices: dict[tuple[int, int, bool, bool], str] = field(default_factory=dict, repr=False)
    # the tuning cache's entries for this communicator's shape, by shared_memory
    tune_caches: dict[bool, TuneCache] = field(default_factory=dict, repr=False)
    _one_node: bool | None = None

    def one_node(self) -> bool:
        """Collective on first call (then cached): True when every rank shares one node
        (always on one rank); the same answer on every rank."""
        if self._one_node is None:
            self._one_node = self.comm.Get_size() == 1 or single_node(self.comm)
        return self._one_node

    def layout(self) -> NodeLayout:
        """Collective on first call (then cached): which ranks share a node
        (:func:`.layout.node_layout`)."""
        if self.node_layout is None:
            self.node_layout = node_layout(self.comm)
        return self.node_layout

    def hierarchy(self, nbytes: int) -> HierarchicalAllreduce:
        """Collective: the shared-memory transport of the hierarchical allreduce, replaced
        by a larger one when this message is the largest so far (like :meth:`slot_sum`)."""
        current = self.shared_hierarchy
        if current is None or current.capacity < nbytes:
            if current is not None:
                current.close()
            self.shared_hierarchy = current = HierarchicalAllreduce(self.layout(),
                                                                    capacity=nbytes)
        return current

    def node_ring(self) -> SharedRing | None:
        """Collective on first call: the shared-memory ring when there are several ranks,
        all on one node (built once, then cached), else None."""
        if self.shared_ring is None and self.comm.Get_size() > 1 and self.one_node():
            self.shared_ring = SharedRing(self.comm)
        return self.shared_ring

    def slot_sum(self, nbytes: int, dtype: np.dtype) -> SharedMemoryAllreduce:
        """Collective: the slot sum, replaced by one sized for this message when it is the
        largest so far (every rank passes the same sizes, so all replace it together).
        Only for several ranks on one node (:meth:`one_node`)."""
        current = self.shared_sum
        if current is None or current.capacity < nbytes:
            if current is not None:
                current.close()
            self.shared_sum = current = SharedMemoryAllreduce(
                self.comm, n=nbytes // dtype.itemsize, dtype=dtype)
        return current

    def tune_cache(self, shared_memory: bool) -> TuneCache:
        """Collective on first call per ``shared_memory`` value (then cached): the tuning
        cache's entries for this communicator's shape, read by rank 0 and broadcast
        (:func:`.tune_cache.load`)."""
        cache = self.tune_caches.get(shared_memory)
        if cache is None:
            cache = self.tune_caches[shared_memory] = load_tune_cache(
                self.comm, ranks_per_node=self.layout().sizes, shared_memory=shared_memory)
        return cache

    def next_tags(self) -> tuple[int, int]:
        """Two tags (reduce-scatter, allgather) unique to the next call."""
        base = 2 * (self.seq % TAG_SLOTS)
        self.seq += 1
        return base, base + 1


def warm(comm: MPI.Comm, *groups: str) -> None:
    """Collective: load the kernel ``groups`` (keys of :data:`KERNELS`) in waves (rank 0,
    then the first rank of every other node, then the rest) so no two processes write the
    same numba cache entries at once. Skipped when every rank has them already (one tiny
    Allreduce)."""
    ready = np.array([int(_LOADED.issuperset(groups))], dtype=np.int32)
    comm.Allreduce(MPI.IN_PLACE, ready, op=MPI.MIN)
    if ready[0]:
        return
    in_waves(comm, lambda: _load(groups))


def _load(groups: tuple[str, ...]) -> None:
    for group in groups:
        if group not in _LOADED:
            KERNELS[group]()
            _LOADED.add(group)


def _free_state(comm: MPI.Comm, keyval: int, state: CommState) -> None:
    """Attribute delete callback: freeing ``comm`` (collective) frees its duplicate and
    shared windows too."""
    if state.shared_ring is not None:
        state.shared_ring.close()
    if state.shared_sum is not None:
        state.shared_sum.close()
    if state.shared_hierarchy is not None:
        state.shared_hierarchy.close()
    if state.node_layout is not None:
        state.node_layout.free()
    state.comm.Free()


def state_of(comm: MPI.Comm) -> CommState:
    """Collective on first use of ``comm``: the cached :class:`CommState` of ``comm``."""
    global _KEYVAL
    if _KEYVAL is None:
        _KEYVAL = MPI.Comm.Create_keyval(delete_fn=_free_state)
    state = comm.Get_attr(_KEYVAL)
    if state is None:
        private = comm.Dup()
        warm(private, "reduce", "shared")
        state = CommState(private)
        comm.Set_attr(_KEYVAL, state)
    return state
