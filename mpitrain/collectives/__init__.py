"""Allreduce of a numpy buffer across the ranks of a communicator, in place.

``allreduce(buf, comm, algorithm=..., op=...)`` sums (``op="sum"``) or averages
(``op="mean"``: the sum times ``1/P``) a C-contiguous float32/float64 array of any shape
over every rank of ``comm`` and returns it. Algorithms:

- ``"ring"``: pipelined reduce-scatter + allgather (bandwidth-optimal), over point-to-point
  messages (:mod:`.ring`), or through shared memory when every rank is on one node
  (:mod:`.shared_ring`; same result bits);
- ``"mpi"``: the MPI library's own ``Allreduce``;
- ``"root"``: ``Reduce`` to rank 0, then ``Bcast``;
- ``"auto"``: one of the above by message size and rank count (see :mod:`.select`).

Like any collective, every rank of ``comm`` must make the same calls in the same order
with the same ``algorithm``, ``op``, dtype and element count; this is not checked (a
mismatch is undefined: wrong results or a hang). Argument errors are therefore detected
locally, without communication, and raise the same exception on every rank. The first call
on a communicator is collective setup (it duplicates ``comm`` and loads the numba kernels,
rank 0 first). Results are bitwise identical on every rank.

``start_allreduce`` starts the same operation and returns a handle; the buffer must not
be read or written until ``handle.wait()`` returns it (``handle.test()`` polls). See
:func:`start_allreduce` for when each algorithm progresses.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import native, ring, root, shared_ring
from mpitrain.collectives.args import ALGORITHMS, OPS, check_choice, flat_view
from mpitrain.collectives.context import CommState, state_of
from mpitrain.collectives.handles import AllreduceHandle, DoneHandle
from mpitrain.collectives.select import choose

__all__ = ["ALGORITHMS", "OPS", "AllreduceHandle", "allreduce", "choose", "start_allreduce"]


def _prepare(
    buf: np.ndarray, comm: MPI.Comm, algorithm: str, op: str
) -> tuple[np.ndarray, CommState, tuple[int, int], str]:
    """Check the arguments, then (collective on first use) the private comm and tags."""
    flat = flat_view(buf)
    check_choice("algorithm", algorithm, ALGORITHMS)
    check_choice("op", op, OPS)
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"comm must be an mpi4py MPI.Intracomm (got {type(comm).__name__})")
    state = state_of(comm)
    tags = state.next_tags()
    size = state.comm.Get_size()
    if algorithm == "auto":
        algorithm = choose(flat.nbytes, size, flat.itemsize)
    return flat, state, tags, algorithm


def allreduce(
    buf: np.ndarray, comm: MPI.Comm = MPI.COMM_WORLD, *, algorithm: str = "auto", op: str = "sum"
) -> np.ndarray:
    """Reduce ``buf`` over ``comm`` in place and return it (collective).

    ``buf``: C-contiguous, writeable float32/float64 array of any shape (TypeError /
    ValueError otherwise). ``algorithm``: one of :data:`ALGORITHMS`; ``op``: ``"sum"`` or
    ``"mean"`` (ValueError otherwise). All arguments must be the same on every rank.
    """
    flat, state, tags, algorithm = _prepare(buf, comm, algorithm, op)
    mean = op == "mean"
    pcomm = state.comm
    if flat.size == 0:
        return buf
    if algorithm == "ring":
        node_ring = state.node_ring() if shared_ring.ENABLED else None
        if node_ring is not None:
            node_ring.allreduce(flat, mean)
        else:
            ring.allreduce(flat, pcomm, tags, mean)
    elif algorithm == "mpi":
        native.allreduce(flat, pcomm, mean)
    else:
        root.allreduce(flat, pcomm, mean)
    return buf


def start_allreduce(
    buf: np.ndarray, comm: MPI.Comm = MPI.COMM_WORLD, *, algorithm: str = "auto", op: str = "sum"
) -> AllreduceHandle:
    """Start :func:`allreduce` without waiting; finish it with ``handle.wait()``.

    The start is collective and so is the first ``test()``/``wait()`` of a ``root``
    handle; call them in the same order on every rank. Progress (MPICH has no progress
    thread by default) happens only inside MPI calls, so to overlap with computation call
    ``handle.test()`` now and then:

    - ``mpi``: ``Iallreduce``, moved by MPI during any MPI call;
    - ``ring``: over point-to-point messages even on one node; the first segments are
      sent at start, each ``test()`` reduces whatever arrived and forwards it, ``wait()``
      does the rest;
    - ``root``: ``Ireduce`` at start; the first ``test()``/``wait()`` waits for it and
      starts the ``Ibcast`` (nonblocking collectives must start in the same order on
      every rank, so this cannot depend on timing).
    """
    flat, state, tags, algorithm = _prepare(buf, comm, algorithm, op)
    mean = op == "mean"
    pcomm = state.comm
    if flat.size == 0:
        return DoneHandle(buf)
    if algorithm == "ring":
        return ring.RingAllreduce(buf, flat, pcomm, tags, mean)
    if algorithm == "mpi":
        return native.NativeHandle(buf, flat, pcomm, mean)
    return root.RootHandle(buf, flat, pcomm, mean)
