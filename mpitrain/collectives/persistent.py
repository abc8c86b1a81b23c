"""``Allreducer``: a persistent allreduce of a fixed-size message (like MPI-4's
``MPI_Allreduce_init``), for a loop that reduces one message every step.

Everything is decided and allocated once, at construction (collective): the arguments are
checked as :func:`~mpitrain.collectives.allreduce` checks them, ``auto`` is resolved for
this message size by :func:`~mpitrain.collectives.select.choose` (the one place that says
what ``auto`` means), and the windows and buffers are built. Each call then only reduces:

- ``shm``: the caller writes its contribution straight into its slot of the slot sum's
  window (:meth:`Allreducer.buffer` is that slot, alternating between two), and the call
  sums every rank's slot into the private result: no copy (what the sync strategy's
  gradient kernel does);
- ``ring``, ``mpi``, ``root``: the contribution is written into the result array, reduced
  there in place by the same code as ``allreduce`` (so the same bits);
- ``compress="fp16"|"bf16"``: :class:`~mpitrain.collectives.compressed.CompressedAllreduce`
  (float32 only); the last ``exact_tail`` elements travel exactly (the loss / count /
  stop-flag tail) and ``batch_size`` sets its power-of-two scaling. The compressed
  transport replaces the algorithm, so ``algorithm`` must then be ``auto`` (ValueError
  otherwise). On one rank it still rounds through 16 bits (no communication), so one
  rank sees the precision several ranks get;
- one rank (uncompressed) or an empty message: no communication at all; the buffer is the
  result.

``tune`` (``off`` by default; ``cache``, ``auto``, ``force``) lets ``auto`` follow the
tuning cache, measuring on a miss (``auto``) or always (``force``):
:func:`~mpitrain.collectives.select.resolve_tuned`. :attr:`Allreducer.source` says where
the algorithm came from (``given``, ``table``, ``cache``, ``measured``) and
:attr:`Allreducer.tuning` holds the cache entry behind it (or None).

``in_flight=d`` (``d >= 1``) makes the reductions nonblocking, like ``MPI_Start`` on a
persistent request: :meth:`Allreducer.start` returns a handle at once, whose ``wait()``
returns the sum, and up to ``d`` reductions may be in flight while the next contribution is
written (call ``k`` finished before call ``k + d + 1`` starts; handles finished in the
order they started). ``auto`` resolves by :func:`~mpitrain.collectives.select.resolve_started`:
on one node with ``shared_memory``, ``shm`` with ``2d + 1`` slots per rank
(:mod:`.slot_sum`'s started calls: no MPI call needed for progress, the blocking slot sum's
bits); otherwise ``ring`` over MPI messages, ``mpi`` or ``root`` as
:func:`~mpitrain.collectives.start_allreduce` runs them, on ``d + 1`` private buffers used
in turn. No ``compress``, no ``hierarchical``, ``tune`` must be ``off``. Built for
``--mode ssp``.

A call allocates nothing but transient array views (the training step loop is
allocation-free).
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import blocking, nonblocking
from mpitrain.collectives.args import (
    MPI_TYPES,
    OPS,
    check_algorithm,
    check_choice,
    check_comm,
)
from mpitrain.collectives.compressed import COMPRESSIONS, CompressedAllreduce
from mpitrain.collectives.context import state_of, warm
from mpitrain.collectives.handles import AllreduceHandle, DoneHandle
from mpitrain.collectives.select import resolve, resolve_started, resolve_tuned
from mpitrain.collectives.slot_sum import SharedMemoryAllreduce
from mpitrain.collectives.tuning import TUNE_MODES
from mpitrain.kernels.reduce import scale_inplace


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` if it is an int in ``[low, high]``, else TypeError / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int (got {type(value).__name__})")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise ValueError(f"{name} must be >= {low}{upper} (got {value})")
    return int(value)


class Allreducer:
    """Persistent allreduce of ``count`` elements of ``dtype`` over ``comm``.

    ``algorithm``, ``op`` and ``shared_memory`` mean what they mean for
    :func:`~mpitrain.collectives.allreduce`; ``compress``, ``exact_tail`` and ``batch_size``
    select the 16-bit transport (module docstring). Construction, :meth:`__call__` and
    :meth:`close` are collective: every rank makes the same calls with the same arguments.
    Argument errors raise the same exception on every rank before any communication, except
    ``shm`` where it is not allowed (ValueError on every rank after the collective one-node
    test). :attr:`algorithm` is what runs: ``shm``, ``ring``, ``hierarchical``, ``mpi``,
    ``root`` or ``compressed``; :attr:`source` where ``auto``'s choice came from
    (``tune``: module docstring).

    Use::

        reducer = Allreducer(n, np.float32, comm)
        for step in ...:
            contribution = reducer.buffer()   # may change from call to call
            contribution[...] = ...           # write this rank's message
            result = reducer()                # the same array every call
        reducer.close()
    """

    def __init__(self, count: int, dtype: np.dtype | type, comm: MPI.Comm, *,
                 algorithm: str = "auto", op: str = "sum", shared_memory: bool = True,
                 compress: str = "none", exact_tail: int = 0, batch_size: int = 1,
                 tune: str = "off", in_flight: int = 0) -> None:
        count = _check_int("count", count, 0)
        in_flight = _check_int("in_flight", in_flight, 0)
        dtype = np.dtype(dtype)
        if dtype not in MPI_TYPES or not dtype.isnative:
            raise TypeError(f"dtype must be float32 or float64 (got {dtype})")
        check_algorithm(algorithm)
        check_choice("op", op, OPS)
        check_choice("compress", compress, COMPRESSIONS)
        check_choice("tune", tune, TUNE_MODES)
        exact_tail = _check_int("exact_tail", exact_tail, 0, count)
        batch_size = _check_int("batch_size", batch_size, 1)
        if compress != "none" and dtype != np.dtype(np.float32):
            raise ValueError(f"compress={compress!r} needs dtype float32 (got {dtype})")
        if compress != "none" and algorithm != "auto":
            raise ValueError(f"compress={compress!r} is its own transport (16-bit words "
                             f"over MPI), so algorithm must be 'auto' (got {algorithm!r})")
        if in_flight and (compress != "none" or tune != "off"):
            raise ValueError(f"in_flight={in_flight} (started reductions) takes neither "
                             f"compress nor tune (got compress={compress!r}, tune={tune!r})")
        check_comm(comm)
        self._state = state = state_of(comm)
        self.count, self.dtype, self.op, self.compress = count, dtype, op, compress
        self.shared_memory = shared_memory
        self._mean = op == "mean"
        size = state.comm.Get_size()
        self.ranks = size  # the ranks the reduction spans
        self._factor = 1.0 / size
        self.in_flight = in_flight
        # the results of the calls in flight, used in turn (in_flight + 1 of them)
        self._results = [np.zeros(count, dtype=dtype) for _ in range(in_flight + 1)]
        self._result = self._results[0]
        self._started = 0  # calls started (in_flight)
        self._shm: SharedMemoryAllreduce | None = None
        self._compressed: CompressedAllreduce | None = None
        self._closed = False
        self.source = "given" if algorithm != "auto" else "table"
        self.tune = tune
        self.tuning: dict | None = None  # the tuning cache's entry behind the choice
        self.tuning_path: str | None = None  # and the file it is in (rank 0's)
        if compress != "none":
            self.algorithm, self.source = "compressed", "given"
            warm(state.comm, "compress")
            if count:
                self._compressed = CompressedAllreduce(
                    state.comm, n=count - exact_tail, tail=exact_tail, codec=compress,
                    batch_size=batch_size)
            self._local = count == 0
            return
        if in_flight:
            self.algorithm = resolve_started(algorithm, state, count * dtype.itemsize,
                                             dtype.itemsize, shared_memory=shared_memory)
        elif algorithm == "auto":
            self.algorithm, self.source, self.tuning = resolve_tuned(
                state, count, dtype, shared_memory=shared_memory, tune=tune,
                make=lambda name: Allreducer(count, dtype, comm, algorithm=name,
                                             shared_memory=shared_memory))
            if self.tuning is not None:
                self.tuning_path = str(state.tune_cache(shared_memory).path)
        else:
            self.algorithm = resolve(algorithm, state, count * dtype.itemsize,
                                     dtype.itemsize, shared_memory=shared_memory)
        self._local = size == 1 or count == 0  # nothing to communicate
        if self._local:
            return
        if self.algorithm == "shm":
            self._shm = SharedMemoryAllreduce(state.comm, n=count, dtype=dtype,
                                              slots=2 * in_flight + 1 if in_flight else 2)
        elif in_flight:
            pass  # (started reductions over MPI: nothing to build)
        elif self.algorithm == "ring" and shared_memory:
            state.node_ring()  # build the ring's transport now, not in the first call
        elif self.algorithm == "hierarchical":
            state.layout()  # and the node layout and windows of the hierarchical allreduce
            if shared_memory:
                state.hierarchy(count * dtype.itemsize)

    def buffer(self) -> np.ndarray:
        """Where this rank writes its next contribution (``count`` elements). With ``shm``
        it is this rank's shared slot, which alternates between two arrays (``in_flight``:
        ``2 in_flight + 1``, and asking waits until every rank has finished the call that
        used it last): ask again before every call. Otherwise it is the result array itself
        (``in_flight``: the next call's, ``in_flight + 1`` used in turn)."""
        self._check_open()
        if self.in_flight:
            if self._shm is not None:
                return self._shm.writable_slot()
            return self._results[self._started % len(self._results)]
        return self._result if self._shm is None else self._shm.next_slot()

    def start(self) -> AllreduceHandle:
        """Collective, ``in_flight`` only: start reducing the contribution written into
        :meth:`buffer`; ``wait()`` on the handle returns the result, a private array that
        stays valid until the contribution of the call ``in_flight + 1`` later is
        written."""
        self._check_open()
        if not self.in_flight:
            raise ValueError("start() needs an Allreducer built with in_flight >= 1")
        result = self._results[self._started % len(self._results)]
        self._started += 1
        if self._shm is not None:
            return nonblocking.SlotSumHandle(self._shm, self._shm.start(), result, self._mean)
        if self._local:
            return DoneHandle(result)
        return nonblocking.start(result, result, self._state, self.algorithm, self._mean)

    def __call__(self) -> np.ndarray:
        """Collective: reduce the contributions written into :meth:`buffer` and return the
        result: a private array, the same object every call, identical bits on every rank
        (overwritten by the next call, and for non-``shm`` algorithms by writing the next
        contribution)."""
        self._check_open()
        if self.in_flight:
            raise ValueError("an Allreducer with in_flight reduces with start(), not a call")
        result = self._result
        if self._shm is not None:
            self._shm.reduce_slot(result)
        elif self._compressed is not None:
            self._compressed(result)
        else:
            if not self._local:  # (run() divides for a mean itself)
                blocking.run(result, self._state, self.algorithm, self._mean,
                             shared_memory=self.shared_memory)
            return result
        if self._mean:
            scale_inplace(result, self._factor)
        return result

    def close(self) -> None:
        """Collective: release the shared-memory windows (idempotent). The reducer cannot
        be called after that; the result array stays valid."""
        if self._shm is not None:
            self._shm.close()
            self._shm = None
        self._compressed = None
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this Allreducer is closed")
