"""``auto``: the one place that says what ``algorithm="auto"`` (``--reduce auto``) means.

Measured here first (:func:`resolve_tuned`, for :class:`~mpitrain.collectives.Allreducer`,
the reduction training uses): with ``tune`` other than ``off`` (``--tune``, default
``auto`` for training, ``off`` for the Python class), ``auto`` looks up the message's
size bucket for this communicator's shape, MPI library and machine in the tuning cache
(:mod:`.tune_cache`, written by ``python -m mpitrain tune``):

- ``cache``: a hit runs the measured choice, a miss the table below;
- ``auto``: the same, but a miss is measured now (:mod:`.tuning`: the candidates of
  :func:`.tuning.candidates` timed at the message's own size, a fraction of a second)
  and cached;
- ``force``: measured now even on a hit, and cached;
- ``off``: the table only.

The measured choice is the fastest median (:func:`pick_measured`), except that the
table's choice is kept when it is within :data:`TUNED_MARGIN` of it (noise does not flip
a choice the table already gets right). Timings are the slowest rank's, so every rank
decides alike, and rank 0's decision is broadcast anyway. Every algorithm gives the same
sum up to rounding order (bitwise on 2 ranks), so tuning never changes results beyond the
documented tolerance. ``allreduce()``, ``start_allreduce``, ``reduce_scatter``, the
started reductions of a persistent reducer (:func:`resolve_started`) and the
overlapped/compressed paths use the table only.

The table:

:func:`choose` picks from the message size (bytes), the number of ranks, and whether the
shared-memory transports may be used (``shared``: ``shared_memory=True`` and every rank
on one node; :func:`resolve` works that out per communicator):

1. one rank: ``mpi`` (nothing to reduce);
2. ``shared``: ``root`` up to :data:`ROOT_UP_TO_SHARED` (3 ranks: 2 KiB), then ``shm``
   (the slot sum) up to :func:`shm_threshold`, then the ``ring`` through shared memory
   (or ``mpi``/``root`` below :func:`ring_threshold`, which only happens beyond the
   measured rank counts);
3. several nodes, some of them holding more than one rank, blocking calls: the
   ``hierarchical`` allreduce from :data:`HIERARCHICAL_FROM` (up to
   :data:`ONE_SLICE_UP_TO` when a node holds one rank; :func:`uses_hierarchical`);
   beyond :data:`MEASURED_NODES` nodes, whatever the cost model (:mod:`.cost`, with
   :data:`ASSUMED_LINKS`) says is fastest among ``hierarchical``, ``ring``, ``mpi`` and
   ``root`` (:func:`modelled`): the rails' rings take ``2(N-1)`` latencies, so on many
   nodes small messages go to MPI's logarithmic algorithms;
4. otherwise (several nodes, or ``shared_memory=False``): the ``ring`` over MPI messages
   from :func:`ring_threshold`, ``root`` inside :data:`ROOT_BAND`, else ``mpi``.

``reduce_scatter`` and ``allgather`` (:func:`choose_scatter`): the ``ring`` over MPI
messages from the same :func:`ring_threshold` as the allreduce's ring (each is one half of
that ring, and MPI's ``Reduce_scatter``/``Allgatherv`` are the halves of its allreduce),
else ``mpi``; one rank: ``mpi``. A first check, 2026-11-29, on the busy machine (load
average 12-15, 4 ranks oversubscribed), reduce-scatter + allgather, median of 3::

    bytes        P=2 ring / mpi (float32)      P=4 ring / mpi (float32)
    256 KiB      2.0 / 3.4 ms                  17.8 / 12.9 ms
    1 MiB        5.0 / 10.3 ms                 23.8 / 51.6 ms
    16 MiB       12.5 / 77.9 ms                49.5 / 1910 ms

(MPICH's ``Reduce_scatter``/``Allgatherv`` fall far behind for large messages), so the
allreduce's ring thresholds stand; not yet measured on an idle machine.

The training strategies use it too (through :class:`mpitrain.collectives.Allreducer` and
``allreduce``), so ``--reduce auto`` means the same thing for every message.
:func:`~mpitrain.collectives.start_allreduce` resolves ``auto`` with ``shared=False``
(``shm`` and the shared-memory ring are blocking only there); a persistent reducer's
started reductions use the slot sum on one node (:func:`resolve_started`).

Measured with the benchmark on one 2-core node (AMD EPYC VM, MPICH 5.0.2 wheel with CMA
single-copy transfers), median latency in the benchmark's steady state.

The slot sum against the others, 2026-11-29, the rank counts and buffer kinds interleaved
run after run::

    mpiexec -n P python -m mpitrain bench allreduce --algorithms shm,ring,mpi,root,auto \\
        --max-bytes 16M                                                  # P = 2, 3, 4
    mpiexec -n 2 python -m mpitrain bench allreduce --algorithms shm,ring,mpi,root,auto \\
        --max-bytes 16M --buffer shared

3 runs of each on a nearly idle machine (load average 0.3-3.7), the thresholds' reference;
median over the runs of each run's median, in us, ``shm / ring / mpi / root`` then the
fastest, float32 | float64::

    P=2
         8 B   4.0 / 10.6 / 4.1 / 5.2  shm        3.4 / 9.7 / 3.8 / 4.5  shm
       1 KiB   3.5 / 9.8 / 4.7 / 4.9  shm         3.4 / 9.5 / 4.7 / 4.9  shm
       4 KiB   3.8 / 10.2 / 5.2 / 6.4  shm        3.8 / 9.8 / 5.0 / 6.3  shm
      32 KiB   5.4 / 11.0 / 13.3 / 19.2  shm      5.4 / 10.9 / 12.6 / 18.5  shm
     128 KiB   9.5 / 14.3 / 24.1 / 38.6  shm      9.7 / 14.2 / 21.6 / 35.6  shm
     256 KiB   15.7 / 18.5 / 38.3 / 62.8  shm     16.8 / 19.1 / 33.7 / 58.6  shm
     512 KiB   31.5 / 27.7 / 64.0 / 440  ring     33.3 / 29.6 / 57.0 / 104  ring
       1 MiB   79.2 / 48.5 / 115 / 807  ring      78.7 / 48.5 / 99.6 / 168  ring
      16 MiB   3401 / 1075 / 1741 / 13700  ring   3440 / 1043 / 2070 / 14371  ring
    P=2 shared buffers (the ring reads its neighbours' buffers: no copies)
         8 B   3.9 / 10.2 / 4.0 / 5.1  shm        3.5 / 9.2 / 3.8 / 4.5  shm
      32 KiB   6.7 / 15.3 / 21.6 / 28.1  shm      5.4 / 10.8 / 12.6 / 18.2  shm
     256 KiB   25.5 / 46.7 / 92.3 / 118  shm      15.9 / 18.2 / 32.9 / 55.4  shm
     512 KiB   49.6 / 80.4 / 170 / 563  shm       31.6 / 25.6 / 55.7 / 96.9  ring
       1 MiB   192 / 140 / 326 / 1060  ring       76.4 / 35.0 / 100 / 177  ring
    P=3
         8 B   20.5 / 51.7 / 22.0 / 17.7  root    21.7 / 56.4 / 23.7 / 18.7  root
       1 KiB   21.9 / 56.4 / 32.8 / 18.8  root    23.5 / 57.3 / 33.0 / 19.5  root
       4 KiB   22.5 / 53.6 / 30.2 / 27.1  shm     22.7 / 56.9 / 32.8 / 27.8  shm
      32 KiB   29.4 / 61.3 / 65.2 / 72.0  shm     31.3 / 63.3 / 56.6 / 79.1  shm
     128 KiB   51.9 / 74.9 / 124 / 131  shm       61.9 / 84.9 / 164 / 137  shm
     256 KiB   68.5 / 89.2 / 189 / 213  shm       90.6 / 106 / 256 / 268  shm
     512 KiB   140 / 132 / 363 / 835  ring        156 / 150 / 467 / 475  ring
       1 MiB   294 / 215 / 697 / 1545  ring       449 / 253 / 798 / 840  ring
      16 MiB   6420 / 4047 / 11499 / 30041  ring   6803 / 4152 / 10729 / 30270  ring
    P=4
         8 B   25.5 / 84.7 / 34.6 / 32.1  shm     25.2 / 83.5 / 33.9 / 31.6  shm
       1 KiB   25.9 / 86.7 / 45.5 / 33.0  shm     25.1 / 85.3 / 43.8 / 31.8  shm
       4 KiB   27.4 / 88.8 / 47.1 / 44.9  shm     27.5 / 85.7 / 45.9 / 43.6  shm
      32 KiB   35.8 / 97.9 / 98.7 / 110  shm      40.7 / 96.7 / 90.9 / 105  shm
     128 KiB   69.6 / 128 / 172 / 209  shm        75.6 / 132 / 150 / 198  shm
     256 KiB   115 / 169 / 265 / 349  shm         120 / 173 / 212 / 317  shm
     512 KiB   221 / 290 / 485 / 1238  shm        191 / 248 / 361 / 539  shm
       1 MiB   583 / 497 / 915 / 2365  ring       590 / 471 / 679 / 872  ring
      16 MiB   9016 / 6159 / 9301 / 35060  ring   8817 / 6430 / 8592 / 36947  ring

Hence: on 2 ranks ``shm`` up to 256 KiB (the standard workload's ~39 KB float32 step
message: 5.4-7.4 us against 11-13 for the ring and 13-17 for mpi), the ring from 512 KiB;
on 3 ranks ``root`` up to 2 KiB (shm 14-22% behind it), ``shm`` from 4 KiB to 256 KiB,
the ring above; on 4 ranks ``shm`` up to 512 KiB (tiny messages included: 25 us against
32-35 for root and mpi), the ring from 1 MiB. On the medians above the choice is within
10% of the fastest at every size from 4 B to 16 MiB, both dtypes, except shared float32
buffers on 2 ranks at 512 KiB and 4 MiB (the ring 62% and 20% behind shm on the medians,
ahead in 1 and 2 of the 3 runs; float64 and ordinary buffers favour the ring there). The ``auto``
column itself costs a median 1% over ``shm`` on 2 ranks up to 256 KiB (resolving it); on
3 and 4 ranks its 100-iteration medians at 16-32 KiB scattered by +-20% around shm's,
which a 2000-iteration rerun (``--min-bytes 8K --max-bytes 64K --iterations 2000
--algorithms shm,auto,root``, 3 ranks) put within 1% of each other.

5 earlier runs of the same commands while other test suites kept the 2 cores busy (load
average 3-12) gave the same thresholds on 2 and 3 ranks, but on 4 (oversubscribed) the
slot sum stayed ahead of the ring up to 8 MiB: a rank that is not running costs every
wait a context switch, and the ring waits 2(P-1) times per piece, the slot sum once. The
idle runs decide. Beyond 4 ranks nothing was measured: the slot sum reads all ``P``
messages on every rank where the ring reads about two, so its limit is the 2-rank one
scaled by ``2/P``.

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

Across nodes, on the emulated cluster of ``tests/cluster.py`` (hydra placing ranks on
host names that resolve to loopback; between "nodes" MPICH's network module, over
loopback), 2026-11-29::

    mpiexec -launcher ssh -launcher-exec tests/multinode/fake-ssh -f HOSTS -n 4 \
        python -m mpitrain bench allreduce --algorithms ring,hierarchical,mpi,root \
        --min-bytes 1K --max-bytes 16M --iterations 30 --warmup 3 --dtypes float32

2 nodes x 2 ranks, float32, load average 1.1-1.3 (4 ranks on 2 cores), median us,
``ring / hierarchical / mpi``::

       1 KiB   148 / 131 / 86           256 KiB   269 / 163 / 345
       4 KiB   130 / 133 / 91           512 KiB   672 / 347 / 1229
       8 KiB    90 /  79 / 78             1 MiB  1018 / 632 / 2318
      16 KiB    89 /  77 / 93             2 MiB  4014 / 3430 / 7449
      32 KiB   129 /  79 / 96             4 MiB  3497 / 3943 / 9447
      64 KiB   173 /  99 / 164           16 MiB  6995 / 8568 / 29804
     128 KiB   203 / 122 / 241

Hence ``hierarchical`` from 16 KiB (ahead of the flat ring and ``mpi`` from 16 KiB to
2 MiB; within the noise of the ring above, where both are bound by this machine's memory
bandwidth, which the emulated network shares; on a real network the ring's 2(P-1)/P * n
bytes through one rank per node against the hierarchical 2(N-1)/N * n/L per rank favour
it more). A second run on a busy machine (load average 5-7, every median 3-50x higher)
kept the order: the hierarchical allreduce ahead of the ring at every size from 1 KiB to
4 MiB, of ``mpi`` from 16 KiB. When every node holds one rank (3x1) it is the flat ring
plus two copies, so never chosen there. Uneven, 2+1 (one slice: the single rank of the
second node carries all its node's traffic), same command, load average 7.5, float32 |
float64::

       4 KiB   100 /   93 /   67        104 /   86 /   63
      16 KiB   172 /  126 /  151        160 /  131 /  150
      64 KiB   176 /  148 /  178        167 /  147 /  177
     256 KiB   296 /  249 /  331        248 /  255 /  295
     512 KiB   513 /  461 / 1526        423 /  411 /  528
       1 MiB   697 /  813 / 2610        625 / 1028 / 2116
       4 MiB  1988 / 3960 / 9731       3500 / 4279 / 12225

so with one slice ``hierarchical`` from 16 KiB up to 512 KiB, the ring above. Beyond 4
ranks and 3 nodes nothing was measured; the cost model of :mod:`.cost` (``python -m
mpitrain plan``) is the estimate there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from mpitrain.collectives import cost, tuning
from mpitrain.collectives.tune_cache import entry_of, note

if TYPE_CHECKING:
    from mpitrain.collectives.context import CommState

KIB = 1024
MAX_REMEMBERED = 4096  # auto's answers kept per communicator (message sizes seen)
# Largest message bytes for which "shm" (the slot sum) is chosen, per measured comm size,
# when the shared-memory transports are allowed and every rank is on one node.
SHM_UP_TO = {2: 256 * KIB, 3: 256 * KIB, 4: 512 * KIB}
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
# Message bytes from which "hierarchical" is chosen across nodes when some node holds
# several ranks (measured on the emulated cluster, see above).
HIERARCHICAL_FROM = 16 * KIB
# ... and up to this many bytes when a node holds a single rank (one slice: that rank sums
# and sends everything of its node).
ONE_SLICE_UP_TO = 512 * KIB
# The most nodes measured; beyond, auto follows the cost model with these links (a
# 100 Gb/s, 2 us network; 20 GB/s, 1 us inside a node).
MEASURED_NODES = 3
ASSUMED_LINKS = cost.Links.from_network(gbps=100, latency_us=2, node_latency_us=1,
                                        node_gbytes_per_s=20)
MODELLED_ACROSS = ("hierarchical", "ring", "mpi", "root")


def modelled(nbytes: int, size: int, nodes: int) -> str:
    """The algorithm :mod:`.cost` says is fastest for ``nbytes`` on ``size`` ranks over
    ``nodes`` nodes (``size // nodes`` ranks per node), with :data:`ASSUMED_LINKS`."""
    return cost.fastest(nbytes, nodes, max(1, size // nodes), ASSUMED_LINKS,
                        MODELLED_ACROSS)[0]


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


# The sync strategy's step (not an allreduce): from this many bytes of step message, on
# 2+ ranks of one node with shared memory allowed and the plain path (no --overlap,
# --compress, --shard, tensor parallelism, sparse rows), ``--reduce auto`` runs the
# node-shared update (:mod:`.shared_update`: two counter barriers, each rank sums and
# updates 1/P of the parameters) instead of an allreduce followed by a full update on every
# rank. Measured by benchmarks/shared_update.py (the table is there): it overtakes the
# best allreduce + full update between 16 and 32 KB on 2 and 3 ranks (float32; float64
# about 32 KB), and is 15-50% faster from 128 KiB on (sgd and adam, float32 and float64),
# so auto takes it from there: the standard workload's step message (38 KB in float32,
# 77 KB in float64, where it won by 9%, under a microsecond a step) stays on the slot sum.
SHARED_UPDATE_FROM_BYTES = 128 * KIB


def picks_shared_update(nbytes: int, size: int) -> bool:
    """Whether ``--reduce auto`` uses the node-shared update for a step message of
    ``nbytes`` on ``size`` ranks where it can run (one node, shared memory allowed, the
    plain sync path)."""
    return size >= 2 and nbytes >= SHARED_UPDATE_FROM_BYTES


def uses_hierarchical(nbytes: int, size: int, nodes: int, slices: int) -> bool:
    """Whether ``auto`` uses the hierarchical allreduce for ``nbytes`` on ``size`` ranks
    spread over ``nodes`` nodes whose smallest holds ``slices`` ranks: from
    :data:`HIERARCHICAL_FROM`, and with one slice (a node with one rank) only up to
    :data:`ONE_SLICE_UP_TO`; never when every node holds one rank (there it is the flat
    ring plus two node-local copies)."""
    if nodes <= 1 or size <= nodes or nbytes < HIERARCHICAL_FROM:
        return False
    return slices > 1 or nbytes <= ONE_SLICE_UP_TO


def choose(nbytes: int, size: int, itemsize: int = 8, *, shared: bool = False,
           nodes: int = 1, slices: int = 1) -> str:
    """The algorithm ``auto`` uses for ``nbytes`` bytes of ``itemsize``-byte elements on
    ``size`` ranks. ``shared``: the shared-memory transports are allowed and every rank is
    on one node, so ``shm`` may be chosen and the ring goes through shared memory;
    otherwise the ring sends MPI messages. ``nodes``: how many nodes the ranks span
    (``hierarchical`` is only chosen across nodes; pass 1 where it cannot run, e.g. for a
    nonblocking call) and ``slices``: the fewest ranks any of them holds."""
    if size <= 1:
        return "mpi"
    if nodes > MEASURED_NODES:
        return modelled(nbytes, size, nodes)
    if uses_hierarchical(nbytes, size, nodes, slices):
        return "hierarchical"
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


def choose_scatter(nbytes: int, size: int, itemsize: int = 8) -> str:
    """The algorithm ``auto`` uses for a ``reduce_scatter`` or ``allgather`` of ``nbytes``
    bytes (the whole buffer) on ``size`` ranks."""
    if size > 1 and nbytes >= ring_threshold(size, itemsize):
        return "ring"
    return "mpi"


def resolve_scatter(algorithm: str, state: CommState, nbytes: int, itemsize: int) -> str:
    """The algorithm a (checked) ``reduce_scatter``/``allgather`` runs: ``auto`` through
    :func:`choose_scatter`, anything else as given. No communication."""
    if algorithm != "auto":
        return algorithm
    return choose_scatter(nbytes, state.comm.Get_size(), itemsize)


def resolve(algorithm: str, state: CommState, nbytes: int, itemsize: int, *,
            shared_memory: bool, nonblocking: bool = False) -> str:
    """The algorithm to run for a (checked) ``algorithm`` argument: ``auto`` through
    :func:`choose`, anything else as given. Collective on the first use of a communicator
    (the one-node test); ``shm`` without ``shared_memory`` or across nodes raises the same
    ValueError on every rank, after that test, so no rank is left inside a collective.
    ``auto``'s answers are remembered per communicator (:func:`choose` costs 0.3-0.7 us,
    up to 15% of a 4 us slot sum). ``nonblocking``: for ``start_allreduce`` (never
    ``hierarchical``, which is blocking only); otherwise the node layout is found on the
    first ``auto`` call (collective)."""
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
    key = (nbytes, itemsize, shared_memory, nonblocking)
    chosen = state.choices.get(key)
    if chosen is None:
        size = state.comm.Get_size()
        shared = shared_memory and size > 1 and state.one_node()
        layout = None if nonblocking or size <= 1 else state.layout()
        if len(state.choices) >= MAX_REMEMBERED:
            state.choices.clear()
        chosen = state.choices[key] = choose(
            nbytes, size, itemsize, shared=shared, nodes=layout.nodes if layout else 1,
            slices=layout.slices if layout else 1)
    return chosen


def resolve_started(algorithm: str, state: CommState, nbytes: int, itemsize: int, *,
                    shared_memory: bool) -> str:
    """The algorithm of a persistent reducer's started reductions
    (:class:`~mpitrain.collectives.Allreducer` with ``in_flight``): ``auto`` is ``shm``, the
    slot sum with a slot per call in flight, whenever the shared-memory transports may be
    used and every rank is on one node (several ranks), at any size: it progresses without
    MPI calls, where MPICH moves the others only inside MPI calls, so only at ``test()``
    and ``wait()`` (``--mode ssp``'s 4.5 MB bench message on 4 ranks: 0.18-0.24 s epochs
    through MPI messages against sync's 0.16 s through shared memory). Otherwise as
    :func:`~mpitrain.collectives.start_allreduce` resolves it (``hierarchical``, blocking
    only, raises ValueError on every rank). Collective on the first use of a communicator."""
    if algorithm == "hierarchical":
        raise ValueError("algorithm 'hierarchical' cannot be started (its node-local and "
                         "inter-node phases follow one another on different "
                         "communicators); choose another algorithm")
    if (algorithm == "auto" and shared_memory and state.comm.Get_size() > 1
            and state.one_node()):
        return "shm"
    return resolve(algorithm, state, nbytes, itemsize, shared_memory=shared_memory,
                   nonblocking=True)


# A measured choice keeps the table's unless the table's is more than this much slower.
TUNED_MARGIN = 0.05


def pick_measured(median: dict[str, float], table: str) -> str:
    """The algorithm to run given the measured ``median`` seconds per candidate: the
    fastest, or ``table`` when it is within :data:`TUNED_MARGIN` of the fastest."""
    fastest = min(median, key=lambda name: median[name])
    if table in median and median[table] <= (1 + TUNED_MARGIN) * median[fastest]:
        return table
    return fastest


def resolve_tuned(state: CommState, count: int, dtype: np.dtype, *, shared_memory: bool,
                  tune: str, make: Callable[[str], Any],
                  ) -> tuple[str, str, dict[str, Any] | None]:
    """Collective: what ``auto`` runs for a persistent reduction of ``count`` elements of
    ``dtype`` (module docstring), as ``(algorithm, source, entry)``: ``source`` is
    ``table``, ``cache`` or ``measured``, ``entry`` the cache entry behind the choice (None
    for the table). ``make(name)`` builds a reducer of the same message running ``name``
    (for timing). The same on every rank: the cache is rank 0's, broadcast; the timings
    are the slowest rank's; the decision is rank 0's, broadcast."""
    nbytes = count * dtype.itemsize
    table = resolve("auto", state, nbytes, dtype.itemsize, shared_memory=shared_memory)
    size = state.comm.Get_size()
    if tune == "off" or size <= 1 or count == 0:
        return table, "table", None
    layout = state.layout()
    names = tuning.candidates(size=size, nodes=layout.nodes,
                              shared=shared_memory and state.one_node())
    cache = state.tune_cache(shared_memory)
    entry = None if tune == "force" else cache.lookup(dtype.name, nbytes)
    if entry is not None and entry["choice"] in names:
        return entry["choice"], "cache", entry
    if tune == "cache":
        return table, "table", None
    reducers = {name: make(name) for name in names}
    try:
        median = tuning.time_reducers(state.comm, reducers)
    finally:
        for reducer in reducers.values():
            reducer.close()
    choice = np.array([names.index(pick_measured(median, table))], dtype=np.int64)
    state.comm.Bcast(choice, root=0)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # (rank 0's is saved)
    load = np.array([os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0])
    state.comm.Bcast(load, root=0)  # rank 0's: recorded with the timings it explains
    entry = entry_of(cache.shape, dtype=dtype.name, nbytes=nbytes, buffer="persistent",
                     choice=names[int(choice[0])], table=table,
                     median_us={name: 1e6 * value for name, value in median.items()},
                     repeats=tuning.REPEATS, measured=stamp, load=float(load[0]))
    problem = cache.store(state.comm, [entry])
    if problem:
        note(f"tuning cache not saved: {problem}")
    return entry["choice"], "measured", entry
