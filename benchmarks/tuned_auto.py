"""``auto`` with the tuning cache against the built-in table and every explicit algorithm,
for the step message of a few gradient sizes, the way training reduces it.

Run after ``mpiexec -n P python -m mpitrain tune`` (same P, same placement)::

    mpiexec -n 2 python benchmarks/tuned_auto.py [--params 10000,100000,1000000,10000000]
        [--dtype float32] [--repeats 7] [--json FILE]

For each size: persistent reducers (:class:`mpitrain.collectives.Allreducer`) of the
message ``params + 4`` elements (the gradient and the step's tail), one per variant:
``auto`` with ``tune="cache"`` (what training's default ``--tune auto`` runs once the
cache has the size), ``auto`` with ``tune="off"`` (the table) and each explicit algorithm
that can run here. They are timed together by the tuner's own method
(:func:`mpitrain.collectives.tuning.time_reducers`: the whole message written each call,
variants interleaved in rounds, the slowest rank's time, median over ``--repeats``
rounds). Rank 0 prints microseconds per step message and each variant's ratio to the
fastest explicit one, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import Allreducer
from mpitrain.collectives.context import state_of
from mpitrain.collectives.tuning import candidates, time_reducers

TAIL = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="10000,100000,1000000,10000000")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank0 = comm.Get_rank() == 0
    dtype = np.dtype(args.dtype)
    state = state_of(comm)
    explicit = candidates(size=comm.Get_size(), nodes=state.layout().nodes,
                          shared=state.one_node())
    rows = []
    if rank0:
        print(f"# load average before: {os.getloadavg()}", flush=True)
    for params in (int(text) for text in args.params.split(",")):
        count = params + TAIL
        reducers = {"auto (cache)": Allreducer(count, dtype, comm, tune="cache"),
                    "auto (table)": Allreducer(count, dtype, comm, tune="off")}
        reducers.update({name: Allreducer(count, dtype, comm, algorithm=name)
                         for name in explicit})
        median = time_reducers(comm, reducers, repeats=args.repeats)
        best = min(median[name] for name in explicit)
        row = {"params": params, "bytes": count * dtype.itemsize,
               "cached": reducers["auto (cache)"].algorithm,
               "cached_source": reducers["auto (cache)"].source,
               "table": reducers["auto (table)"].algorithm,
               "median_us": {name: round(1e6 * value, 1) for name, value in median.items()},
               "vs_fastest": {name: round(value / best, 3) for name, value in median.items()}}
        for reducer in reducers.values():
            reducer.close()
        rows.append(row)
        if rank0:
            cells = "  ".join(f"{name} {1e6 * value:.0f} ({value / best:.2f}x)"
                              for name, value in median.items())
            print(f"{params:>9} params {row['bytes']:>9} B  cache->{row['cached']} "
                  f"({row['cached_source']}) table->{row['table']}:  {cells}", flush=True)
    if rank0:
        print(f"# load average after: {os.getloadavg()}", flush=True)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as file:
                json.dump({"ranks": comm.Get_size(), "dtype": dtype.name,
                           "repeats": args.repeats, "rows": rows}, file, indent=1)


if __name__ == "__main__":
    main()
