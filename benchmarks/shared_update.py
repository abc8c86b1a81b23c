"""The node-shared update (``--reduce shared-update``) against an allreduce followed by the
full optimizer update on every rank, per step, at a range of gradient sizes: the
measurement behind :data:`mpitrain.collectives.select.SHARED_UPDATE_FROM_BYTES`.

    OMP_NUM_THREADS=1 mpiexec -n 2 python benchmarks/shared_update.py \\
        [--params 4096,16384,32768,65536,131072,262144,1048576,2400000] \\
        [--dtype float32] [--optimizer sgd] [--repeats 41] [--json FILE]

Every rank on one node. For each size ``n`` (parameters; the step message is ``n + 4``
elements), per step and variant, what training does between the gradient kernel and the
next forward pass:

- ``auto``, ``shm``, ``ring``: the message written (a constant fill standing in for the
  gradient kernel's write; in place for ``shm``, which hands out its shared slot),
  the persistent allreduce of :class:`mpitrain.collectives.Allreducer` (``tune="off"``:
  the built-in table for ``auto``), then the optimizer's update of all ``n`` parameters;
- ``shared-update``: the same write into the rank's shared slot, then
  :class:`mpitrain.collectives.shared_update.SharedUpdate`'s barrier and slice sum, the
  update of this rank's ``n / P`` parameters, the second barrier.

Variants take turns within each repeat, in a shuffled order (seeded), after a Barrier;
a repeat's time is the slowest rank's; rank 0 prints the median microseconds per variant
and ``shared-update``'s ratio to the best other one.

Measured on the 2-vCPU machine of issue 13 (shared with other developers' jobs, so noisy;
float32, median us per step; ``--repeats 301`` up to 256 KiB, 41 above; 3 ranks 61)::

    2 ranks, sgd      auto    shm    ring  shared-update  ratio to the best other
        4,112 B        4.4    4.4    12.1      5.6         1.29
       16,400 B        6.9    7.0    13.4      7.5         1.08
       32,784 B       10.5   10.5    15.2      9.5         0.90
       65,552 B       17.5   17.9    18.4     13.1         0.75
      131,088 B       30.5   30.7    25.3     20.1         0.80
      262,160 B       39.2   58.3    39.5     34.4         0.88 (0.63 in a second run)
      524,304 B       56.0   56.1    58.2     31.0         0.55
    1,048,592 B      126    139     115       63.5         0.55
    4,194,320 B      509    708     482      280           0.58
    9,600,016 B     5282   3697    5085     2060           0.56
    2 ranks, adam: 4 KB 1.31, 16 KB 0.95, 32 KB 0.82, 64 KB 0.63, 128 KB 0.66, 256 KB 0.68
    3 ranks, sgd:  16 KB 0.89, 64 KB 0.67, 256 KB 0.49, 1 MB 0.59, 4 MB 0.49

    2 ranks, float64, sgd: 32 KB 1.01, 64 KB 0.92, 77 KB 0.91, 128 KB 0.85, 512 KB 0.59

The crossover is between 16 and 32 KB (float64: about 32 KB); ``--reduce auto`` takes it
from 128 KiB (:data:`mpitrain.collectives.select.SHARED_UPDATE_FROM_BYTES`), where it wins
by 15% or more with every optimizer and dtype measured, so the standard workload's step
message (38 KB float32, 77 KB float64: a 9% win of under a microsecond there, against a
cross-core read of the updated parameters the benchmark does not include) stays on the
measured slot sum.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import Allreducer
from mpitrain.collectives.context import state_of
from mpitrain.collectives.shared_update import SharedUpdate
from mpitrain.optimizers import make_optimizer

TAIL = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="4096,16384,32768,65536,131072,262144,"
                        "1048576,2400000")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "momentum", "adam"))
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if not state_of(comm).one_node():
        raise SystemExit("every rank must be on one node")
    dtype = np.dtype(args.dtype)
    rows = []
    for n in (int(v) for v in args.params.split(",")):
        rows.append(measure(comm, n, dtype, args.optimizer, args.repeats))
        if rank == 0:
            row = rows[-1]
            others = min(v for k, v in row["median_us"].items() if k != "shared-update")
            print(f"{row['message_bytes']:>10,} B  " + "  ".join(
                f"{k} {v:9.1f}" for k, v in row["median_us"].items())
                + f"  shared-update/best-other {row['median_us']['shared-update'] / others:.2f}",
                flush=True)
    if rank == 0 and args.json:
        with open(args.json, "w") as out:
            json.dump({"ranks": size, "dtype": dtype.name, "optimizer": args.optimizer,
                       "load_average": os.getloadavg(), "results": rows}, out, indent=1)


def measure(comm: MPI.Comm, n: int, dtype: np.dtype, optimizer: str,
            repeats: int) -> dict:
    """Median us per variant for ``n`` parameters (see the module docstring)."""
    params = np.zeros(n, dtype=dtype)
    shared = SharedUpdate(comm, n=n, tail=TAIL, dtype=dtype,
                          buffers={"sgd": 0, "momentum": 1, "adam": 2}[optimizer],
                          initial=params)
    full = make_optimizer(optimizer, params)
    part = make_optimizer(optimizer, shared.params[shared.lo:shared.hi])
    part.state = {name: value[shared.lo:shared.hi]
                  for name, value in zip(part.state, shared.state, strict=True)}
    result = np.zeros(shared.hi - shared.lo + TAIL, dtype=dtype)
    reducers = {name: Allreducer(n + TAIL, dtype, comm, algorithm=name, tune="off")
                for name in ("auto", "shm", "ring")}

    def allreduce_then_update(reducer: Allreducer) -> None:
        message = reducer.buffer()
        message.fill(1.0)
        out = reducer()
        full.apply(params, out, scale=0.5, lr=0.0)

    def node_shared() -> None:
        shared.slot.fill(1.0)
        shared.gather(result)
        part.apply(shared.params[shared.lo:shared.hi], result, scale=0.5, lr=0.0)
        shared.release()

    variants = {name: (lambda r=r: allreduce_then_update(r)) for name, r in reducers.items()}
    variants["shared-update"] = node_shared
    names = list(variants)
    times = {name: [] for name in names}
    order = np.random.default_rng(0)
    for repeat in range(repeats + 2):
        for name in order.permutation(names):
            variants[name]()  # untimed: as in a loop that runs one variant throughout
            comm.Barrier()
            started = MPI.Wtime()
            variants[name]()
            elapsed = np.array([MPI.Wtime() - started])
            comm.Allreduce(MPI.IN_PLACE, elapsed, op=MPI.MAX)
            if repeat >= 2:
                times[name].append(float(elapsed[0]))
    resolved = reducers["auto"].algorithm
    for reducer in reducers.values():
        reducer.close()
    shared.close()
    return {"params": n, "message_bytes": (n + TAIL) * dtype.itemsize, "auto_is": resolved,
            "median_us": {name: 1e6 * float(np.median(v)) for name, v in times.items()}}


if __name__ == "__main__":
    main()
