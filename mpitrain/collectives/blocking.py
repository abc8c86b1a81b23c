"""One blocking allreduce of a checked 1-D buffer by an already resolved algorithm.

Shared by :func:`mpitrain.collectives.allreduce` (which checks the arguments and resolves
``auto`` on every call) and :class:`mpitrain.collectives.Allreducer` (which does both once),
so the two give the same bits for the same algorithm.
"""

from __future__ import annotations

import numpy as np

from mpitrain.collectives import hierarchical, native, ring, root
from mpitrain.collectives.context import CommState
from mpitrain.kernels.reduce import scale_inplace


def run(flat: np.ndarray, state: CommState, algorithm: str, mean: bool, *,
        shared_memory: bool) -> None:
    """Collective: reduce ``flat`` over ``state.comm`` in place with ``algorithm`` (one of
    ``shm``, ``ring``, ``hierarchical``, ``mpi``, ``root``; ``shm`` only where
    :func:`.select.resolve` allowed it); ``shared_memory`` lets the ring and the
    hierarchical allreduce use their shared-memory transports."""
    if flat.size == 0:
        return
    comm = state.comm
    if algorithm == "shm":
        size = comm.Get_size()
        if size > 1:  # the sum over one rank is the buffer itself
            state.slot_sum(flat.nbytes, flat.dtype)(flat)
            if mean:
                scale_inplace(flat, 1.0 / size)
    elif algorithm == "ring":
        node_ring = state.node_ring() if shared_memory else None
        where = node_ring.locate(flat) if node_ring is not None else None
        if where is not None:
            node_ring.in_place(flat, where, mean)
        elif node_ring is not None:
            node_ring.allreduce(flat, mean)
        else:
            ring.allreduce(flat, comm, state.next_tags(), mean)
    elif algorithm == "hierarchical":
        size = comm.Get_size()
        if size > 1:
            tags = state.next_tags()
            if shared_memory:
                state.hierarchy(flat.nbytes)(flat, tags, mean, size)
            else:
                hierarchical.allreduce_over_mpi(flat, state.layout(), tags, mean, size)
    elif algorithm == "mpi":
        native.allreduce(flat, comm, mean)
    else:
        root.allreduce(flat, comm, mean)
