"""Sparse row reduction: when a step's gradient touches few rows of a huge weight matrix,
send only those rows, and the dense allreduce when that is cheaper; the same bits either way.

A sparse model's step (CSR rows, :mod:`mpitrain.models.sparse`) touches only the rows of
its first weight matrix (one row of ``width`` elements per input feature) of the features
in the batch; on a 2^18-feature logistic model with 64 rows of ~40 non-zeros a step writes
~2,500 of 262,144 rows, yet the dense allreduce moves all of them every step.

:class:`SparseRowAllreducer` wraps the step's persistent dense :class:`Allreducer`. A
rank's *payload* is its touched rows' indices (int64; int32 in the bounded path's blocks),
the rows, and the dense rest of the message (the other layers, biases and the
loss/count/stop tail). Each step (collective,
same order on every rank), one of two paths, fixed at construction:

- **bounded** (when the caller gives ``max_touched``, a bound on the rows a rank touches
  in one step, e.g. rows per step times the most non-zeros of a row, agreed as the
  largest over the ranks, and ``P`` payloads of that bound are at most
  :data:`BOUNDED_UP_TO` of the dense message): one ``Allgather`` of fixed-size blocks
  (the count, then the payload), or, when every rank is on one node and shared memory
  is allowed, each rank writes its block into its slot of a shared-memory window
  (:class:`~.slot_sum.SharedMemoryAllreduce`'s slots and flag barrier) and reads the
  others' slots in place. One synchronisation a step;
- **measured per step**: ``Allgather`` of each rank's touched-row count, then the same
  decision on every rank from those counts (:func:`sparse_is_cheaper`: all payloads
  together against the dense message); sparse: one ``Allgatherv`` of the payloads;
  dense: the wrapped ``Allreducer``.

Sparse either way, every rank then sums the payloads into the full message, each element
in the order the dense allreduce adds it (:mod:`mpitrain.kernels.sparse_reduce`); the
rows the previous sparse step wrote are zeroed first, so a step costs time in the touched
rows, not the matrix. On two ranks a caller may let the bounded path add the other rank's
rows into its own message instead (``in_place``: a + b == b + a, so the same bits), which
the sync strategy does: then the reduced step is one message, as on one rank. That path
is three passes over the touched rows and nothing else: packing the block (which also
makes the packed elements ``own + 0``, :func:`~mpitrain.kernels.sparse_reduce.pack_block`),
the flag barrier, and adding the other rank's block while listing its rows after the
caller's own (written after ``touched`` in the array it starts, when there is room: the
rows step's array, so nobody copies row lists).

Why an allgather of each rank's rows rather than agreeing on the union and allreducing a
packed buffer: for the sums to be the dense allreduce's bits, each element must be added
in the dense algorithm's order, and that order depends on the element's position in the
dense message (the ``ring`` starts chunk ``c`` at rank ``c``), which a packed buffer
loses. With every rank's rows in hand, a rank adds them in exactly that order; an absent
row is zero in the dense message, and adding 0 changes no float sum. The union approach
also costs one more collective (the union, then the reduction) and on the few ranks of
one node its lower volume does not pay for that latency.

Exactness holds where the dense algorithm's order is known: ``shm`` (rank order), ``ring``
(chunk by chunk around the ring), and any uncompressed algorithm on 2 ranks (a + b == b + a
in IEEE arithmetic). With ``mpi``, ``root``, ``hierarchical`` on 3 or more ranks, or
``--compress``, the sparse path is off (every step dense), as it is on one rank. (A zero's
sign may differ: -0.0 where the dense sum gives +0.0; the values are equal.)

**The thresholds** (:data:`BOUNDED_UP_TO`, :data:`SPARSE_UP_TO`) come from what a whole
training step costs on each path, not the collective alone: the dense path also zeroes the
whole gradient block for the next step (its result may have written it) and hands the
optimizer a 1 MiB message, where the in-place bounded path only touches the rows. Measured
2026-11-30 on the 2-core machine (shared with 2 other developers' work, load average
3.5-5), 2 ranks, float32 logistic regression on 2^18 features (1 MiB message), momentum,
30,000 rows of 40 non-zeros (the widest 80), 600 steps after 200, fastest / median us a
step (``fraction``: the bounded path's ``P`` blocks of the bound, rows a step times 80,
against the dense message, as :data:`BOUNDED_UP_TO` compares them), two interleaved
rounds::

    mpiexec -n 2 python benchmarks/sparse/step_parts.py --data wide.svm \
        --batch-size B --reduce bounded|dense|per-step

    rows/rank  fraction  bounded (shm)       dense (ring)        per-step (Allgatherv)
       32      0.039     62-68 / 71-78       134-135 / 144-695   158-259 / 270-2698
      128      0.156     112-114 / 118-218   163-835 / 884-938   164-225 / 265-409
      256      0.313     161-162 / 185-196   194-199 / 212-223   244-251 / 573-838
      384      0.469     224-241 / 247-264   232-233 / 237-321   339-347 / 346-3315
      512      0.625     282-309 / 320-369   263-274 / 272-295   394-406 / 414-504

The bounded path (one exchange through the slots) wins by half at small batches and by
~18% at 0.31, ties at 0.47 and loses at 0.63 (its cost grows with the rows sent; the dense
ring's does not): hence 0.35. The per-step path (two MPI collectives) lost to the dense
path at every size here, even at ~3% of the bytes (its fraction at 32 rows a rank,
counting the distinct rows): it stays at 0.01, where the collective alone was measured to
win (65 against 74 us at 0.006, loaded). The 3-rank bounded path was measured earlier on
the collective only (load 8-10, ``benchmarks/sparse_reduce.py``): it beat the ring up to
~0.3. Not yet measured on an idle machine or across nodes.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.context import state_of, warm
from mpitrain.collectives.persistent import Allreducer
from mpitrain.collectives.slot_sum import SharedMemoryAllreduce
from mpitrain.kernels.sparse_reduce import (
    ORDER_RANKS,
    ORDER_RING,
    add_other_block,
    ordered_sum,
    pack_block,
    pack_payload,
    sum_blocks,
    zero_rows,
)

#: The per-step path goes sparse when all ranks' payload bytes together are at most this
#: fraction of the dense message's bytes (measured: module docstring).
SPARSE_UP_TO = 0.01
#: The bounded path is used when ``P`` payloads of the bound are at most this fraction.
BOUNDED_UP_TO = 0.35


def summation_order(algorithm: str, size: int) -> int | None:
    """How the dense ``algorithm`` adds the ranks' contributions on ``size`` ranks
    (:data:`ORDER_RANKS`, :data:`ORDER_RING`), or None where it is not known (the sparse
    path cannot then give its bits)."""
    if algorithm == "compressed" or size < 2:
        return None
    if size == 2 or algorithm == "shm":
        return ORDER_RANKS
    if algorithm == "ring":
        return ORDER_RING
    return None


def payload_bytes(counts: np.ndarray, *, width: int, rest: int, itemsize: int,
                  index_bytes: int = 8) -> np.ndarray:
    """Bytes of each rank's payload for ``counts`` touched rows: the indices (int64, or
    ``index_bytes`` each), then the rows and the ``rest`` dense elements, each part padded
    to 8 bytes."""
    values = (counts * width + rest) * itemsize
    return -(-(counts * index_bytes) // 8) * 8 + -(-values // 8) * 8


def sparse_is_cheaper(counts: np.ndarray, *, width: int, rest: int, itemsize: int,
                      dense_bytes: int, up_to: float = SPARSE_UP_TO) -> bool:
    """Whether the sparse reduction of ``counts`` touched rows per rank is cheaper than the
    dense one (see :data:`SPARSE_UP_TO`)."""
    total = int(payload_bytes(counts, width=width, rest=rest, itemsize=itemsize).sum())
    return total <= up_to * dense_bytes and total < 2**31  # (MPI counts are int32)


class SparseRowAllreducer:
    """The dense ``Allreducer`` of a step message whose first ``rows * width`` elements are
    a row block a step touches sparsely, reducing only the touched rows when that is
    cheaper (module docstring).

    Collective to build and to call (every rank, same order). Use::

        reducer = SparseRowAllreducer(dense, rows=d, width=k, comm=comm)
        message = dense.buffer()        # written by the gradient kernel
        result = reducer(message, touched)   # distinct rows this rank touched

    ``result`` is either the dense reducer's result or this object's own array (both full
    messages, the same bits on every rank and either way). :attr:`sparse_steps` and
    :attr:`dense_steps` count the choices. With ``in_place`` (a caller that can have its
    message overwritten, and then non-zero in all :attr:`rows_written`) the bounded path on
    two ranks adds the other rank's rows into ``message`` and returns it: no second
    message to zero, sum into and sweep.
    """

    def __init__(self, dense: Allreducer, *, rows: int, width: int, comm: MPI.Comm,
                 up_to: float | None = None, max_touched: int | None = None,
                 in_place: bool = False, distinct_rows: bool = True) -> None:
        if rows < 0 or width < 0 or rows * width > dense.count:
            raise ValueError(f"a row block of {rows} x {width} does not fit a message of "
                             f"{dense.count} elements")
        self.dense = dense
        self.rows, self.width = rows, width
        self.rest = dense.count - rows * width
        # (``up_to`` given: the threshold of both paths, e.g. ``inf`` for always sparse)
        self.up_to = SPARSE_UP_TO if up_to is None else up_to
        bounded_up_to = BOUNDED_UP_TO if up_to is None else up_to
        self._comm = state_of(comm).comm
        size = self._comm.Get_size()
        self.order = summation_order(dense.algorithm, size) if rows * width else None
        self.enabled = self.order is not None
        self.sparse_steps = self.dense_steps = 0
        self._itemsize = dense.dtype.itemsize
        self._dense_bytes = dense.count * self._itemsize
        self._mine = np.zeros(1, dtype=np.int64)
        self._counts = np.zeros(size, dtype=np.int64)
        self._out = np.zeros(dense.count if self.enabled else 0, dtype=dense.dtype)
        self._send = np.zeros(0, dtype=np.uint8)
        self._recv = np.zeros(0, dtype=np.uint8)
        self._dirty = np.zeros(0, dtype=np.int64)  # rows of _out the last sparse call wrote
        self._n_dirty = 0
        self._written = self._dirty  # where rows_written are: _dirty, or the caller's room
        # (in place: the array the caller's touched rows start, or _dirty; and their base)
        self._room, self._room_of = self._dirty, object()
        self._mark = np.zeros(rows if self.enabled else 0, dtype=np.uint8)
        self._sparse_last = False  # whether the last call went sparse
        self._transport = "none"
        self._slots: SharedMemoryAllreduce | None = None
        self._views: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # (the receive buffer's)
        #: touched rows a rank may send per step in the one-collective path (0: not used)
        self.bound = 0
        if not self.enabled:
            return
        warm(self._comm, "sparse")
        if max_touched is not None:  # agree on the largest bound (collective)
            agreed = np.array([min(max(0, max_touched), rows)], dtype=np.int64)
            self._comm.Allreduce(MPI.IN_PLACE, agreed, op=MPI.MAX)
            # (a block's indices: int32 where every row number fits)
            self._index = np.dtype(np.int32 if rows <= 2**31 else np.int64)
            block = int(payload_bytes(agreed, width=width, rest=self.rest,
                                      itemsize=self._itemsize,
                                      index_bytes=self._index.itemsize)[0]) + 8
            if size * block <= bounded_up_to * self._dense_bytes and size * block < 2**31:
                self.bound = int(agreed[0])
                self._block = block
                self._send = np.zeros(block, dtype=np.uint8)
                self._recv = np.zeros(size * block, dtype=np.uint8)
                state = state_of(comm)
                if dense.shared_memory and state.one_node():  # the slots, not MPI
                    self._slots = SharedMemoryAllreduce(self._comm, n=block // 8,
                                                        dtype=np.dtype(np.float64))
                    contiguous = np.array([self._slots.contiguous], dtype=np.int32)
                    self._comm.Allreduce(MPI.IN_PLACE, contiguous, op=MPI.MIN)
                    if not contiguous[0]:  # (agreed: the same on every rank)
                        self.close()
                ranks = np.arange(size, dtype=np.int64)
                self._rank = self._comm.Get_rank()
                if self._slots is None:
                    self._starts = (ranks * block,)
                else:  # rank r's slot b starts at byte r * 2 * capacity + b * capacity
                    cap = self._slots.capacity
                    self._starts = (ranks * 2 * cap, ranks * 2 * cap + cap)
                    self._mine_at = [int(starts[self._rank]) for starts in self._starts]
                    self._span_views = self._typed(self._slots.span)
                self._dirty = np.zeros(size * self.bound, dtype=np.int64)
                self._scratch = tuple(np.zeros(size, dtype=np.int64) for _ in range(3))
        self._transport = ("allgatherv" if not self.bound else
                           "shm" if self._slots is not None else "allgather")
        #: the bounded path on two ranks sums into the caller's message (``in_place``)
        self.in_place = in_place and bool(self.bound) and size == 2
        self._distinct = distinct_rows or not self.in_place

    def __call__(self, message: np.ndarray, touched: np.ndarray) -> np.ndarray:
        """Collective: the sum over the ranks of ``message`` (this rank's contribution,
        where the dense reducer's :meth:`~Allreducer.buffer` was), whose row block is zero
        outside the rows ``touched`` (distinct int64, in any order). Summing in place, when
        ``touched`` is the start of a longer int64 array, the other rank's rows are written
        after it there (then :attr:`rows_written` is that array's start; nothing past them
        is written)."""
        if not self.enabled:
            return self.dense()
        self._sparse_last = True
        if self.bound:
            return self._bounded(message, touched)
        self._mine[0] = touched.size
        self._comm.Allgather(self._mine, self._counts)
        counts = self._counts
        if not sparse_is_cheaper(counts, width=self.width, rest=self.rest,
                                 itemsize=self._itemsize, dense_bytes=self._dense_bytes,
                                 up_to=self.up_to):
            self.dense_steps += 1
            self._sparse_last = False
            return self.dense()
        self.sparse_steps += 1
        sizes = payload_bytes(counts, width=self.width, rest=self.rest,
                              itemsize=self._itemsize)
        displs = np.zeros_like(sizes)
        np.cumsum(sizes[:-1], out=displs[1:])
        total = int(displs[-1] + sizes[-1])
        rank = self._comm.Get_rank()
        m, mine = int(touched.size), int(sizes[rank])
        send = self._grown("_send", mine)
        send[: m * 8].view(np.int64)[:] = touched
        pack_payload(message, touched, m, self.width, self.rows * self.width,
                     send[m * 8 : mine].view(self.dense.dtype))
        recv = self._grown("_recv", total)
        self._comm.Allgatherv([send[:mine], MPI.BYTE],
                              [recv, (sizes.astype(np.int32), displs.astype(np.int32)),
                               MPI.BYTE])
        out = self._out
        zero_rows(out, self._dirty, self._n_dirty, self.width)
        n = int(counts.sum())
        if self._dirty.size < n:
            self._dirty = np.zeros(max(n, 2 * self._dirty.size), dtype=np.int64)
        self._n_dirty = ordered_sum(out, recv[:total].view(np.int64),
                                    recv[:total].view(self.dense.dtype), counts, displs // 8,
                                    (displs + counts * 8) // self._itemsize, self.width,
                                    self.rows * self.width, self.order, self._mark,
                                    self._dirty)
        self._written = self._dirty
        return out

    def _bounded(self, message: np.ndarray, touched: np.ndarray) -> np.ndarray:
        """The one-exchange path: every rank writes a block of the bound's size (its count,
        then its payload) into its shared-memory slot, or one ``Allgather`` carries them."""
        m = touched.size
        if m > self.bound:
            raise ValueError(f"{m} touched rows exceed the agreed bound {self.bound}")
        self.sparse_steps += 1
        slots = self._slots
        dense_start = self.rows * self.width
        if slots is None:
            recv, starts = self._recv, self._starts[0]
            send_idx, send_val = self._typed(self._send)
            pack_block(message, touched, m, self.width, dense_start, send_idx, send_val, 0,
                       self.in_place)
            self._comm.Allgather([self._send, MPI.BYTE], [recv, MPI.BYTE])
            as_idx, as_val = self._typed(recv)
        else:  # written into this rank's slot and every slot read in place after the
            as_idx, as_val = self._span_views  # slots' barrier
            pack_block(message, touched, m, self.width, dense_start, as_idx, as_val,
                       self._mine_at[slots.calls % slots.slots], self.in_place)
            starts = self._starts[slots.exchange()[1]]  # type: ignore[index]
        if self.in_place:  # (two ranks: the other's block into this rank's message)
            base = touched.base
            if base is not self._room_of:  # (the caller's array: the same step to step)
                self._room_of = base
                self._room = (base if isinstance(base, np.ndarray) and base.ndim == 1
                              and base.dtype == np.int64 and base.flags.c_contiguous
                              and base.flags.writeable else self._dirty)
            n, in_room = add_other_block(message, touched, m, as_idx, as_val,
                                         int(starts[1 - self._rank]), self.width,
                                         dense_start, self._mark, self._room, self._dirty,
                                         self._distinct)
            self._n_dirty = n
            self._written = self._room if in_room else self._dirty
            return message
        counts, idx_off, val_off = self._scratch
        self._n_dirty = sum_blocks(self._out, self._dirty, self._n_dirty, as_idx, as_val,
                                   starts, self.width, dense_start, self.order, counts,
                                   idx_off, val_off, self._mark)
        self._written = self._dirty
        return self._out

    def _typed(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounded-path byte buffer ``raw`` viewed as the blocks' index dtype and as the
        message dtype (cached)."""
        views = self._views.get(id(raw))
        if views is None:
            views = self._views[id(raw)] = (raw.view(self._index), raw.view(self.dense.dtype))
        return views

    @property
    def rows_written(self) -> np.ndarray | None:
        """The rows (any order) of the row block in which the last call's result may be
        non-zero, the union of every rank's touched rows (distinct, unless built with
        ``distinct_rows=False`` and summing in place: then with repeats, for a caller that
        only zeroes them); None when that call was dense (non-zero anywhere)."""
        return self._written[: self._n_dirty] if self._sparse_last else None

    @property
    def transport(self) -> str:
        """How the sparse payloads travel: ``shm`` (the bounded path's shared slots),
        ``allgather`` (the bounded path over MPI), ``allgatherv`` (the per-step path) or
        ``none`` (never sparse); as built (also after :meth:`close`)."""
        return self._transport

    def close(self) -> None:
        """Collective: release the shared-memory slots of the bounded path (idempotent;
        the Allgather then carries it)."""
        if self._slots is not None:
            self._slots.close()
            self._slots = None

    def _grown(self, name: str, nbytes: int) -> np.ndarray:
        """The byte buffer ``name``, replaced by a larger one when shorter than ``nbytes``."""
        buf = getattr(self, name)
        if buf.size < nbytes:
            buf = np.zeros(max(nbytes, 2 * buf.size), dtype=np.uint8)
            setattr(self, name, buf)
        return buf
