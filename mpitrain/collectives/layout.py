"""Which ranks of a communicator share a node: the layout hierarchical reductions follow.

MPI says which ranks share memory (``Split_type(COMM_TYPE_SHARED)``: with MPICH's hydra,
the ranks its launcher placed on one host); :func:`node_layout` turns that into the
communicators of the hierarchical allreduce (:mod:`.hierarchical`):

- ``node``: the ranks of this rank's node, ordered by rank in the parent communicator;
- ``rail``: local rank ``j`` of every node, ordered by node (nodes are numbered by their
  lowest rank), for ``j < slices``, where ``slices`` is the fewest ranks any node has (so
  every rail has a member on every node, whatever the layout: 2+2, 3x1, 2+1, ...); ranks
  with a higher local rank are on no rail (``MPI.COMM_NULL``).

Building it is collective (one ``Split_type``, one small ``allgather``, one ``Split``); it
is done once per communicator (:meth:`mpitrain.collectives.context.CommState.layout`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mpi4py import MPI


@dataclass
class NodeLayout:
    """The node structure of a communicator, the same description on every rank."""

    sizes: tuple[int, ...]  # ranks on each node, nodes in order of their lowest rank
    node_of: tuple[int, ...]  # node index of every rank of the parent communicator
    node_index: int  # this rank's node
    local_rank: int  # this rank's place on its node
    node: MPI.Comm = field(repr=False)  # this node's ranks
    rail: MPI.Comm = field(repr=False)  # local rank j of every node (j < slices), or COMM_NULL

    @property
    def nodes(self) -> int:
        """Number of nodes."""
        return len(self.sizes)

    @property
    def local_size(self) -> int:
        """Ranks on this rank's node."""
        return self.sizes[self.node_index]

    @property
    def slices(self) -> int:
        """Slices of the hierarchical allreduce: the fewest ranks on any node."""
        return min(self.sizes)

    def describe(self) -> str:
        """``2x2`` for even layouts, ``2+1`` for uneven ones."""
        if len(set(self.sizes)) == 1:
            return f"{self.nodes}x{self.sizes[0]}"
        return "+".join(str(size) for size in self.sizes)

    def free(self) -> None:
        """Collective: free the node and rail communicators."""
        for comm in (self.node, self.rail):
            if comm != MPI.COMM_NULL:
                comm.Free()


def node_layout(comm: MPI.Comm) -> NodeLayout:
    """Collective: the :class:`NodeLayout` of ``comm``."""
    rank = comm.Get_rank()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    leaders = comm.allgather(node.allreduce(rank, op=MPI.MIN))  # every rank's node's leader
    firsts = sorted(set(leaders))
    index = {leader: i for i, leader in enumerate(firsts)}
    node_of = tuple(index[leader] for leader in leaders)
    sizes = tuple(node_of.count(i) for i in range(len(firsts)))
    local_rank = node.Get_rank()
    mine = node_of[rank]
    color = local_rank if local_rank < min(sizes) else MPI.UNDEFINED
    rail = comm.Split(color, key=mine)
    return NodeLayout(sizes=sizes, node_of=node_of, node_index=mine, local_rank=local_rank,
                      node=node, rail=rail)
