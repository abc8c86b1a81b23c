"""Argument checks shared by every algorithm (local checks: no communication)."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

ALGORITHMS = ("auto", "shm", "ring", "hierarchical", "mpi", "root")
# --reduce of a training run: the allreduces, and the sync step's node-shared update
# (.shared_update: not an allreduce, it updates the model too)
STEP_ALGORITHMS = (*ALGORITHMS, "shared-update")
# start_allreduce: "shm" polls shared memory outside MPI, and "hierarchical" is three
# phases on different communicators, so they only exist blocking
NONBLOCKING_ALGORITHMS = ("auto", "ring", "mpi", "root")
_BLOCKING_ONLY = {
    "shm": "the ranks wait for each other polling shared memory, where MPI makes no progress",
    "hierarchical": "its node-local and inter-node phases follow one another on different "
                    "communicators",
}
OPS = ("sum", "mean")
# reduce_scatter / allgather: the ring's halves and MPI's own (nothing else splits a message)
SCATTER_ALGORITHMS = ("auto", "ring", "mpi")

MPI_TYPES = {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE}


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else ValueError naming the bad value."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)} (got {value!r})")
    return value


def check_algorithm(algorithm: object, *, nonblocking: bool = False) -> str:
    """``algorithm`` if it is one of :data:`ALGORITHMS` (of
    :data:`NONBLOCKING_ALGORITHMS` for ``nonblocking``), else ValueError."""
    if nonblocking and isinstance(algorithm, str) and algorithm in _BLOCKING_ONLY:
        raise ValueError(f"start_allreduce cannot run algorithm {algorithm!r} (it is "
                         f"blocking: {_BLOCKING_ONLY[algorithm]}); use allreduce, or one of "
                         f"{', '.join(NONBLOCKING_ALGORITHMS)}")
    return check_choice("algorithm", algorithm, ALGORITHMS)


def check_comm(comm: object) -> MPI.Intracomm:
    """``comm`` if it is an mpi4py intracommunicator, else TypeError naming its type."""
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"comm must be an mpi4py MPI.Intracomm (got {type(comm).__name__})")
    return comm


def flat_view(buf: object) -> np.ndarray:
    """A 1-D view sharing memory with ``buf``, after checking it can be reduced in place.

    TypeError for a non-array or a dtype other than native float32/float64; ValueError for
    a non-C-contiguous or read-only array.
    """
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"buf must be a numpy.ndarray (got {type(buf).__name__})")
    if buf.dtype not in MPI_TYPES or not buf.dtype.isnative:
        raise TypeError(f"buf must have dtype float32 or float64 (got {buf.dtype})")
    if not buf.flags.c_contiguous:
        raise ValueError("buf must be C-contiguous (got a strided view; pass a contiguous copy)")
    if not buf.flags.writeable:
        raise ValueError("buf must be writeable (got a read-only array)")
    return buf if buf.ndim == 1 else buf.reshape(-1)
