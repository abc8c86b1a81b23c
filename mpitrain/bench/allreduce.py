"""``mpitrain bench allreduce``: latency and bandwidth of every allreduce algorithm.

Algorithms (``--algorithms``, default: every one that can run here): ``shm`` (the slot
sum; only when every rank is on one node, so the default leaves it out otherwise),
``ring`` (through shared memory on one node, else MPI messages), ``hierarchical``
(node-local reduce-scatter, rings across nodes by slice, node-local allgather),
``mpi``, ``root`` and ``auto`` (what :func:`mpitrain.collectives.select.choose` picks).
After the table, rank 0 prints how far ``auto`` is from the fastest algorithm measured at
each size (the worst size per dtype), the check behind ``select.py``'s thresholds, and,
across nodes, the bytes each algorithm sends between nodes.

For every message size from ``--min-bytes`` to ``--max-bytes`` (doubling), every dtype and
every algorithm, time ``allreduce(buf, comm, algorithm=..., op=...)`` on a buffer of zeros
(no overflow, no denormals). Iteration counts scale with size like the OSU
micro-benchmarks (many for small messages, few for large ones); ``--iterations`` and
``--warmup`` override them. Within one size the algorithms take turns on one buffer, in an
order shuffled every iteration, so a burst of noise from other processes hits them all
alike and their ratios stay meaningful; each timed call directly follows an untimed call
of the same algorithm, as in a training loop that uses one algorithm throughout.

Definitions (one row of the JSON ``results`` list):

- ``latency_us``: every timed iteration starts after a Barrier; an iteration's time is
  the slowest rank's time (max over ranks); ``latency_us`` is the median of those over the
  ``iterations`` timed iterations, in microseconds.
- ``algbw_GBps`` = ``bytes / latency`` in GB/s (1e9 bytes/s);
  ``busbw_GBps`` = ``algbw * 2(P-1)/P`` (the nccl-tests bus bandwidth; 0 on one rank).
- ``resolved``: the algorithm that ran (what ``auto`` chose; the name itself otherwise);
- ``cross_node_bytes``: the most bytes any rank sends to another node per call, and
  ``cross_node_bytes_mean`` the mean over ranks, counted from the algorithm's message
  schedule on this layout (:mod:`mpitrain.collectives.traffic`; the hierarchical
  allreduce sends ``2(N-1)/N * bytes/S`` from each of ``S`` ranks per node, the flat ring
  ``2(P-1)/P * bytes`` from the last rank of each node); ``null`` for ``mpi`` and ``root``
  (MPI's own schedules);
- ``memcpy_GBps``: the physical reference: ``bytes / t`` for ``numpy.copyto`` of a buffer
  of that size by one core, where every rank copies its own buffer at the same time (as
  every rank works during an allreduce) and ``t`` is defined like the latency above;
  measured right after the algorithms at each size.

JSON file (``--json FILE``, written by rank 0)::

    {"ranks": P, "mpi_library": "MPICH Version: ...", "mpitrain_version": "0.1.0",
     "op": "sum", "buffer": "private", "layout": "2x2", "ranks_per_node": [2, 2],
     "results": [{"algorithm": "ring", "resolved": "ring", "dtype": "float32",
                  "bytes": 1048576, "elements": 262144, "iterations": 100,
                  "latency_us": 93.1, "algbw_GBps": 11.26, "busbw_GBps": 11.26,
                  "cross_node_bytes": 1572864, "cross_node_bytes_mean": 786432,
                  "memcpy_GBps": 45.0}, ...]}

Sizes smaller than one element of a dtype are skipped for that dtype.

``--buffer shared`` takes the message from :func:`mpitrain.collectives.shared_buffer`
(shared memory when all ranks are on one node, where the ring reads its neighbours'
buffers directly) instead of an ordinary numpy array; the JSON then says
``"buffer": "shared"``. Every algorithm and the memcpy reference use the same kind.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from mpi4py import MPI

from mpitrain import __version__
from mpitrain.bench import output_file, save_figure
from mpitrain.collectives import allreduce, resolve, shared_buffer
from mpitrain.collectives.context import state_of
from mpitrain.collectives.traffic import cross_node_bytes
from mpitrain.errors import UserError, checked, shared_error

ALGORITHMS = ("shm", "ring", "hierarchical", "mpi", "root", "auto")
DTYPES = ("float32", "float64")
BUFFERS = ("private", "shared")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gib": 1 << 30}
_SMALL = 8 * 1024  # OSU's boundary between small and large messages


@dataclass
class Result:
    """One row of the JSON ``results`` list (see the module docstring)."""

    algorithm: str
    dtype: str
    bytes: int
    elements: int
    iterations: int
    latency_us: float
    algbw_GBps: float
    busbw_GBps: float
    memcpy_GBps: float
    resolved: str = ""
    cross_node_bytes: int | None = None
    cross_node_bytes_mean: float | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench allreduce``."""
    parser.add_argument("--min-bytes", default="4", metavar="SIZE",
                        help="smallest message, e.g. 4, 64K, 1M (default: 4)")
    parser.add_argument("--max-bytes", default="64M", metavar="SIZE",
                        help="largest message; sizes double from --min-bytes (default: 64M)")
    parser.add_argument("--algorithms", default=None, metavar="LIST",
                        help=f"comma-separated subset of {','.join(ALGORITHMS)} (default: "
                             "all; shm only when every rank is on one node)")
    parser.add_argument("--dtypes", default=",".join(DTYPES), metavar="LIST",
                        help="comma-separated subset of float32,float64 (default: both)")
    parser.add_argument("--op", default="sum", choices=("sum", "mean"),
                        help="reduction (default: sum)")
    parser.add_argument("--iterations", type=int, default=None, metavar="N",
                        help="timed iterations per size (default: scaled by size, 1000 for "
                        "small messages down to 20 for the largest)")
    parser.add_argument("--warmup", type=int, default=None, metavar="N",
                        help="untimed iterations per size first (default: scaled by size)")
    parser.add_argument("--buffer", default="private", choices=BUFFERS,
                        help="message in an ordinary array, or from "
                             "mpitrain.collectives.shared_buffer (default: private)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON (rank 0)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw busbw against size per algorithm (needs matplotlib)")


