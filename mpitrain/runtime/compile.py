"""Compile (or load from numba's on-disk cache) the kernels without racing between ranks.

numba's cache is not safe against many processes writing the same entries at once. So the
kernels are warmed in three waves separated by barriers: global rank 0 (fills a shared
cache), then the first rank of every other node (fills a node-local cache, or loads the
shared one), then everybody else (loads). With a warm cache every wave is quick. numba's
per-process set-up, which reads no cache, runs on every rank at once before the waves, and
the waiting ranks sleep instead of spinning (start-up, target 5 of the performance issue).

A cold cache means a long silence (numba compiles every kernel: ~20 s), so rank 0 says what
it is doing when its wave takes longer than :data:`NOTICE_AFTER` seconds, with a dot every
2 s and the time it took (:func:`compile_notice`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import TextIO

import numpy as np
from mpi4py import MPI

from mpitrain.kernels.warmup import warm_up

NOTICE_AFTER = 2.0
"""Seconds of kernel loading before rank 0 announces a compilation (loading a warm cache
takes well under a second)."""


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


@contextmanager
def compile_notice(enabled: bool, *, after: float = NOTICE_AFTER,
                   stream: TextIO | None = None) -> Iterator[None]:
    """Around a kernel load: when it lasts longer than ``after`` seconds, write
    ``mpitrain: compiling kernels (first run only)…``, a dot every 2 s, and at the end
    ``done in N s``, on one line of ``stream`` (stderr)."""
    if not enabled:
        yield
        return
    out = sys.stderr if stream is None else stream
    done = threading.Event()
    started = time.monotonic()
    shown = threading.Event()

    def tick() -> None:
        if done.wait(after):
            return
        shown.set()
        _write(out, "mpitrain: compiling kernels (first run only)…")
        while not done.wait(2.0):
            _write(out, ".")

    thread = threading.Thread(target=tick, name="mpitrain-compile-notice", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if shown.is_set():
            _write(out, f" done in {time.monotonic() - started:.0f} s\n")


def _write(stream: TextIO, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):  # a closed stderr must not stop the compilation
        pass


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
