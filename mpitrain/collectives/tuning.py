"""Timing the candidate reductions of one message on this machine, for the tuning cache.

:func:`time_reducers` runs persistent reducers (one per candidate algorithm, built for the
same message) the way the training loop does: every call writes the whole contribution
(the gradient kernel writes every element each step), then reduces. Candidates take turns:
``repeats`` rounds, each visiting every candidate once in an order shuffled per round (the
same on every rank, seeded by the round), one untimed call then ``iterations`` timed calls
after a Barrier, so a burst of load from other processes hits them all alike. A round's
time is the slowest rank's (MAX over ranks, one buffer Allreduce at the end); the result
is the median over rounds, identical on every rank. What is done with it (the choice, the
cache) is :func:`mpitrain.collectives.select.resolve_tuned`'s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from mpi4py import MPI

# What --tune / Allreducer(tune=...) may say (select.resolve_tuned says what each means).
TUNE_MODES = ("auto", "cache", "off", "force")
#: The environment variable that sets --tune's default (as HOROVOD_AUTOTUNE does for
#: Horovod): ``off`` pins the table on a cluster, and keeps the test suite deterministic.
TUNE_ENV = "MPITRAIN_TUNE"
REPEATS = 5
# Timed calls per round: about 2 MiB of messages, 2 to 50 calls.
ROUND_BYTES = 2 << 20
MIN_ITERATIONS, MAX_ITERATIONS = 2, 50


def default_tune() -> str:
    """--tune's default: ``$MPITRAIN_TUNE`` when set, else ``auto`` (an unknown value is
    reported by the config's validation, naming the variable)."""
    return os.environ.get(TUNE_ENV, "auto")


def candidates(*, size: int, nodes: int, shared: bool) -> tuple[str, ...]:
    """The algorithms worth timing for ``size`` ranks on ``nodes`` nodes (``shared``: the
    shared-memory transports are allowed and every rank is on one node)."""
    if size <= 1:
        return ()
    if nodes > 1:
        return (("hierarchical",) if size > nodes else ()) + ("ring", "mpi", "root")
    return (("shm",) if shared else ()) + ("ring", "mpi", "root")


def iterations_for(nbytes: int) -> int:
    """Timed calls per round for a message of ``nbytes``."""
    return int(min(MAX_ITERATIONS, max(MIN_ITERATIONS, ROUND_BYTES // max(nbytes, 1))))


def time_reducers(comm: MPI.Comm, reducers: Mapping[str, Any], *, repeats: int = REPEATS,
                  iterations: int | None = None) -> dict[str, float]:
    """Collective: seconds per call of each reducer (``buffer()`` then call, as an
    :class:`~mpitrain.collectives.Allreducer`), the median over ``repeats`` interleaved
    rounds of the slowest rank's mean (module docstring); the same on every rank."""
    names = list(reducers)
    if not names:
        return {}
    if iterations is None:
        first = reducers[names[0]]
        iterations = iterations_for(first.count * first.dtype.itemsize)
    times = np.empty((repeats, len(names)), dtype=np.float64)
    for round_ in range(repeats):
        for index in np.random.default_rng(round_).permutation(len(names)):
            reducer = reducers[names[index]]
            reducer.buffer().fill(0)
            reducer()  # untimed: the timed calls follow one of their own kind
            comm.Barrier()
            start = MPI.Wtime()
            for _ in range(iterations):
                reducer.buffer().fill(0)
                reducer()
            times[round_, index] = (MPI.Wtime() - start) / iterations
    slowest = np.empty_like(times)
    comm.Allreduce(times, slowest, op=MPI.MAX)
    medians = np.median(slowest, axis=0)
    return {name: float(medians[i]) for i, name in enumerate(names)}
