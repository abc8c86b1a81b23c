"""``auto``: the one place that says what ``algorithm="auto"`` (``--reduce auto``) means.

:func:`choose` picks from the message size (bytes), the number of ranks, and whether the
shared-memory transports may be used (``shared``: ``shared_memory=True`` and every rank
on one node; :func:`resolve` works that out per communicator):

1. one rank: ``mpi`` (nothing to reduce);
2. ``shared``: ``root`` up to :data:`ROOT_UP_TO_SHARED` (3 ranks: 2 KiB), then ``shm``
   (the slot sum) up to :func:`shm_threshold`, then the ``ring`` through shared memory
   (or ``mpi``/``root`` below :func:`ring_threshold`, which only happens beyond the
   measured rank counts);
3. otherwise (several nodes, or ``shared_memory=False``): the ``ring`` over MPI messages
   from :func:`ring_threshold`, ``root`` inside :data:`ROOT_BAND`, else ``mpi``.

The training strategies use it too (through :class:`mpitrain.collectives.Allreducer` and
``allreduce``), so ``--reduce auto`` means the same thing for every message.
:func:`~mpitrain.collectives.start_allreduce` resolves ``auto`` with ``shared=False``
(``shm`` and the shared-memory ring are blocking only).

Measured with the benchmark on one 2-core node (AMD EPYC VM, MPICH 5.0.2 wheel with CMA
single-copy transfers), median latency in the benchmark's steady state.

The slot sum against the others, 2026-11-29: 5 runs of each command, the rank counts and
buffer kinds interleaved run after run (3 runs to set the thresholds, then 2 more with
them in place, to check ``auto``)::

    mpiexec -n P python -m mpitrain bench allreduce --algorithms shm,ring,mpi,root,auto \\
        --max-bytes 16M                                                  # P = 2, 3, 4
    mpiexec -n 2 python -m mpitrain bench allreduce --algorithms shm,ring,mpi,root,auto \\
        --max-bytes 16M --buffer shared

The machine was busy throughout (other engineers' test suites: load average 3-12 on the 2
cores), which mostly hits P=3 and P=4 (oversubscribed). Median over the 5 runs of each
run's median, in us, ``shm / ring / mpi / root`` then the fastest, float32 | float64::

    P=2
         8 B   3.9 / 11.1 / 4.3 / 5.2  shm        3.9 / 11.1 / 4.3 / 5.2  shm
       1 KiB   4.2 / 11.8 / 6.1 / 6.3  shm        4.5 / 11.7 / 6.8 / 6.4  shm
       4 KiB   5.0 / 12.9 / 6.4 / 8.0  shm        4.9 / 12.7 / 7.2 / 8.7  shm
      32 KiB   6.2 / 14.0 / 16.1 / 23.7  shm      7.1 / 14.8 / 19.1 / 27.3  shm
     128 KiB   12.3 / 19.3 / 48.9 / 76.9  shm     14.0 / 18.8 / 38.1 / 66.1  shm
     256 KiB   18.1 / 20.8 / 40.6 / 66.4  shm     20.5 / 23.1 / 63.7 / 114  shm
     512 KiB   52.5 / 38.9 / 76.3 / 939  ring     57.1 / 45.9 / 124 / 217  ring
       1 MiB   169 / 84.9 / 308 / 1659  ring      191 / 74.8 / 219 / 337  ring
      16 MiB   6935 / 5574 / 7893 / 35995  ring   5494 / 1798 / 5790 / 31965  ring
    P=2 shared buffers (the ring reads its neighbours' buffers: no copies)
         8 B   3.8 / 9.7 / 4.2 / 4.9  shm         4.3 / 11.0 / 4.7 / 5.8  shm
      32 KiB   5.8 / 11.8 / 14.1 / 20.0  shm      7.0 / 15.8 / 19.6 / 26.8  shm
     256 KiB   16.7 / 19.2 / 40.2 / 63.7  shm     27.1 / 48.2 / 71.2 / 110  shm
     512 KiB   50.8 / 28.3 / 85.5 / 681  ring     54.6 / 82.9 / 129 / 189  shm
       1 MiB   136 / 45.6 / 168 / 2314  ring      197 / 159 / 269 / 443  ring
    P=3
         8 B   30.1 / 71.5 / 39.6 / 29.1  root    28.9 / 59.3 / 28.6 / 20.8  root
       1 KiB   34.3 / 78.6 / 40.3 / 28.3  root    23.0 / 55.6 / 29.8 / 19.7  root
       4 KiB   34.0 / 80.0 / 41.1 / 45.1  shm     22.9 / 57.2 / 31.0 / 27.5  shm
      32 KiB   32.4 / 65.8 / 90.2 / 85.3  shm     29.9 / 66.1 / 70.7 / 71.9  shm
     128 KiB   64.5 / 86.4 / 185 / 236  shm       56.5 / 74.4 / 115 / 133  shm
     256 KiB   90.8 / 94.2 / 308 / 283  shm       81.8 / 89.6 / 181 / 201  shm
     512 KiB   170 / 160 / 604 / 973  ring        147 / 128 / 300 / 259  ring
       1 MiB   574 / 399 / 1724 / 3445  ring      311 / 226 / 534 / 412  ring
      16 MiB   9859 / 7817 / 13667 / 38800  ring   9391 / 8196 / 14596 / 38066  ring
    P=4
         8 B   70.4 / 155 / 67.5 / 67.8  mpi      94.0 / 236 / 92.4 / 103  mpi
       1 KiB   74.8 / 169 / 99.4 / 77.1  shm      101 / 243 / 136 / 119  shm
       4 KiB   116 / 528 / 186 / 207  shm         169 / 455 / 249 / 275  shm
      32 KiB   122 / 250 / 247 / 266  shm         137 / 473 / 335 / 433  shm
     256 KiB   332 / 373 / 571 / 754  shm         442 / 928 / 1463 / 1874  shm
     512 KiB   457 / 768 / 1420 / 3350  shm       1744 / 2202 / 3140 / 3379  shm
       1 MiB   1001 / 1227 / 2141 / 5149  shm     1370 / 2289 / 4131 / 5266  shm
      16 MiB   16820 / 64845 / 20355 / 72049  shm    22370 / 64094 / 18794 / 76921  mpi

Hence: on 2 ranks ``shm`` up to 256 KiB (the standard workload's ~39 KB float32 step
message: ~6-9 us against ~14-17 for the ring and ~16-31 for mpi), the ring from 512 KiB
(with shared buffers float64 still favours shm at 512 KiB, float32 does not: one threshold
for both); on 3 ranks ``root`` up to 2 KiB (shm behind it by 10-21%, median per run, in
every run), ``shm`` from 4 KiB to 256 KiB, the ring above; on 4 ranks ``shm`` at every
measured size (tiny messages: shm, mpi and root within a few %). Oversubscribed, every
wait for a rank that is not running costs a context switch: the ring waits 2(P-1) times
per piece, the slot sum once, so on 4 ranks it beat the ring from 512 KiB to 8 MiB by
6-64% (median per run) and lost only single sizes of some runs; at 16 MiB float64 mpi was
19% ahead of it (the ring, 3x behind there in 4 of 5 runs, is what auto would otherwise
take). That large-message choice is specific to running more ranks than cores. With these
thresholds the choice is within 10% of the fastest median at every size above except
those two (2 ranks, shared float64 buffers, 512 KiB; 4 ranks, float64, 16 MiB); the
``auto`` column itself (the 2 checking runs) costs a median 1.0% over ``shm`` on 2 ranks
up to 256 KiB (resolving it; at most +4.4% at one size), and elsewhere tracks its choice
within the noise of these runs. Beyond 4 ranks nothing was
measured: the slot sum reads all ``P`` messages on every rank where the ring reads about
two, so its limit is the 2-rank one scaled by ``2/P``.

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

(With ``shm`` in the mix, these ring-over-shared-memory thresholds only matter beyond 4
ranks on one node.) P=3 and P=4 ran oversubscribed (more ranks than cores), where every
message costs a context switch, so their small-message choices are specific to that
setting. Beyond 4 ranks
nothing was measured: ``mpi`` below the ring threshold, which grows like the ring's
2(P-1) steps of latency. The point-to-point table is the only measurement of that
transport, which is what several nodes use; across nodes it is an estimate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpitrain.collectives.context import CommState

KIB = 1024
MAX_REMEMBERED = 4096  # auto's answers kept per communicator (message sizes seen)
MIB = 1024 * KIB
# Largest message bytes for which "shm" (the slot sum) is chosen, per measured comm size,
# when the shared-memory transports are allowed and every rank is on one node.
SHM_UP_TO = {2: 256 * KIB, 3: 256 * KIB, 4: 16 * MIB}
# In that case, messages up to this many bytes go to "root" first (3 ranks only).
ROOT_UP_TO_SHARED = {3: 2 * KIB}

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
    node (each rank reads all ``size`` messages: beyond the measured rank counts, the
    2-rank limit (the one measurement with a core per rank) scaled by ``2 / size``)."""
    if size in SHM_UP_TO:
        return SHM_UP_TO[size]
    return SHM_UP_TO[2] * 2 // size


