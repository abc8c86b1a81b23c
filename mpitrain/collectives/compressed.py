"""``--compress fp16|bf16``: the step message crosses the network as 16-bit words.

Reached through :class:`mpitrain.collectives.Allreducer` (``compress="fp16"|"bf16"``,
``exact_tail``, ``batch_size``).

Two phases, like a reduce-scatter + allgather, built on MPI's Alltoallv / Allgatherv of
``uint16`` words (data movement only; every sum is done here, in float32):

1. each rank encodes its gradient (times ``2**-k``, see below) to 16 bits and sends chunk
   ``p`` of it to rank ``p``; rank ``p`` decodes the ``P`` pieces of its chunk and adds them
   in rank order in float32;
2. rank ``p`` encodes its summed chunk again and every rank gathers every chunk and decodes
   it, so all ranks end with the same bits.

The tail (loss sum, correct count, row count, stop flag) travels as the raw bits of its
float32 values (two words each) inside the last chunk and is summed in float32, exactly as
the plain path sums it: counts and the stop flag stay exact.

Scaling: gradients are SUMS over the rows of the step, so they grow with the batch; they
are multiplied by ``2**-k`` (``2**k`` the largest power of two <= the global batch size)
before encoding and by ``2**k`` after decoding. Powers of two make the scaling exact; it
keeps fp16's range (6e-5 .. 65504) centred on mean-gradient magnitudes.

Error (documented bound, checked by the tests): every element is rounded to 16 bits twice
(each rank's contribution, then the sum), so per element
``|got - exact| <= u * sum_r |g_r| + u * |sum_r g_r|`` (+ float32 rounding), with
``u = 2**-11`` for fp16 and ``2**-8`` for bf16 (half an ulp of an 11- / 8-bit significand);
fp16 values below ``2**-14`` (after scaling) lose relative precision (subnormals).

Bytes per rank and step: ``2 * 2 * n * (P-1)/P`` (sent, both phases) against
``2 * 4 * n * (P-1)/P`` for a float32 ring allreduce: half, at the price of the encoding
and two collectives per step instead of one.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from mpitrain.collectives.ring import chunk_offsets
from mpitrain.kernels import compress as codec16

COMPRESSIONS = ("none", *codec16.CODECS)  # "none": the message keeps its own precision


class CompressedAllreduce:
    """Sum a float32 message ``[gradient (n) | tail (t)]`` over ``comm`` with 16-bit words.

    Preallocates every buffer; :meth:`__call__` allocates nothing. Collective: every rank
    calls it in the same order with a message of the same length.
    """

    def __init__(self, comm: MPI.Comm, *, n: int, tail: int, codec: str,
                 batch_size: int) -> None:
        self.comm = comm
        self.size = size = comm.Get_size()
        self.rank = rank = comm.Get_rank()
        self.n = n
        self.tail = tail
        self.codec = codec16.CODECS[codec]
        k = max(0, int(batch_size).bit_length() - 1)
        self.scale = 2.0 ** -k
        self.unscale = 2.0 ** k
        self.offsets = np.array(chunk_offsets(n, size), dtype=np.int64)  # the ring's chunks
        words = np.diff(self.offsets)
        words[-1] += 2 * tail  # the tail's raw float32 bits ride with the last chunk
        self.words = words.astype(np.int64)
        self.displs = self.offsets[:-1].astype(np.int64)
        total = n + 2 * tail
        self.wire = np.zeros(total, dtype=np.uint16)  # this rank's encoded message
        self.gathered = np.zeros(total, dtype=np.uint16)  # phase 2 result
        mine = int(self.words[rank])
        self.pieces = np.zeros(size * mine, dtype=np.uint16)  # P pieces of my chunk
        self.mine = mine
        lo, hi = int(self.offsets[rank]), int(self.offsets[rank + 1])
        self.lo, self.hi = lo, hi
        self.acc = np.zeros(hi - lo, dtype=np.float32)
        self.acc_tail = np.zeros(tail if rank == size - 1 else 0, dtype=np.float32)
        t = MPI.UINT16_T
        recv_counts = np.full(size, mine, dtype=np.int64)
        recv_displs = np.arange(size, dtype=np.int64) * mine
        self._a2a_send = [self.wire, (self.words, self.displs), t]
        self._a2a_recv = [self.pieces, (recv_counts, recv_displs), t]
        self._ag_recv = [self.gathered, (self.words, self.displs), t]

    def __call__(self, message: np.ndarray) -> None:
        """Replace ``message`` (float32, ``n + tail`` elements) by its sum over the ranks."""
        n, lo, hi, mine = self.n, self.lo, self.hi, self.mine
        wire = self.wire
        codec16.encode(message[:n], wire, self.codec, self.scale)
        wire[n:] = message[n:].view(np.uint16)
        if self.size > 1:
            self.comm.Alltoallv(self._a2a_send, self._a2a_recv)
            pieces = self.pieces
        else:
            pieces = wire
        acc, acc_tail = self.acc, self.acc_tail
        acc[:] = 0
        acc_tail[:] = 0
        span = hi - lo
        for r in range(self.size):  # rank order: the same sums on every rank
            piece = pieces[r * mine:(r + 1) * mine]
            codec16.decode_add(piece[:span], acc, self.codec)
            if acc_tail.size:
                acc_tail += piece[span:].view(np.float32)
        out = self.gathered
        codec16.encode(acc, out[lo:hi], self.codec, 1.0)
        if acc_tail.size:
            out[hi:] = acc_tail.view(np.uint16)
        if self.size > 1:
            self.comm.Allgatherv(MPI.IN_PLACE, self._ag_recv)
        codec16.decode(out[:n], message[:n], self.codec, self.unscale)
        message[n:] = out[n:].view(message.dtype)
