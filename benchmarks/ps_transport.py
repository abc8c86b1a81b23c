"""Why ``--mode async-ps`` uses nonblocking point-to-point messages and not MPI-3 RMA.

    mpiexec -n 2 python benchmarks/ps_transport.py [--size 100000] [--iters 300] [--blocks 5]

Rank 0 is the server, rank 1 the worker; one iteration is one push of a gradient of
``--size`` float32 numbers and one pull of the parameters:

- ``p2p``: the worker ``Isend``s the gradient and ``Irecv``s the parameters; the server's
  progress loop ``Wait``s for the push, applies it (``params -= lr * grad``: numpy) and
  sends the parameters back (what mpitrain.asynchronous.parameter_server does).
- ``rma``: the server exposes its parameters in a window; the worker, under a passive
  target lock, ``Accumulate``s ``-lr * grad`` (MPI_SUM) and ``Get``s the parameters. Timed
  twice: while the server waits in an MPI call (``Ibarrier`` + ``Wait``: MPI progresses),
  and while the server computes in Python between MPI calls (``Ibarrier`` + ``Test`` every
  5 ms, as a server that also evaluates or checkpoints would): passive-target progress
  then depends on the target entering MPI.

Prints microseconds per iteration (median of ``--blocks`` blocks). RMA can only add: a
momentum or Adam server, which mpitrain supports, cannot be expressed as an MPI_Accumulate.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
parser = argparse.ArgumentParser()
parser.add_argument("--size", type=int, default=100_000)
parser.add_argument("--iters", type=int, default=300)
parser.add_argument("--blocks", type=int, default=5)
args = parser.parse_args()
n, iters, lr = args.size, args.iters, 0.01
params = np.zeros(n, dtype=np.float32)
grad = np.ones(n, dtype=np.float32)
pulled = np.empty(n, dtype=np.float32)


def p2p_block() -> float:
    comm.Barrier()
    start = time.perf_counter()
    if rank == 0:
        inbox = np.empty(n, dtype=np.float32)
        for _ in range(iters):
            comm.Irecv(inbox, source=1, tag=1).Wait()
            params[:] -= lr * inbox
            comm.Send(params, dest=1, tag=2)
    else:
        for _ in range(iters):
            MPI.Request.Waitall([comm.Isend(grad, dest=0, tag=1),
                                 comm.Irecv(pulled, source=0, tag=2)])
    comm.Barrier()
    return (time.perf_counter() - start) / iters * 1e6


def rma_block(window: MPI.Win, busy_server: bool) -> float:
    comm.Barrier()
    start = time.perf_counter()
    if rank == 0:
        done = comm.Ibarrier()
        if busy_server:
            while not done.Test():
                deadline = time.perf_counter() + 0.005
                while time.perf_counter() < deadline:  # Python work, no MPI calls
                    pass
        else:
            done.Wait()
    else:
        scaled = -lr * grad
        for _ in range(iters):
            window.Lock(0, MPI.LOCK_SHARED)
            window.Accumulate(scaled, 0, op=MPI.SUM)
            window.Get(pulled, 0)
            window.Unlock(0)
        comm.Ibarrier().Wait()
    elapsed = time.perf_counter() - start
    comm.Barrier()
    return elapsed / iters * 1e6


if comm.Get_size() != 2:
    raise SystemExit("run with exactly 2 ranks")
window = MPI.Win.Create(params if rank == 0 else MPI.BOTTOM, disp_unit=4, comm=comm)
results = {"p2p": [], "rma, server waiting in MPI": [], "rma, server busy in Python": []}
for _ in range(args.blocks):
    results["p2p"].append(p2p_block())
    results["rma, server waiting in MPI"].append(rma_block(window, False))
    results["rma, server busy in Python"].append(rma_block(window, True))
window.Free()
if rank == 1:
    print(f"push+pull of {n} float32 ({4 * n / 1e6:.2f} MB each way), {iters} iterations, "
          f"{MPI.Get_library_version().splitlines()[0]}")
    for name, values in results.items():
        print(f"{name:<30} {statistics.median(values):10.1f} us/iteration")
