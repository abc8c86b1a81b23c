"""2+-rank MPI check run inside Slurm jobs: every rank prints its rank, the world size and
the result of an Allreduce, after mpitrain's launcher check (exit 2 with its message when
the launcher did not wire MPI up)."""

from __future__ import annotations

import sys

import numpy as np
from mpi4py import MPI

from mpitrain.runtime.launch import MPIWiringError, check_mpi_wiring

comm = MPI.COMM_WORLD
try:
    check_mpi_wiring(comm)
except MPIWiringError as exc:
    print(f"wiring error (task {exc.task}): {exc}", flush=True)
    sys.exit(2)
send = np.full(1 << 16, comm.Get_rank() + 1.0)
recv = np.empty_like(send)
comm.Allreduce(send, recv)
size = comm.Get_size()
assert recv[0] == size * (size + 1) / 2, recv[0]
print(f"hello: rank {comm.Get_rank()} of {size} sum {recv[0]:g}", flush=True)
