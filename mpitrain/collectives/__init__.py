"""Allreduce of a numpy buffer across the ranks of a communicator, in place.

``allreduce(buf, comm, algorithm=..., op=...)`` sums (``op="sum"``) or averages
(``op="mean"``: the sum times ``1/P``) a C-contiguous float32/float64 array of any shape
over every rank of ``comm`` and returns it. Algorithms:

- ``"ring"``: pipelined reduce-scatter + allgather (bandwidth-optimal), over point-to-point
  messages (:mod:`.ring`), or through shared memory when every rank is on one node
  (:mod:`.shared_ring`; same result bits; ``shared_memory=False`` turns that off);
- ``"mpi"``: the MPI library's own ``Allreduce``;
- ``"root"``: ``Reduce`` to rank 0, then ``Bcast``;
- ``"auto"``: one of the above by message size and rank count (see :mod:`.select`).

Like any collective, every rank of ``comm`` must make the same calls in the same order
with the same ``algorithm``, ``op``, dtype and element count; this is not checked (a
mismatch is undefined: wrong results or a hang). Argument errors are therefore detected
locally, without communication, and raise the same exception on every rank. The first call
on a communicator is collective setup (it duplicates ``comm`` and loads the numba kernels,
rank 0 first). Results are bitwise identical on every rank.

``shared_buffer(shape, dtype, comm)`` allocates an array in shared memory (when all ranks
are on one node), on which the ring runs without staging copies.

``start_allreduce`` starts the same operation and returns a handle; the buffer must not
be read or written until ``handle.wait()`` returns it (``handle.test()`` polls). See
:func:`start_allreduce` for when each algorithm progresses.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import native, ring, root
from mpitrain.collectives.args import ALGORITHMS, OPS, check_choice, check_comm, flat_view
from mpitrain.collectives.context import CommState, state_of
from mpitrain.collectives.handles import AllreduceHandle, DoneHandle
from mpitrain.collectives.select import choose

__all__ = ["ALGORITHMS", "OPS", "AllreduceHandle", "allreduce", "choose", "shared_buffer",
           "start_allreduce"]


def _prepare(
    buf: np.ndarray, comm: MPI.Comm, algorithm: str, op: str, *, shared_memory: bool
) -> tuple[np.ndarray, CommState, tuple[int, int], str]:
    """Check the arguments, then (collective on first use) the private comm and tags, and
    resolve ``auto`` (for a ring through shared memory if ``shared_memory``)."""
    flat = flat_view(buf)
    check_choice("algorithm", algorithm, ALGORITHMS)
    check_choice("op", op, OPS)
    check_comm(comm)
    state = state_of(comm)
    tags = state.next_tags()
    size = state.comm.Get_size()
    if algorithm == "auto":
        shared = shared_memory and size > 1 and state.node_ring() is not None
        algorithm = choose(flat.nbytes, size, flat.itemsize, shared=shared)
    return flat, state, tags, algorithm


def allreduce(
    buf: np.ndarray, comm: MPI.Comm = MPI.COMM_WORLD, *, algorithm: str = "auto",
    op: str = "sum", shared_memory: bool = True,
) -> np.ndarray:
    """Reduce ``buf`` over ``comm`` in place and return it (collective).

    ``buf``: C-contiguous, writeable float32/float64 array of any shape (TypeError /
    ValueError otherwise). ``algorithm``: one of :data:`ALGORITHMS`; ``op``: ``"sum"`` or
    ``"mean"`` (ValueError otherwise). ``shared_memory=False`` keeps the ring on MPI
    messages even on one node, so a waiting rank always waits inside an MPI call (what
    ``--stall-timeout``'s watchdog needs). All arguments must be the same on every rank.
    """
    flat, state, tags, algorithm = _prepare(buf, comm, algorithm, op,
                                            shared_memory=shared_memory)
    mean = op == "mean"
    pcomm = state.comm
    if flat.size == 0:
        return buf
    if algorithm == "ring":
        node_ring = state.node_ring() if shared_memory else None
        where = node_ring.locate(flat) if node_ring is not None else None
        if where is not None:
            node_ring.in_place(flat, where, mean)
        elif node_ring is not None:
            node_ring.allreduce(flat, mean)
        else:
            ring.allreduce(flat, pcomm, tags, mean)
    elif algorithm == "mpi":
        native.allreduce(flat, pcomm, mean)
    else:
        root.allreduce(flat, pcomm, mean)
    return buf


def shared_buffer(
    shape: int | tuple[int, ...], dtype: np.dtype | type = np.float32,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> np.ndarray:
    """Collective: a zeroed array in shared memory, for the fastest ``ring`` on one node.

    When every rank of ``comm`` is on one node, the array lives in an MPI shared-memory
    window and ``allreduce(buf, comm, algorithm="ring")`` on it (or on the same slice of it
    on every rank) reads the neighbours' buffers directly, with no staging copies
    (:mod:`.shared_ring`); otherwise it is an ordinary array. Like any collective, call it
    with the same arguments on every rank. The memory belongs to ``comm``: it is freed
    when ``comm`` is, so do not use the array after that.
    """
    dtype = np.dtype(dtype)
    check_choice("dtype", dtype.name, ("float32", "float64"))
    check_comm(comm)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    count = int(np.prod(shape, dtype=np.int64))
    node_ring = state_of(comm).node_ring()
    if node_ring is None:
        return np.zeros(shape, dtype=dtype)
    raw = node_ring.allocate(count * dtype.itemsize)
    array = raw.view(dtype).reshape(shape)
    array[...] = 0
    return array


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
    flat, state, tags, algorithm = _prepare(buf, comm, algorithm, op, shared_memory=False)
    mean = op == "mean"
    pcomm = state.comm
    if flat.size == 0:
        return DoneHandle(buf)
    if algorithm == "ring":
        return ring.RingAllreduce(buf, flat, pcomm, tags, mean)
    if algorithm == "mpi":
        return native.NativeHandle(buf, flat, pcomm, mean)
    return root.RootHandle(buf, flat, pcomm, mean)
