"""Bytes each rank sends to other nodes in one allreduce, counted from the algorithms'
message schedules (what ``bench allreduce`` reports and the scaling model assumes).

- ``ring`` (over ``P`` ranks in rank order): rank ``p`` sends ``2(P-1)`` chunks to rank
  ``p+1`` (reduce-scatter step ``s``: chunk ``p-s``; allgather step ``s``: chunk
  ``p+1-s``, chunks as :func:`.ring.chunk_offsets` cuts them); they cross nodes when
  ``p+1`` is on another node. With ranks placed node by node (what launchers do), only
  the last rank of each node sends across: ``2(P-1)/P * n`` bytes, the others nothing;
- ``hierarchical`` (:mod:`.hierarchical`): local rank ``j`` below the slice count ``S``
  sends its slice's ring over the ``N`` nodes: ``2(N-1)/N * n/S`` bytes, every one of them
  across (the other ranks send nothing across);
- ``shm``: nothing (one node only);
- ``mpi``, ``root``: MPI's own algorithms, whose schedules are not ours to count (None).
"""

from __future__ import annotations

from mpitrain.collectives.ring import chunk_offsets

COUNTED = ("shm", "ring", "hierarchical")


def _ring_sends(n: int, size: int, rank: int) -> int:
    """Elements rank ``rank`` sends to its right neighbour in a ring allreduce of ``n``."""
    off = chunk_offsets(n, size)
    chunk = [off[c + 1] - off[c] for c in range(size)]
    return sum(chunk[(rank - s) % size] + chunk[(rank + 1 - s) % size]
               for s in range(size - 1))


def node_major(sizes: tuple[int, ...] | list[int]) -> list[int]:
    """The node of every rank when ranks fill node 0 first (``sizes[i]`` on node ``i``),
    as launchers place them by default."""
    return [node for node, count in enumerate(sizes) for _ in range(count)]


def cross_node_bytes(algorithm: str, node_of: tuple[int, ...] | list[int], n: int,
                     itemsize: int) -> list[int] | None:
    """Bytes every rank sends to other nodes in one allreduce of ``n`` elements of
    ``itemsize`` bytes by ``algorithm`` (resolved, not ``auto``), rank ``p`` being on node
    ``node_of[p]`` (nodes numbered by their lowest rank, as :class:`.layout.NodeLayout`
    does); None for ``mpi`` and ``root``."""
    size = len(node_of)
    if algorithm not in COUNTED:
        return None
    if algorithm == "shm" or size == 1:
        return [0] * size
    if algorithm == "ring":
        return [_ring_sends(n, size, p) * itemsize
                if node_of[p] != node_of[(p + 1) % size] else 0 for p in range(size)]
    nodes = max(node_of) + 1
    slices = min(node_of.count(node) for node in range(nodes))
    off = chunk_offsets(n, slices)
    out = []
    for p in range(size):
        local = node_of[:p].count(node_of[p])  # this rank's place on its node
        sent = (_ring_sends(off[local + 1] - off[local], nodes, node_of[p])
                if local < slices and nodes > 1 else 0)
        out.append(sent * itemsize)
    return out
