"""Compile (or load from numba's on-disk cache) the kernels without racing between ranks.

numba's cache is not safe against many processes writing the same entries at once. So the
kernels are warmed in three waves separated by barriers: global rank 0 (fills a shared
cache), then the first rank of every other node (fills a node-local cache, or loads the
shared one), then everybody else (loads). With a warm cache every wave is quick. numba's
per-process set-up, which reads no cache, runs on every rank at once before the waves, and
the waiting ranks sleep instead of spinning (start-up, target 5 of the performance issue).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

import numpy as np
from mpi4py import MPI

from mpitrain.kernels.warmup import warm_up


def quiet_barrier(comm: MPI.Comm, poll: float = 0.001) -> None:
    """Barrier that sleeps between polls: MPICH's Barrier spins, and while one rank loads
    kernels the spinning of the others (more ranks than cores) would take its CPU."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll)


def prepare_numba() -> None:
    """Do numba's one-off per-process set-up (its typing and lowering registries, which
    import scipy's BLAS: ~0.4 s) without touching the cache, so every rank can do it at
    once instead of inside its wave."""
    try:
        from numba.core.registry import cpu_target

        cpu_target.typing_context.refresh()
        cpu_target.target_context.refresh()
    except (ImportError, AttributeError):  # numba internals moved: the waves still work
        pass


def warm_kernels(comm: MPI.Comm, *, dtype: np.dtype, label_dtype: np.dtype,
                 kernels: Collection[str] | None = None) -> None:
    """Collective: warm the kernels for these dtypes on every rank, one wave at a time.

    ``kernels`` names the kernels the run will call (:data:`mpitrain.kernels.warmup.KERNELS`;
    None: all): loading fewer makes start-up faster. A kernel not warmed here must not be
    called later by several ranks at once unless the cache already holds it.
    """
    prepare_numba()
    in_waves(comm, lambda: warm_up(dtype=dtype, label_dtype=label_dtype, kernels=kernels))


def in_waves(comm: MPI.Comm, load: Callable[[], object]) -> None:
    """Collective: run ``load`` on global rank 0, then on the first rank of every other
    node, then on everybody else, with a (sleeping) barrier after each wave."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        wave = 0 if comm.Get_rank() == 0 else (1 if node.Get_rank() == 0 else 2)
    finally:
        node.Free()
    for turn in range(3):
        if wave == turn:
            load()
        quiet_barrier(comm)
