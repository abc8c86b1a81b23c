"""``mpitrain tune``: measure which reduction ``--reduce auto`` should run on this machine.

Run it under the launcher, with the ranks and placement training will use (collective)::

    mpiexec -n 2 python -m mpitrain tune [--min-bytes 4K] [--max-bytes 64M] [--json FILE]

For every size bucket from ``--min-bytes`` to ``--max-bytes`` (doubling) and every dtype,
it times the candidate algorithms of this communicator's shape as training runs them (a
persistent :class:`~mpitrain.collectives.Allreducer`, the whole message written each call,
candidates interleaved, the slowest rank's time, median of rounds:
:mod:`mpitrain.collectives.tuning`), picks as
:func:`mpitrain.collectives.select.resolve_tuned` does and stores the choice in the tuning
cache (:mod:`mpitrain.collectives.tune_cache`; ``$MPITRAIN_CACHE_DIR``, else
``$XDG_CACHE_HOME/mpitrain``, else ``~/.cache/mpitrain``). Training's ``--reduce auto``
(with the default ``--tune auto``) then runs the cached choice for its message's bucket.
Rank 0 prints one row per size: the median microseconds per call of each candidate, the
choice and the built-in table's choice. ``--show`` prints what the cache holds for this
shape without measuring.

JSON (``--json FILE``, rank 0)::

    {"cache": "/home/u/.cache/mpitrain/tune.json", "ranks": 2,
     "shape": {"mpi_library": "MPICH Version: 5.0.2", "mpitrain_version": "0.1.0",
               "machine": "AMD EPYC x2", "ranks_per_node": [2], "shared_memory": true},
     "measured": true,
     "entries": [{... the cache entries, see mpitrain.collectives.tune_cache ...}]}
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
from mpi4py import MPI

from mpitrain.bench import save_outputs
from mpitrain.bench.allreduce import DTYPES, _parse_list, parse_size, sizes
from mpitrain.collectives import Allreducer
from mpitrain.collectives.context import state_of
from mpitrain.errors import checked, shared_error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tune``."""
    parser.add_argument("--min-bytes", default="4K", metavar="SIZE",
                        help="smallest size bucket, e.g. 4K (default: 4K)")
    parser.add_argument("--max-bytes", default="64M", metavar="SIZE",
                        help="largest size bucket; sizes double from --min-bytes "
                             "(default: 64M)")
    parser.add_argument("--dtypes", default=",".join(DTYPES), metavar="LIST",
                        help="comma-separated subset of float32,float64 (default: both)")
    parser.add_argument("--shared-memory", default=True, action=argparse.BooleanOptionalAction,
                        help="tune with the shared-memory transports allowed, as training "
                             "runs by default (--no-shared-memory: as --no-shared-memory and "
                             "--stall-timeout runs) (default: true)")
    parser.add_argument("--show", action="store_true",
                        help="print what the cache holds for this shape; measure nothing")
    parser.add_argument("--json", metavar="FILE", help="write the entries as JSON (rank 0)")


def _bucket_sizes(args: argparse.Namespace) -> list[int]:
    low = parse_size(args.min_bytes, "--min-bytes")
    high = parse_size(args.max_bytes, "--max-bytes")
    if high < low:
        raise shared_error(f"--max-bytes must be >= --min-bytes ({low}) (got {high})")
    return sizes(1 << (low - 1).bit_length(), high)


def measure(comm: MPI.Comm, dtypes: list[np.dtype], buckets: list[int], *,
            shared_memory: bool, rank0: bool) -> list[dict[str, Any]]:
    """Collective: a fresh measurement (``tune="force"``) of every bucket and dtype,
    stored in the cache; the entries (rank 0 prints a row per entry as it goes)."""
    entries = []
    for dtype in dtypes:
        for nbytes in buckets:
            if nbytes < dtype.itemsize:
                continue
            reducer = Allreducer(nbytes // dtype.itemsize, dtype, comm, tune="force",
                                 shared_memory=shared_memory)
            reducer.close()
            entries.append(reducer.tuning)
            if rank0:
                print(_row(reducer.tuning), flush=True)
    return entries


def _row(entry: dict[str, Any]) -> str:
    cells = "  ".join(f"{name} {value:9.1f}" for name, value in entry["median_us"].items())
    return (f"{entry['dtype']:>7} {entry['bytes']:>10}  {cells}  -> {entry['choice']:<12} "
            f"(table: {entry['table']})")


def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """Collective: measure (or ``--show``) and report; rank 0 prints and writes ``--json``."""
    buckets = checked(comm, _bucket_sizes, args)
    dtypes = [np.dtype(name) for name in
              checked(comm, _parse_list, args.dtypes, "--dtypes", DTYPES)]
    rank0 = comm.Get_rank() == 0
    state = state_of(comm)
    cache = state.tune_cache(args.shared_memory)
    if rank0:
        print(f"# tune: {comm.Get_size()} ranks, {cache.shape.describe()}; cache "
              f"{cache.path}", flush=True)
    if comm.Get_size() == 1:
        if rank0:
            print("# one rank: nothing to reduce, nothing to tune (run it under mpiexec "
                  "-n P with the ranks training uses)", flush=True)
        entries: list[dict[str, Any]] = []
    elif args.show:
        entries = sorted(cache.entries(), key=lambda e: (e["dtype"], e["bytes"]))
        if rank0:
            for entry in entries:
                print(_row(entry), flush=True)
            if not entries:
                print("# no entries for this shape yet: --reduce auto uses the built-in "
                      "table (run without --show to measure)", flush=True)
    else:
        if rank0:
            print("# median us per call (slowest rank, median of interleaved rounds) -> "
                  "the choice (the built-in table's)", flush=True)
        entries = measure(comm, dtypes, buckets, shared_memory=args.shared_memory,
                          rank0=rank0)
        if rank0:
            print(f"# cached {len(entries)} choices in {cache.path}", flush=True)
            _warn_if_busy(entries)
    document = {"cache": str(cache.path), "ranks": comm.Get_size(),
                "shape": cache.shape.as_dict(), "measured": not args.show, "entries": entries}
    checked(comm, _write, args.json if rank0 else None, document)
    return 0


def _warn_if_busy(entries: list[dict[str, Any]]) -> None:
    """Rank 0: a note when the machine was busier than it has cores while measuring."""
    cores = os.cpu_count() or 1
    load = max((e.get("load_average", -1.0) for e in entries), default=-1.0)
    if load > cores:
        print(f"# note: the load average reached {load:.1f} on {cores} cores while "
              "measuring: the choices reflect that load; run 'mpitrain tune' again on an "
              "idle node for the choices of a dedicated one", flush=True)


def _write(path: str | None, document: dict[str, Any]) -> None:
    if path:
        save_outputs(document, json_path=path, plot_path=None, plot=lambda *_: False)
