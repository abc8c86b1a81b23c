"""``auto``: choose an algorithm from the message size (bytes) and the number of ranks.

Measured with the benchmark on one 2-core node (AMD EPYC VM, MPICH 5.0.2 wheel with CMA
single-copy transfers), median latency in the benchmark's steady state, 3 runs for P=2::

    mpiexec -n 2 python -m mpitrain.bench.allreduce
    mpiexec -n P python -m mpitrain.bench.allreduce --algorithms ring,mpi,root \
        --dtypes float32 --max-bytes 4M --iterations 60 --warmup 5        # P = 3, 4

    P=2  4-8 B           mpi 3.9-5.5 us; root 15-20% slower; ring 8.3-12.5 us (2 steps)
         16 B..1 KiB     root 4.7-6.0 us, 2-9% faster than mpi (4.8-6.5 us)
         2 KiB..128 KiB  mpi; ring 70% slower at 2 KiB, within +-10% from 64 KiB
                         (float64: ring 10-14% slower at 128 KiB; float32: ring within
                         3%, or 20% faster in the runs where MPI's float sum is slow)
         256 KiB         ring within -8%..+31% of mpi (ring ahead in 3 of 6 dtype-runs)
         >= 512 KiB      ring: same as mpi (float64 0.5-16 MiB) to 1.2-1.4x (float32) and
                         3.2-4.1x from 32 MiB, where MPI's Allreduce drops to ~2.6 GB/s
    P=3  4-8 B mpi (15 us); 16 B..2 KiB root (18-20 us vs mpi 26-35); 4-8 KiB mpi;
         from 16-128 KiB ring ties or wins (two runs disagree), 1.5-2.6x mpi from 256 KiB
    P=4  4-8 B mpi (30 us); 16 B..2 KiB root (34-39 us vs mpi 38-45); 4-128 KiB mpi;
         256 KiB ring +13%, 1.2-1.4x mpi above

P=3 and P=4 ran oversubscribed (more ranks than cores), where every message costs a context
switch, so their small-message choices are specific to that setting. Beyond 4 ranks
nothing was measured: ``mpi`` below the ring threshold, which grows like the ring's
2(P-1) steps of latency.
"""

from __future__ import annotations

KIB = 1024

# (lowest, highest) message bytes for which "root" beat "mpi", per measured comm size.
ROOT_BAND = {2: (16, 1 * KIB), 3: (16, 2 * KIB), 4: (16, 2 * KIB)}
# Message bytes from which "ring" is chosen, per measured comm size.
RING_FROM = {2: 256 * KIB, 3: 128 * KIB, 4: 256 * KIB}
# float32 on 2 ranks: MPI's float sum is in some runs 1.3-2x slower per byte than its
# double sum (64 KiB..16 MiB), and the ring is never more than 3% behind from 128 KiB.
RING_FROM_FLOAT32 = {2: 128 * KIB}


def ring_threshold(size: int, itemsize: int = 8) -> int:
    """Bytes from which ``auto`` uses the ring on ``size`` ranks (extrapolated beyond 4)."""
    if itemsize == 4 and size in RING_FROM_FLOAT32:
        return RING_FROM_FLOAT32[size]
    if size in RING_FROM:
        return RING_FROM[size]
    largest = max(RING_FROM)
    return RING_FROM[largest] * (size - 1) // (largest - 1)


def choose(nbytes: int, size: int, itemsize: int = 8) -> str:
    """The algorithm ``auto`` uses for ``nbytes`` bytes of ``itemsize``-byte elements on
    ``size`` ranks."""
    if size <= 1:
        return "mpi"
    if nbytes >= ring_threshold(size, itemsize):
        return "ring"
    low, high = ROOT_BAND.get(size, (1, 0))
    if low <= nbytes <= high:
        return "root"
    return "mpi"
