"""Allreduce of a numpy buffer across the ranks of a communicator, in place.

``allreduce(buf, comm, algorithm=..., op=...)`` sums (``op="sum"``) or averages
(``op="mean"``: the sum times ``1/P``) a C-contiguous float32/float64 array of any shape
over every rank of ``comm`` and returns it. Every reduction in the package, and where it
lives:

- ``"ring"``: pipelined reduce-scatter + allgather (bandwidth-optimal), over point-to-point
  MPI messages (:mod:`.ring`), or, when every rank is on one node, the shared-memory ring
  that passes the same messages through an MPI-3 shared-memory window (:mod:`.shared_ring`;
  same result bits; zero copy on arrays from :func:`shared_buffer`);
- ``"shm"``: the slot sum (:mod:`.slot_sum`): every rank writes its message into its slot
  of a shared-memory window, one barrier through polling counters, every rank sums all
  slots in rank order. Latency-bound messages on one node; only when every rank of
  ``comm`` is on one node and ``shared_memory=True`` (ValueError on every rank otherwise);
- ``"mpi"``: the MPI library's own ``Allreduce`` (:mod:`.native`);
- ``"root"``: ``Reduce`` to rank 0, then ``Bcast`` (:mod:`.root`);
- ``"auto"``: one of the above by message size, rank count and whether the shared-memory
  transports may be used; what it means is measured and documented in one place,
  :mod:`.select` (:func:`choose`);
- compressed (:mod:`.compressed`, ``CompressedAllreduce``): float32 messages cross the
  network as 16-bit words (fp16/bf16), sums in float32, a tail of exact elements; reached
  through :class:`Allreducer` (``compress=``);
- persistent (:mod:`.persistent`, :class:`Allreducer`): like ``MPI_Allreduce_init``, the
  reduction of a fixed-size message set up once (``auto`` resolved once, windows and
  buffers allocated once) and run every step without allocating; ``shm`` there lets the
  caller write straight into its shared slot (zero copy). Built for the sync training
  strategy's step message, so that every reduction goes through this package. Its
  ``tune=`` lets ``auto`` follow what ``python -m mpitrain tune`` measured on this machine
  (:mod:`.tuning` times, :mod:`.tune_cache` remembers, :func:`.select.resolve_tuned`
  decides);
- sparse rows (:mod:`.sparse`, ``SparseRowAllreducer``): around an ``Allreducer``, a
  message whose row block a step touches sparsely sends only the touched rows when that is
  cheaper, summed in the dense algorithm's order (the same bits either way).

Like any collective, every rank of ``comm`` must make the same calls in the same order
with the same ``algorithm``, ``op``, dtype and element count; this is not checked (a
mismatch is undefined: wrong results or a hang). Argument errors are therefore detected
locally, without communication, and raise the same exception on every rank. The first call
on a communicator is collective setup (it duplicates ``comm``, loads the numba kernels,
rank 0 first, and, for ``shm`` or ``auto``, tests whether every rank is on one node: the
same answer everywhere, so a refused ``shm`` raises on every rank alike). Results are
bitwise identical on every rank.

The package may import mpi4py, numpy, :mod:`mpitrain.kernels` (reduction kernels) and
:mod:`mpitrain.runtime` (loading them in waves); nothing of training.

``reduce_scatter(buf, comm)`` and ``allgather(buf, comm)`` are the two halves of an
allreduce (:mod:`.scatter`), for sharded training: rank ``r`` owns chunk ``r`` of the
flat buffer, cut by :func:`.ring.chunk_offsets` ``(n, P)``; algorithms ``ring``, ``mpi``
and ``auto`` (:func:`.select.choose_scatter`). Same argument rules as ``allreduce``.

``shared_buffer(shape, dtype, comm)`` allocates an array in shared memory (when all ranks
are on one node), on which the ring runs without staging copies.

``start_allreduce`` starts the same operation and returns a handle; the buffer must not
be read or written until ``handle.wait()`` returns it (``handle.test()`` polls). See
:func:`start_allreduce` for when each algorithm progresses (``shm`` is blocking only
there). A persistent reducer's started reductions (``Allreducer(..., in_flight=d)``,
``--mode ssp``) do have a shared-memory form: the slot sum with ``2d + 1`` slots per rank
(:mod:`.slot_sum`), which ``auto`` picks on one node (:func:`.select.resolve_started`).
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import blocking, nonblocking, scatter
from mpitrain.collectives.args import (
    ALGORITHMS,
    NONBLOCKING_ALGORITHMS,
    OPS,
    SCATTER_ALGORITHMS,
    STEP_ALGORITHMS,
    check_algorithm,
    check_choice,
    check_comm,
    flat_view,
)
from mpitrain.collectives.context import CommState, state_of
from mpitrain.collectives.handles import AllreduceHandle
from mpitrain.collectives.persistent import Allreducer
from mpitrain.collectives.select import choose, resolve, resolve_scatter

__all__ = ["ALGORITHMS", "NONBLOCKING_ALGORITHMS", "OPS", "SCATTER_ALGORITHMS", "STEP_ALGORITHMS",
           "AllreduceHandle", "Allreducer", "allgather", "allreduce", "choose",
           "reduce_scatter", "shared_buffer", "start_allreduce"]


def _prepare(
    buf: np.ndarray, comm: MPI.Comm, algorithm: str, op: str, *, shared_memory: bool,
    nonblocking: bool = False,
) -> tuple[np.ndarray, CommState, str]:
    """Check the arguments, then (collective on first use) the private comm, and resolve
    the algorithm (:func:`.select.resolve`)."""
    flat = flat_view(buf)
    check_algorithm(algorithm, nonblocking=nonblocking)
    check_choice("op", op, OPS)
    check_comm(comm)
    state = state_of(comm)
    algorithm = resolve(algorithm, state, flat.nbytes, flat.itemsize,
                        shared_memory=shared_memory, nonblocking=nonblocking)
    return flat, state, algorithm


def allreduce(
    buf: np.ndarray, comm: MPI.Comm = MPI.COMM_WORLD, *, algorithm: str = "auto",
    op: str = "sum", shared_memory: bool = True,
) -> np.ndarray:
    """Reduce ``buf`` over ``comm`` in place and return it (collective).

    ``buf``: C-contiguous, writeable float32/float64 array of any shape (TypeError /
    ValueError otherwise). ``algorithm``: one of :data:`ALGORITHMS`; ``op``: ``"sum"`` or
    ``"mean"`` (ValueError otherwise). ``shared_memory=False`` keeps every algorithm on MPI
    calls even on one node (the ring sends MPI messages, ``auto`` never picks ``shm`` and
    ``shm`` raises ValueError), so a waiting rank always waits inside an MPI call (what
    ``--stall-timeout``'s watchdog needs). All arguments must be the same on every rank.

    ``shm`` keeps one slot-sum window per communicator, sized for the largest message so
    far and replaced (collectively, on every rank alike) when a larger one comes; it is
    freed with the communicator.
    """
    flat, state, algorithm = _prepare(buf, comm, algorithm, op, shared_memory=shared_memory)
    blocking.run(flat, state, algorithm, op == "mean", shared_memory=shared_memory)
    return buf


def _prepare_scatter(buf: np.ndarray, comm: MPI.Comm, algorithm: str, op: str = "sum",
                     ) -> tuple[np.ndarray, CommState, str]:
    """Check the arguments of reduce_scatter/allgather, then (collective on first use) the
    private comm, and resolve the algorithm (:func:`.select.resolve_scatter`)."""
    flat = flat_view(buf)
    check_choice("algorithm", algorithm, SCATTER_ALGORITHMS)
    check_choice("op", op, OPS)
    check_comm(comm)
    state = state_of(comm)
    return flat, state, resolve_scatter(algorithm, state, flat.nbytes, flat.itemsize)


def reduce_scatter(
    buf: np.ndarray, comm: MPI.Comm = MPI.COMM_WORLD, *, algorithm: str = "auto",
    op: str = "sum",
) -> np.ndarray:
    """Sum (``op="mean"``: average) ``buf`` over ``comm``, keeping only this rank's chunk
    (collective); returns that chunk, a 1-D view of ``buf``.

    Rank ``r`` owns chunk ``r`` of the flattened buffer as :func:`.ring.chunk_offsets`
    ``(buf.size, P)`` cuts it (the first ``size % P`` chunks one element longer; some may
    be empty). The rest of ``buf`` is left holding partial sums. ``buf``: as for
    :func:`allreduce`; ``algorithm``: one of :data:`SCATTER_ALGORITHMS`; ``op``: ``"sum"``
    or ``"mean"`` (ValueError/TypeError on every rank otherwise).
    """
    flat, state, algorithm = _prepare_scatter(buf, comm, algorithm, op)
    scatter.reduce_scatter(flat, state, algorithm, op == "mean")
    return scatter.chunk(flat, state.comm.Get_size(), state.comm.Get_rank())


def allgather(
    buf: np.ndarray, comm: MPI.Comm = MPI.COMM_WORLD, *, algorithm: str = "auto",
) -> np.ndarray:
    """Fill every rank's ``buf`` with every rank's chunk of it (collective); returns ``buf``.

    Rank ``r`` contributes chunk ``r`` (the layout of :func:`reduce_scatter`), so
    ``allgather(buf)`` after ``reduce_scatter(buf)`` is an allreduce. Argument rules as
    :func:`reduce_scatter`.
    """
    flat, state, algorithm = _prepare_scatter(buf, comm, algorithm)
    scatter.allgather(flat, state, algorithm)
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

    ``algorithm`` is one of :data:`NONBLOCKING_ALGORITHMS`: ``shm`` raises ValueError
    (on every rank), because its ranks wait for each other polling shared memory, outside
    MPI: a rank polling there while another waits for an earlier nonblocking operation to
    progress would hang both. ``auto`` here chooses among ``ring`` (over MPI messages),
    ``mpi`` and ``root``.

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
    flat, state, algorithm = _prepare(buf, comm, algorithm, op, shared_memory=False,
                                      nonblocking=True)
    return nonblocking.start(buf, flat, state, algorithm, op == "mean")
