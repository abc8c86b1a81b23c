"""Dense allreduce vs the sparse row reduction of a step message, by touched rows per rank.

    mpiexec -n P python benchmarks/sparse_reduce.py [--features 262144] [--width 1]

Prints, per touched-row count, the payload all ranks send as a fraction of the dense
message and the median time (us) of the dense allreduce, the per-step measured sparse path
and the bounded one-collective path (bound = the count): the collective alone.
``benchmarks/sparse/step_parts.py --reduce`` times each path's whole training step, what
:data:`mpitrain.collectives.sparse.BOUNDED_UP_TO` and ``SPARSE_UP_TO`` are set from.
"""

from __future__ import annotations

import argparse
from time import perf_counter

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import Allreducer
from mpitrain.collectives.sparse import SparseRowAllreducer, payload_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=2**18)
    parser.add_argument("--width", type=int, default=1)
    parser.add_argument("--rest", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=60)
    parser.add_argument("--dtype", default="float64")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    count = args.features * args.width + args.rest
    dense = Allreducer(count, args.dtype, comm)
    sparse = SparseRowAllreducer(dense, rows=args.features, width=args.width, comm=comm,
                                 up_to=np.inf)
    probe = SparseRowAllreducer(dense, rows=args.features, width=args.width, comm=comm,
                                up_to=np.inf, max_touched=1)
    bounded_name = probe.transport
    probe.close()
    if rank == 0:
        print(f"P={size} dense {dense.algorithm}, {count * dense.dtype.itemsize} bytes, "
              f"median (min) us of {args.repeat}")
        print(f"rows/rank  fraction  dense  sparse (per step)  bounded ({bounded_name})")
    rng = np.random.default_rng(rank)
    for m in (256, 1280, 2560, 8192, 16384, 32768, 65536):
        m = min(m, args.features)
        touched = np.sort(rng.choice(args.features, m, replace=False)).astype(np.int64)
        bounded = SparseRowAllreducer(dense, rows=args.features, width=args.width,
                                      comm=comm, up_to=np.inf, max_touched=m)
        times = {"dense": [], "sparse": [], "bounded": []}
        for rep in range(3 * args.repeat):
            kind = ("dense", "sparse", "bounded")[rep % 3]  # interleaved
            message = dense.buffer()
            message[: args.features * args.width] = 0
            message.reshape(-1)[touched * args.width] = 1.0
            comm.Barrier()
            start = perf_counter()
            if kind == "dense":
                dense()
            else:
                (sparse if kind == "sparse" else bounded)(message, touched)
            times[kind].append(perf_counter() - start)
        med = {k: np.array(v) for k, v in times.items()}
        for k in med:
            comm.Allreduce(MPI.IN_PLACE, med[k], op=MPI.MAX)
        total = payload_bytes(np.full(size, m), width=args.width, rest=args.rest,
                              itemsize=dense.dtype.itemsize).sum()
        if rank == 0:
            shown = "  ".join(f"{np.median(med[k]) * 1e6:6.0f} ({np.min(med[k]) * 1e6:.0f})"
                              for k in ("dense", "sparse", "bounded"))
            print(f"{m:9d}  {total / (count * dense.dtype.itemsize):8.3f}  {shown}")
        bounded.close()
    dense.close()


if __name__ == "__main__":
    main()
