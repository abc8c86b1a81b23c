"""Compile (or load from numba's on-disk cache) the kernels without racing between ranks.

numba's cache is not safe against many processes writing the same entries at once. So the
kernels are warmed in three waves separated by barriers: global rank 0 (fills a shared
cache), then the first rank of every other node (fills a node-local cache, or loads the
shared one), then everybody else (loads). With a warm cache every wave is quick.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from kernels.warmup import warm_up


def warm_kernels(comm: MPI.Comm, *, dtype: np.dtype, label_dtype: np.dtype) -> None:
    """Collective: warm the kernels for these dtypes on every rank, one wave at a time."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        wave = 0 if comm.Get_rank() == 0 else (1 if node.Get_rank() == 0 else 2)
    finally:
        node.Free()
    for turn in range(3):
        if wave == turn:
            warm_up(dtype=dtype, label_dtype=label_dtype)
        comm.Barrier()