def parse_size(text: str, option: str) -> int:
    """Bytes in ``text`` such as ``4``, ``64K``, ``1MiB``; UserError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS or int(match.group(1)) < 1:
        raise shared_error(f"{option} must be a positive size such as 4, 64K or 1M "
                           f"(got {text!r})")
    return int(match.group(1)) * _UNITS[unit]


def _parse_list(text: str, option: str, allowed: tuple[str, ...]) -> list[str]:
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    bad = [item for item in items if item not in allowed]
    if not items or bad:
        raise shared_error(f"{option} must be a comma-separated subset of "
                           f"{','.join(allowed)} (got {text!r})")
    return list(dict.fromkeys(items))


def _algorithms(text: str | None, comm: MPI.Comm) -> list[str]:
    """Collective: the algorithms to measure. ``shm`` runs only when every rank is on one
    node: left out of the default then, a UserError when asked for."""
    chosen = _parse_list(text or ",".join(ALGORITHMS), "--algorithms", ALGORITHMS)
    if "shm" in chosen:
        try:  # the same answer on every rank (the one-node test is collective)
            allreduce(np.zeros(0), comm, algorithm="shm")
        except ValueError as exc:
            if text is not None:
                raise shared_error(f"--algorithms shm cannot run here: {exc}") from exc
            chosen.remove("shm")
    return chosen


def auto_gaps(results: list[Result]) -> dict[str, tuple[float, int, str]]:
    """Per dtype, the size where ``auto`` is furthest behind the fastest algorithm measured
    there: (``auto`` latency / fastest latency - 1, bytes, the fastest algorithm)."""
    worst: dict[str, tuple[float, int, str]] = {}
    by_size: dict[tuple[str, int], list[Result]] = {}
    for row in results:
        by_size.setdefault((row.dtype, row.bytes), []).append(row)
    for (dtype, nbytes), rows in by_size.items():
        auto = [r.latency_us for r in rows if r.algorithm == "auto"]
        if not auto or len(rows) < 2:
            continue
        best = min(rows, key=lambda r: r.latency_us)
        gap = auto[0] / best.latency_us - 1
        if dtype not in worst or gap > worst[dtype][0]:
            worst[dtype] = (gap, nbytes, best.algorithm)
    return worst


def cross_node_summary(results: list[Result]) -> str:
    """One line: bytes sent across nodes per call by the busiest rank, per algorithm, at
    the largest size measured (first dtype), as a fraction of the message."""
    last = max(r.bytes for r in results)
    rows = [r for r in results if r.bytes == last and r.dtype == results[0].dtype]
    cells = ", ".join(f"{r.algorithm} {r.cross_node_bytes / r.bytes:.3f}" for r in rows
                      if r.cross_node_bytes is not None)
    return (f"# bytes sent across nodes per call by the busiest rank / message bytes, at "
            f"{last} bytes: {cells or 'not counted'} (mpi, root: MPI's own schedules)")


def default_counts(nbytes: int) -> tuple[int, int]:
    """(warm-up, timed) iterations for a message of ``nbytes``, OSU-style."""
    if nbytes <= _SMALL:
        return 100, 1000
    iterations = int(min(100, max(20, (1 << 31) // nbytes)))
    return max(2, iterations // 10), iterations


def sizes(min_bytes: int, max_bytes: int) -> list[int]:
    """``min_bytes``, doubling, up to ``max_bytes`` inclusive."""
    out = []
    size = min_bytes
    while size <= max_bytes:
        out.append(size)
        size *= 2
    return out


def _time_round_robin(
    comm: MPI.Comm, actions: list[Callable[[], object]], warmup: int, iterations: int
) -> list[float]:
    """Median over iterations of the slowest rank's time, per action, in seconds.

    Every iteration runs each action twice in a row, untimed then timed, so the timed call
    always follows a call of the same action (the steady state of a loop that uses one
    algorithm: MPI's internal buffers, the cache); the actions take turns in an order
    shuffled per iteration (the same on every rank) so noise hits them all alike.
    """
    count = len(actions)
    times = np.empty((iterations, count), dtype=np.float64)
    for i in range(warmup + iterations):
        for a in np.random.default_rng(i).permutation(count):
            actions[a]()
            comm.Barrier()
            start = MPI.Wtime()
            actions[a]()
            if i >= warmup:
                times[i - warmup, a] = MPI.Wtime() - start
    slowest = np.empty_like(times)
    comm.Allreduce(times, slowest, op=MPI.MAX)
    return [float(t) for t in np.median(slowest, axis=0)]


def measure(
    comm: MPI.Comm, algorithms: list[str], dtype: np.dtype, nbytes: int, op: str,
    warmup: int, iterations: int, pool: np.ndarray | None = None,
) -> list[Result]:
    """One size and dtype: a row per algorithm, all sharing one memcpy reference.

    The algorithms share one buffer (the start of ``pool``, a byte array, when given) and
    run round-robin; the memcpy, from a buffer of the same kind, runs in a loop of its own
    right after (inside the round-robin it would evict the buffer from the cache before
    whichever algorithm came next).
    """
    n = nbytes // dtype.itemsize
    if pool is None:
        # np.full writes every page: a calloc'ed np.zeros source would be read from the
        # kernel's shared zero page, an in-cache copy at any size
        buf, src = np.full(n, 0, dtype=dtype), np.full(n, 0, dtype=dtype)
    else:
        buf = pool[: n * dtype.itemsize].view(dtype)
        src = pool[n * dtype.itemsize : 2 * n * dtype.itemsize].view(dtype)
        buf[...] = 0
        src[...] = 0
    actions = [lambda name=name: allreduce(buf, comm, algorithm=name, op=op)
               for name in algorithms]
    medians = _time_round_robin(comm, actions, warmup, iterations)
    state = state_of(comm)
    node_of = state.layout().node_of
    dst = np.empty(n, dtype=dtype)
    copy_time = _time_round_robin(comm, [lambda: np.copyto(dst, src)], warmup, iterations)[0]
    size = comm.Get_size()
    nbytes = n * dtype.itemsize
    memcpy = nbytes / copy_time / 1e9
    results = []
    for name, seconds in zip(algorithms, medians, strict=True):
        algbw = nbytes / seconds / 1e9
        ran = resolve(name, state, nbytes, dtype.itemsize, shared_memory=True)
        across = cross_node_bytes(ran, node_of, n, dtype.itemsize)
        results.append(Result(name, dtype.name, nbytes, n, iterations, seconds * 1e6, algbw,
                              algbw * 2 * (size - 1) / size, memcpy, ran,
                              None if across is None else max(across),
                              None if across is None else sum(across) / len(across)))
    return results


def _header(algorithms: list[str]) -> str:
    cells = "".join(f" | {name:>7} us {'GB/s':>6}" for name in algorithms)
    return f"{'dtype':>7} {'bytes':>10} {'iters':>5}{cells} | memcpy GB/s"


def _row(results: list[Result]) -> str:
    first = results[0]
    cells = "".join(f" | {r.latency_us:10.1f} {r.busbw_GBps:6.2f}" for r in results)
    return f"{first.dtype:>7} {first.bytes:>10} {first.iterations:>5}{cells} | " \
           f"{first.memcpy_GBps:11.2f}"


def write_json(path: str, comm: MPI.Comm, op: str, results: list[Result],
               buffer: str = "private") -> None:
    """The JSON file described in the module docstring (``comm``'s layout known already)."""
    layout = state_of(comm).layout()
    document: dict[str, Any] = {
        "ranks": comm.Get_size(),
        "layout": layout.describe(),
        "ranks_per_node": list(layout.sizes),
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0].strip(),
        "mpitrain_version": __version__,
        "op": op,
        "buffer": buffer,
        "results": [asdict(r) for r in results],
    }
    try:
        output_file(path).write_text(json.dumps(document, indent=1) + "\n")
    except OSError as exc:
        raise UserError(f"--json could not write {path!r} ({exc.strerror})") from exc


def write_plot(path: str, comm: MPI.Comm, results: list[Result]) -> bool:
    """busbw against size, one panel per dtype, one line per algorithm plus the memcpy
    reference; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    dtypes = list(dict.fromkeys(r.dtype for r in results))
    algorithms = list(dict.fromkeys(r.algorithm for r in results))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.5), squeeze=False,
                             sharey=True)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        for algorithm in algorithms:
            rows = [r for r in results if (r.algorithm, r.dtype) == (algorithm, dtype)]
            ax.plot([r.bytes for r in rows], [r.busbw_GBps for r in rows], marker="o",
                    markersize=3, label=algorithm)
        rows = [r for r in results if (r.algorithm, r.dtype) == (algorithms[0], dtype)]
        ax.plot([r.bytes for r in rows], [r.memcpy_GBps for r in rows], linestyle="--",
                color="black", label="memcpy, one core")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("message size (bytes)")
        ax.set_title(f"{dtype}, {comm.Get_size()} ranks")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("bus bandwidth (GB/s)")
    axes[0][0].legend(fontsize="small")
    save_figure(fig, path)
    return True


def _outputs(args: argparse.Namespace, comm: MPI.Comm, results: list[Result]) -> None:
    if comm.Get_rank() != 0:
        return
    if args.json:
        write_json(args.json, comm, args.op, results, args.buffer)
        print(f"wrote {args.json}", flush=True)
    if args.plot:
        if write_plot(args.plot, comm, results):
            print(f"wrote {args.plot}", flush=True)
        else:
            print("--plot skipped: matplotlib is not installed "
                  "(pip install 'mpitrain[plot]')", flush=True)


def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """Collective: the whole sweep; rank 0 prints the table and writes the outputs."""
    min_bytes = parse_size(args.min_bytes, "--min-bytes")
    max_bytes = parse_size(args.max_bytes, "--max-bytes")
    if max_bytes < min_bytes:
        raise shared_error(f"--max-bytes must be >= --min-bytes ({min_bytes}) "
                           f"(got {max_bytes})")
    algorithms = _algorithms(args.algorithms, comm)
    dtypes = [np.dtype(name) for name in _parse_list(args.dtypes, "--dtypes", DTYPES)]
    for option in ("iterations", "warmup"):
        value = getattr(args, option)
        if value is not None and value < (1 if option == "iterations" else 0):
            raise shared_error(f"--{option} must be >= {int(option == 'iterations')} "
                               f"(got {value})")
    # one pool for every size: the message and the memcpy source, as bytes
    pool = (shared_buffer(max_bytes // 4 + 2, np.float64, comm).view(np.uint8)
            if args.buffer == "shared" else None)
    rank0 = comm.Get_rank() == 0
    layout = state_of(comm).layout()
    if rank0:
        print(f"# allreduce op={args.op} on {comm.Get_size()} ranks ({layout.describe()} "
              f"nodes x ranks), {args.buffer} buffers; "
              "latency: median over "
              "iterations of the slowest rank (us); GB/s: busbw = bytes/latency*2(P-1)/P; "
              "memcpy: one core, all ranks copying at once", flush=True)
        print(_header(algorithms), flush=True)
    results: list[Result] = []
    for dtype in dtypes:
        for nbytes in sizes(min_bytes, max_bytes):
            if nbytes < dtype.itemsize:
                continue
            warmup, iterations = default_counts(nbytes)
            iterations = args.iterations or iterations
            warmup = warmup if args.warmup is None else args.warmup
            rows = measure(comm, algorithms, dtype, nbytes, args.op, warmup, iterations,
                           pool)
            results.extend(rows)
            if rank0:
                print(_row(rows), flush=True)
    if rank0:
        if layout.nodes > 1:
            print(cross_node_summary(results), flush=True)
        for dtype, (gap, nbytes, best) in auto_gaps(results).items():
            print(f"# auto vs the fastest, {dtype}: worst {100 * gap:+.1f}% at {nbytes} bytes "
                  f"(fastest there: {best})", flush=True)
    checked(comm, _outputs, args, comm, results)
    return 0


def main() -> int:
    """``python -m mpitrain.bench.allreduce`` (the same as ``mpitrain bench allreduce``)."""
    parser = argparse.ArgumentParser(prog="python -m mpitrain.bench.allreduce",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(), MPI.COMM_WORLD)


if __name__ == "__main__":
    raise SystemExit(main())
