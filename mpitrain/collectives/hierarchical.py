"""``hierarchical``: reduce-scatter inside each node, allreduce across nodes by slice,
allgather inside each node (Horovod's hierarchical allreduce, the 2D-torus layout).

With ``N`` nodes of (at least) ``S`` ranks each (:class:`~.layout.NodeLayout`: ``S`` is
the fewest ranks any node has), the flat buffer of ``n`` elements is cut into ``S``
slices like the ring's chunks (:func:`.ring.chunk_offsets`). One call:

1. *node-local reduce-scatter*: every rank puts its buffer where the ranks of its node can
   read it; local rank ``j < S`` sums slice ``j`` over the node's ranks (its own first,
   then the next local ranks in turn);
2. *inter-node allreduce*: the ``S`` rails (local rank ``j`` of every node) run the ring
   allreduce (:mod:`.ring`, over MPI messages) on their slice in parallel, so each rail
   rank sends ``2(N-1)/N * n/S`` elements across nodes (the flat ring sends
   ``2(P-1)/P * n`` per rank, and on a node-major layout one rank per node sends all of
   it across);
3. *node-local allgather*: every rank copies the ``S`` reduced slices into its buffer.

Exact: every element is summed once, in one fixed order (that of its slice's node-local
sum, then the nodes in the ring's order) and copied everywhere, so every rank gets
identical bits; the order differs from the flat ring's, so the two agree within the
rounding of a sum of ``P`` terms (the tolerance of ``tests/test_collectives.py``), not
bitwise.

Two transports for the node-local phases:

- shared memory (:class:`HierarchicalAllreduce`, when ``shared_memory=True``): an MPI-3
  window with two message slots per rank, like the slot sum (:mod:`.slot_sum`); a barrier
  of polling counters after the copy in and another before the copy out (two slots: a rank
  rewrites a slot two calls later, after every rank of its node has finished reading it);
- MPI (:func:`allreduce_over_mpi`, ``shared_memory=False``: every wait is inside an MPI
  call, as ``--stall-timeout``'s watchdog needs): ``Reduce_scatter`` on the node, the ring on
  the rails, ``Allgatherv`` on the node. Each element is reduced in one place, so the bits
  are again the same on every rank (not necessarily those of the shared-memory transport).

Blocking only (the node-local phases are collectives of the node, the rails' rings of the
rail; :func:`~mpitrain.collectives.start_allreduce` does not offer it). On one node it
still runs (one rail of one rank per slice: a shared-memory reduce-scatter + allgather);
``auto`` only picks it across nodes (:mod:`.select`).
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import ring, scratch
from mpitrain.collectives.args import MPI_TYPES
from mpitrain.collectives.layout import NodeLayout
from mpitrain.collectives.shared_memory import Counters, free_window, shared_arrays
from mpitrain.kernels.reduce import add_into, scale_inplace

WORD = 8  # slot sizes are multiples of this many bytes (the widest dtype)


def slice_bounds(n: int, layout: NodeLayout) -> list[int]:
    """Start of each of the layout's slices of ``n`` elements, plus ``n``."""
    return ring.chunk_offsets(n, layout.slices)


def _across_nodes(part: np.ndarray, layout: NodeLayout, tags: tuple[int, int]) -> None:
    """The rail's ring allreduce (sum) of this rank's slice, when there is anything to do
    (the slice length is the same on every member of a rail)."""
    if layout.nodes > 1 and part.size:
        ring.allreduce(part, layout.rail, tags, False)


class HierarchicalAllreduce:
    """The shared-memory transport: in-place sum of messages of up to :attr:`capacity`
    bytes (either float dtype) over the communicator ``layout`` describes.

    Collective to build, to call (same order, length and dtype everywhere) and to
    :meth:`close`.
    """

    def __init__(self, layout: NodeLayout, *, capacity: int) -> None:
        self.layout = layout
        self.capacity = max(WORD, -(-capacity // WORD) * WORD)
        self.win, self.parts = shared_arrays(layout.node, count=2 * self.capacity,
                                             dtype=np.uint8)
        self.barrier = Counters(layout.node)
        # The second barrier waits for the inter-node phase, and on an emulated cluster
        # the other "nodes" run on these cores: yield on every poll.
        self.barrier.patience = 0
        self.calls = 0

    def __call__(self, flat: np.ndarray, tags: tuple[int, int], mean: bool,
                 size: int) -> None:
        """Replace ``flat`` by its sum (``mean``: divided by ``size``, the ranks of the
        communicator) over every rank; identical bits on every rank."""
        if flat.nbytes > self.capacity:
            raise ValueError(f"message of {flat.nbytes} bytes does not fit the slots "
                             f"({self.capacity} bytes)")
        layout, n = self.layout, flat.size
        b = self.calls & 1
        self.calls += 1
        per_slot = self.capacity // flat.itemsize
        slots = [part.view(flat.dtype).reshape(2, per_slot)[b] for part in self.parts]
        slots[layout.local_rank][:n] = flat
        self._barrier(2 * self.calls - 1)
        off = slice_bounds(n, layout)
        j = layout.local_rank
        if j < layout.slices:
            lo, hi = off[j], off[j + 1]
            part = slots[j][lo:hi]  # only this rank reads or writes slice j of its slot
            for other in range(1, layout.local_size):
                add_into(part, slots[(j + other) % layout.local_size][lo:hi])
            _across_nodes(part, layout, tags)
            if mean:
                scale_inplace(part, 1.0 / size)
        self._barrier(2 * self.calls)
        for owner in range(layout.slices):
            flat[off[owner] : off[owner + 1]] = slots[owner][off[owner] : off[owner + 1]]

    def _barrier(self, value: int) -> None:
        """Every rank of the node has published ``value`` (memory barriers around it)."""
        self.win.Sync()
        self.barrier.publish(0, value)
        for rank in range(self.layout.local_size):
            if rank != self.layout.local_rank:
                self.barrier.wait(rank, 0, value)
        self.win.Sync()

    def close(self) -> None:
        """Collective: release the windows (idempotent)."""
        if self.win != MPI.WIN_NULL:
            self.parts = []
            free_window(self.win)
            self.win = MPI.WIN_NULL
            self.barrier.close()


def allreduce_over_mpi(flat: np.ndarray, layout: NodeLayout, tags: tuple[int, int],
                       mean: bool, size: int) -> None:
    """The MPI transport: ``Reduce_scatter`` on the node, the ring on the rails,
    ``Allgatherv`` on the node; in place, identical bits on every rank."""
    off = slice_bounds(flat.size, layout)
    counts = [off[j + 1] - off[j] if j < layout.slices else 0
              for j in range(layout.local_size)]
    displs = [off[min(j, layout.slices)] for j in range(layout.local_size)]
    mine = counts[layout.local_rank]
    mpitype = MPI_TYPES[flat.dtype]
    held = scratch.acquire(flat.dtype, max(mine, 1))
    part = held[:mine]
    layout.node.Reduce_scatter([flat, mpitype], [part, mpitype], counts, op=MPI.SUM)
    if mine:
        _across_nodes(part, layout, tags)
        if mean:
            scale_inplace(part, 1.0 / size)
    layout.node.Allgatherv([part, mpitype], [flat, (counts, displs), mpitype])
    scratch.release(held)