def choose(nbytes: int, size: int, itemsize: int = 8, *, shared: bool = False) -> str:
    """The algorithm ``auto`` uses for ``nbytes`` bytes of ``itemsize``-byte elements on
    ``size`` ranks. ``shared``: the shared-memory transports are allowed and every rank is
    on one node, so ``shm`` may be chosen and the ring goes through shared memory;
    otherwise the ring sends MPI messages."""
    if size <= 1:
        return "mpi"
    if shared:
        if nbytes <= ROOT_UP_TO_SHARED.get(size, 0):
            return "root"
        if nbytes <= shm_threshold(size):
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
    ValueError on every rank, after that test, so no rank is left inside a collective.
    ``auto``'s answers are remembered per communicator (:func:`choose` costs 0.3-0.7 us,
    up to 15% of a 4 us slot sum)."""
    if algorithm == "shm":
        if not shared_memory:
            raise ValueError("algorithm 'shm' reduces through shared memory, which "
                             "shared_memory=False turns off; choose another algorithm")
        if not state.one_node():
            raise ValueError("algorithm 'shm' needs every rank of comm on one node (they "
                             "span several); choose another algorithm")
        return algorithm
    if algorithm != "auto":
        return algorithm
    key = (nbytes, itemsize, shared_memory)
    chosen = state.choices.get(key)
    if chosen is None:
        size = state.comm.Get_size()
        shared = shared_memory and size > 1 and state.one_node()
        if len(state.choices) >= MAX_REMEMBERED:
            state.choices.clear()
        chosen = state.choices[key] = choose(nbytes, size, itemsize, shared=shared)
    return chosen
