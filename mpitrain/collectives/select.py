"""``auto``: choose an algorithm from the message size (bytes), the number of ranks and the
ring's transport (shared memory when every rank is on one node, MPI messages otherwise).

Measured with the benchmark on one 2-core node (AMD EPYC VM, MPICH 5.0.2 wheel with CMA
single-copy transfers), median latency in the benchmark's steady state::

    mpiexec -n 2 python -m mpitrain bench allreduce --max-bytes 1M --algorithms ring,mpi,root
    mpiexec -n P python -m mpitrain bench allreduce --max-bytes 4M \
        --algorithms ring,mpi,root --iterations 60 --warmup 5                   # P = 3, 4

Ring over shared memory (:mod:`.shared_ring`, what one node gets), 2026-11-22:

    P=2  4 B..8 KiB   ring 10.4-19 us (2 steps of polling, Python-driven), mpi 4-8 us;
                      root 2-9% faster than mpi from 16 B to 1 KiB
         16 KiB       ring 11.2 us vs mpi 12.0-12.7, root 17-18
         >= 32 KiB    ring ahead: 1.2x mpi at 32 KiB, 1.5x at 64 KiB, 2x at 512 KiB
    P=3  4 B..8 KiB   root 24-60 us, mpi 30-61, ring 58-71;
         from 16 KiB  ring (63-73 us vs 74-90), 2-3x mpi from 256 KiB
    P=4  4 B..2 KiB   root 40-45 us, mpi 42-54, ring 83-95; 4-16 KiB mpi;
         from 32 KiB  ring (101-107 us vs 104-117), 1.3-1.8x mpi from 128 KiB

Ring over MPI messages (:mod:`.ring`, measured on the same node with shared memory
disabled, before it existed), 3 runs for P=2:

    P=2  2 KiB..128 KiB  mpi; ring 70% slower at 2 KiB, within +-10% from 64 KiB
         256 KiB         ring within -8%..+31% of mpi; >= 512 KiB ring (float32 from
                         128 KiB: MPI's float sum is in some runs 1.3-2x slower)
    P=3  from 16-128 KiB ring ties or wins, 1.5-2.6x mpi from 256 KiB
    P=4  4-128 KiB mpi; 256 KiB ring +13%, 1.2-1.4x mpi above

P=3 and P=4 ran oversubscribed (more ranks than cores), where every message costs a context
switch, so their small-message choices are specific to that setting. Beyond 4 ranks
nothing was measured: ``mpi`` below the ring threshold, which grows like the ring's
2(P-1) steps of latency. The point-to-point table is the only measurement of that
transport, which is what several nodes use; across nodes it is an estimate.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpitrain.collectives.context import CommState

KIB = 1024
# Largest message bytes for which "shm" (the slot sum) is chosen, per measured comm size,
# when the shared-memory transports are allowed and every rank is on one node.
SHM_UP_TO = {2: 64 * KIB, 3: 32 * KIB, 4: 32 * KIB}

# (lowest, highest) message bytes for which "root" beat "mpi", per measured comm size.
ROOT_BAND = {2: (16, 1 * KIB), 3: (16, 2 * KIB), 4: (16, 2 * KIB)}
# Message bytes from which "ring" is chosen, per measured comm size, ring over shared memory.
RING_FROM_SHARED = {2: 16 * KIB, 3: 16 * KIB, 4: 32 * KIB}
# The same for the ring over MPI messages.
RING_FROM = {2: 256 * KIB, 3: 128 * KIB, 4: 256 * KIB}
# float32 on 2 ranks: MPI's float sum is in some runs 1.3-2x slower per byte than its
# double sum (64 KiB..16 MiB), and the ring is never more than 3% behind from 128 KiB.
RING_FROM_FLOAT32 = {2: 128 * KIB}


def ring_threshold(size: int, itemsize: int = 8, *, shared: bool = False) -> int:
    """Bytes from which ``auto`` uses the ring on ``size`` ranks, through shared memory
    (``shared``) or MPI messages (extrapolated beyond 4 ranks)."""
    table = RING_FROM_SHARED if shared else RING_FROM
    if not shared and itemsize == 4 and size in RING_FROM_FLOAT32:
        return RING_FROM_FLOAT32[size]
    if size in table:
        return table[size]
    largest = max(table)
    return table[largest] * (size - 1) // (largest - 1)


def shm_threshold(size: int) -> int:
    """Largest message bytes for which ``auto`` uses the slot sum on ``size`` ranks of one
    node (each rank reads all ``size`` messages: beyond the measured sizes the limit
    shrinks like ``1 / size``)."""
    if size in SHM_UP_TO:
        return SHM_UP_TO[size]
    largest = max(SHM_UP_TO)
    return SHM_UP_TO[largest] * largest // size


def choose(nbytes: int, size: int, itemsize: int = 8, *, shared: bool = False) -> str:
    """The algorithm ``auto`` uses for ``nbytes`` bytes of ``itemsize``-byte elements on
    ``size`` ranks. ``shared``: the shared-memory transports are allowed and every rank is
    on one node, so ``shm`` may be chosen and the ring goes through shared memory;
    otherwise the ring sends MPI messages."""
    if size <= 1:
        return "mpi"
    if shared and nbytes <= shm_threshold(size):
        return "shm"
    if nbytes >= ring_threshold(size, itemsize, shared=shared):
        return "ring"
    low, high = ROOT_BAND.get(size, (1, 0))
    if low <= nbytes <= high:
        return "root"
    return "mpi"


def resolve(algorithm: str, state: CommState, nbytes: int, itemsize: int, *,
            shared_memory: bool) -> str:
    """The algorithm to run for a (checked) ``algorithm`` argument: ``auto`` through
    :func:`choose`, anything else as given. Collective on the first use of a communicator
    (the one-node test); ``shm`` without ``shared_memory`` or across nodes raises the same
    ValueError on every rank, after that test, so no rank is left inside a collective."""
    if algorithm == "shm":
        if not shared_memory:
            raise ValueError("algorithm 'shm' reduces through shared memory, which "
                             "shared_memory=False turns off; choose another algorithm")
        if not state.one_node():
            raise ValueError("algorithm 'shm' needs every rank of comm on one node (they "
                             "span several); choose another algorithm")
        return algorithm
    if algorithm == "auto":
        size = state.comm.Get_size()
        shared = shared_memory and size > 1 and state.one_node()
        return _remembered(nbytes, size, itemsize, shared)
    return algorithm


@functools.lru_cache(maxsize=4096)
def _remembered(nbytes: int, size: int, itemsize: int, shared: bool) -> str:
    """:func:`choose`, remembered: it costs 0.3-0.7 us, up to 15% of a 4 us slot sum."""
    return choose(nbytes, size, itemsize, shared=shared)
