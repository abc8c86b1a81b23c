"""``mpitrain bench matrix``: is the default the fastest choice at every model size, and how
close do P ranks come to the machine's ceiling and per-rank compute to the BLAS limit?

Run under the launcher, e.g. ``mpiexec -n 2 python -m mpitrain bench matrix --json m.json
--plot m.png``. The workload matrix of issue 13 as a grid of :data:`MATRIX` points (MLPs from
~10 K to ~10 M parameters, input widths 16-1024, one to three hidden layers, 32-512 rows per
rank per step, float32 and float64; 10 classes, random rows and labels, SGD, ``--shuffle
local``, no test set); ``--quick`` runs the tiny :data:`QUICK` points instead (for tests).
For every point, in this order:

1. **BLAS limit and kernel**, every rank at once: a plain numpy matmul loop of the step's
   shapes (per layer ``A @ W`` forward, ``A.T @ D`` and ``D @ W.T`` backward; no bias,
   activation, loss or update) and the fused numba step alone (gradient + SGD update,
   :func:`mpitrain.bench.train.kernel_step_seconds`), both ``--rows-per-rank`` rows, median
   seconds/step of 5 blocks, mean over ranks. Where the default run takes the node-shared
   update (``--reduce auto`` picks ``shared-update``: P >= 2 ranks on one node, a step
   message from :data:`~mpitrain.collectives.select.SHARED_UPDATE_FROM_BYTES`), the
   kernel updates the 1/P slice of the parameters its rank updates in training
   (``kernel_updates``: ``"slice"``; ``"all"`` otherwise). ``blas_vs_kernel`` = BLAS /
   kernel seconds (1: the step computes at the BLAS limit). The kernel time also sets the
   steps per epoch (``--seconds`` of kernel time per epoch, 20 to 400 steps: at least 20
   so that one descheduled step of a large model does not decide a point; quick: 3).
2. ``--repeats`` rounds (the order of the runs rotates each round: interleaved), each:
   - every **variant** (:data:`VARIANTS`, ``--variants``): a P-rank ``mpitrain.train`` of
     the point with those options; ``default`` is the run without any of them (what a
     user gets). ``--compress`` variants only for float32;
   - the **ceiling**: P separate single-rank processes (:mod:`mpitrain.bench.ceiling`, not
     part of the MPI job), each training rank r's rows with ``batch = rows per rank``,
     started at the same time while the job's ranks wait without spinning; their
     samples/s summed: what the machine gives P ranks of this work without mpitrain's
     communication (two vCPUs sharing caches and memory bandwidth included).
   Each run is 2 epochs of the point's steps; its figures are those of the second epoch
   (loaded kernels, touched pages).

Per point, medians over the rounds: ``default_vs_best`` = default samples/s / the fastest
other variant's (goal >= 0.9; > 1: the default wins), ``vs_ceiling`` = default / ceiling
samples/s (goal >= 0.9), ``blas_vs_kernel`` (goal >= 0.9), and ``blas_vs_compute`` = BLAS
seconds / the ceiling runs' compute seconds per step (kernels + update + loop).

JSON (``--json FILE``, rank 0)::

    {"ranks", "mpi_library", "mpitrain_version", "cpus",
     "load_average": [1-minute load average before, after],
     "settings": {"quick", "repeats", "seconds", "variants", "seed"},
     "defaults": {"reduce", "overlap", "compress", "optimizer"},
     "points": [{"name", "features", "hidden", "classes", "rows_per_rank", "dtype",
                 "parameters", "gradient_bytes", "steps_per_epoch",
                 "blas_seconds", "kernel_seconds", "kernel_updates", "blas_vs_kernel",
                 "blas_vs_compute",
                 "variants": {NAME: {"options", "samples_per_second", "runs",
                                     "step_seconds", "compute_seconds", "comm_seconds"}
                              | {"options", "skipped": reason}},
                 "ceiling": {"samples_per_second", "runs", "step_seconds",
                             "compute_seconds"},
                 "default_samples_per_second", "best", "best_samples_per_second",
                 "default_vs_best", "vs_ceiling"}]}

Seconds are per step; samples/s count the rows of all ranks. ``--plot FILE.png`` draws
the three ratios per point against the 0.9 goal, and the samples/s of default, best and
ceiling.
"""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI

from mpitrain import __version__
from mpitrain.bench import save_figure, save_outputs
from mpitrain.bench.train import (
    alone,
    kernel_step_seconds,
    median_call_seconds,
    synthetic_rows,
)
from mpitrain.config import TrainConfig, resolve
from mpitrain.errors import UserError, checked, require

#: Options every run of the matrix has.
FIXED: dict[str, Any] = {"model": "mlp", "test_fraction": 0.0, "shuffle": "local",
                         "quiet": True, "epochs": 2, "optimizer": "sgd"}
#: The explicit alternatives to the defaults: name -> options.
VARIANTS: dict[str, dict[str, Any]] = {
    "shm": {"reduce": "shm"},
    "ring": {"reduce": "ring"},
    "hierarchical": {"reduce": "hierarchical"},
    "mpi": {"reduce": "mpi"},
    "root": {"reduce": "root"},
    "shared-update": {"reduce": "shared-update"},
    "overlap": {"overlap": True},
    "ring+overlap": {"reduce": "ring", "overlap": True},
    "mpi+overlap": {"reduce": "mpi", "overlap": True},
    "fp16": {"compress": "fp16"},
    "bf16": {"compress": "bf16"},
}
GOAL = 0.9


@dataclass(frozen=True)
class Point:
    """One workload of the matrix: an MLP ``features-hidden...-classes`` trained with
    ``rows_per_rank`` rows per rank per step in ``dtype``."""

    features: int
    hidden: tuple[int, ...]
    rows_per_rank: int
    dtype: str = "float32"
    classes: int = 10
    name: str = field(init=False)

    def __post_init__(self) -> None:
        dims = "-".join(str(d) for d in self.dims)
        object.__setattr__(self, "name", f"{dims} {self.dtype[5:]}b x{self.rows_per_rank}")

    @property
    def dims(self) -> list[int]:
        return [self.features, *self.hidden, self.classes]

    @property
    def parameters(self) -> int:
        d = self.dims
        return sum(d[i] * d[i + 1] + d[i + 1] for i in range(len(d) - 1))


#: The matrix of issue 13: ~10 K to ~10 M parameters, inputs 16-1024, 1-3 hidden layers,
#: 32-512 rows per rank per step, float32 and float64.
MATRIX = (
    Point(16, (512,), 64),                        # 14 K
    Point(64, (128,), 256),                       # 10 K: the standard workload
    Point(64, (128,), 256, "float64"),
    Point(128, (256, 256), 512),                  # 101 K
    Point(256, (512, 512, 512), 64),              # 661 K, three hidden layers
    Point(784, (1024,), 128),                     # 814 K: the issue's example
    Point(784, (1024,), 128, "float64"),
    Point(1024, (1024, 1024), 32),                # 2.1 M
    Point(512, (2048, 2048), 32),                 # 5.2 M
    Point(1024, (3072, 2048), 32),                # 9.4 M
)
#: Tiny points for tests (``--quick``).
QUICK = (Point(16, (8,), 16), Point(8, (8, 8), 8, "float64"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench matrix``."""
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and few steps (checks the command, not the "
                        "machine)")
    parser.add_argument("--repeats", type=int, default=3, metavar="N",
                        help="interleaved rounds; medians reported (default: 3)")
    parser.add_argument("--seconds", type=float, default=0.3, metavar="S",
                        help="kernel time per epoch of each run; sets the steps "
                        "(default: 0.3)")
    parser.add_argument("--variants", default=",".join(VARIANTS), metavar="V[,V...]",
                        help=f"explicit alternatives to the default (default: all: "
                        f"{','.join(VARIANTS)})")
    parser.add_argument("--points", default="", metavar="I[,I...]",
                        help="indices of the matrix points to run (default: all; see "
                        "the module docstring)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and init")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON (rank 0)")
    parser.add_argument("--plot", metavar="FILE",
                        help="draw the ratios as an image (rank 0; needs matplotlib)")


# ------------------------------------------------------------------------------------------
# the pieces the ceiling workers share (mpitrain.bench.ceiling)


def point_rows(point: dict[str, Any] | Point, *, rank: int, rows: int,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank ``rank``'s ``rows`` random rows and labels of ``point`` (the same in the job
    and in a ceiling worker)."""
    from mpitrain.kernels.network import SOFTMAX_XENT

    p = point if isinstance(point, Point) else _point(point)
    return synthetic_rows(rows, p.features, p.classes, SOFTMAX_XENT, np.dtype(p.dtype),
                          seed * 1009 + rank)


def train_options(options: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of one run: :data:`FIXED` and ``options`` (JSON values)."""
    options = {**options}
    if "hidden" in options:
        options["hidden"] = tuple(options["hidden"])
    return resolve(FIXED, options)


def run_figures(history: list[dict[str, Any]]) -> dict[str, float]:
    """The last epoch of a run: samples/s, and seconds per step (all, compute, comm)."""
    last = history[-1]
    steps = last["step"] - (history[-2]["step"] if len(history) > 1 else 0)
    return {"samples_per_second": last["samples_per_second"],
            "step_seconds": last["seconds"] / steps,
            "compute_seconds": last["compute_seconds"] / steps,
            "comm_seconds": last["comm_seconds"] / steps}


def _point(values: dict[str, Any]) -> Point:
    return Point(features=values["features"], hidden=tuple(values["hidden"]),
                 rows_per_rank=values["rows_per_rank"], dtype=values["dtype"],
                 classes=values["classes"])


# ------------------------------------------------------------------------------------------
# measurements


def blas_step_seconds(comm: MPI.Comm, *, dims: list[int], dtype: np.dtype, batch: int,
                      steps: int, seed: int) -> float:
    """Collective: a plain numpy matmul loop of one step's shapes (forward ``A @ W`` per
    layer, backward ``A.T @ D`` per layer and ``D @ W.T`` below the first), ``batch`` rows,
    on every rank at once; the mean over ranks of each rank's median seconds/step."""
    rng = np.random.default_rng(seed)
    layers = len(dims) - 1
    A = [rng.standard_normal((batch, d)).astype(dtype) for d in dims]
    D = [np.empty((batch, d), dtype=dtype) for d in dims]
    D[-1][...] = rng.standard_normal(D[-1].shape)
    W = [(0.01 * rng.standard_normal((dims[i], dims[i + 1]))).astype(dtype)
         for i in range(layers)]
    G = [np.empty_like(w) for w in W]

    def step(_: int) -> None:
        for i in range(layers):
            np.dot(A[i], W[i], out=A[i + 1])
        for i in reversed(range(layers)):
            np.dot(A[i].T, D[i + 1], out=G[i])
            if i:
                np.dot(D[i + 1], W[i].T, out=D[i])

    step(0)
    return median_call_seconds(comm, step, steps)


def _variants(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``--variants`` checked, with ``default`` first (UserError on an unknown name)."""
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for name in names:
        require(name in VARIANTS, f"--variants: unknown variant {name!r} (expected some of "
                f"{', '.join(VARIANTS)})")
    return {"default": {}, **{name: VARIANTS[name] for name in names}}


def _points(args: argparse.Namespace) -> tuple[Point, ...]:
    grid = QUICK if args.quick else MATRIX
    if not args.points.strip():
        return grid
    try:
        picked = [int(i) for i in args.points.split(",")]
    except ValueError:
        picked = [-1]
    require(all(0 <= i < len(grid) for i in picked),
            f"--points must be indices 0..{len(grid) - 1} (got {args.points!r})")
    return tuple(grid[i] for i in picked)


def _check(args: argparse.Namespace) -> tuple[tuple[Point, ...], dict[str, dict[str, Any]]]:
    require(args.repeats >= 1, f"--repeats must be >= 1 (got {args.repeats})")
    require(args.seconds > 0, f"--seconds must be > 0 (got {args.seconds})")
    return _points(args), _variants(args)


def _runnable(point: Point, options: dict[str, Any], ranks: int) -> str | None:
    """None when the variant ``options`` can train ``point`` on ``ranks`` ranks, else why
    not (the config's own message)."""
    try:
        train_options({**_base(point, ranks, 1), **options})
    except UserError as exc:
        return str(exc)
    return None


def _base(point: Point, ranks: int, seed: int) -> dict[str, Any]:
    return {"hidden": list(point.hidden), "dtype": point.dtype, "classes": point.classes,
            "batch_size": point.rows_per_rank * ranks, "seed": seed}


def _measure_point(point: Point, variants: dict[str, dict[str, Any]],
                   args: argparse.Namespace, comm: MPI.Comm,
                   workers: Any) -> dict[str, Any]:
    """Collective: every measurement of one point (see the module docstring)."""
    from mpitrain.training import train

    size, rank = comm.Get_size(), comm.Get_rank()
    dtype = np.dtype(point.dtype)
    batch = point.rows_per_rank
    kernel_steps = 10 if args.quick else 50
    blas = blas_step_seconds(comm, dims=point.dims, dtype=dtype, batch=batch,
                             steps=kernel_steps, seed=args.seed)
    update = default_update_slice(point, comm)
    kernel = kernel_step_seconds(comm, dims=point.dims, model="mlp", dtype=dtype,
                                 seed=args.seed, rows=4 * batch, batch=batch,
                                 steps=kernel_steps, update=update)
    steps = 3 if args.quick else int(min(400, max(20, round(args.seconds / kernel))))
    rows = steps * batch
    X, y = point_rows(point, rank=rank, rows=rows, seed=args.seed)
    base = _base(point, size, args.seed)
    runnable = {name: opts for name, opts in variants.items()
                if _runnable(point, opts, size) is None}
    skipped = {name: _runnable(point, opts, size) for name, opts in variants.items()
               if name not in runnable}
    ceiling_options = {**_base(point, 1, args.seed)}
    alone(comm, lambda: _on_workers(workers, [
        {"cmd": "data", "point": _json_point(point), "rank": r, "ranks": size, "rows": rows,
         "seed": args.seed} for r in range(size)]))
    order = [*runnable, "ceiling"]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in order}
    for repeat in range(args.repeats):
        shift = repeat % len(order)
        for name in order[shift:] + order[:shift]:
            if name == "ceiling":
                answers = alone(comm, lambda: _on_workers(
                    workers, [{"cmd": "run", "options": ceiling_options}] * size))
                if answers is not None:
                    runs[name].append({
                        "samples_per_second": sum(a["samples_per_second"] for a in answers),
                        **{key: statistics.fmean(a[key] for a in answers)
                           for key in ("step_seconds", "compute_seconds", "comm_seconds")}})
                continue
            config = train_options({**base, **runnable[name]})
            stats = run_figures(train(config, comm=comm, X=X, y=y).history)
            every = comm.allgather(stats)
            runs[name].append({key: (statistics.fmean(s[key] for s in every)
                                     if key in ("compute_seconds", "comm_seconds")
                                     else stats[key]) for key in stats})
    del X, y
    summary = _summary(point, steps, blas, kernel, variants, runnable, skipped, runs)
    return {**summary, "kernel_updates": "all" if update is None else "slice"}


def default_update_slice(point: Point, comm: MPI.Comm) -> tuple[int, int] | None:
    """Collective: the slice of the parameters this rank updates in the default run of
    ``point`` when ``--reduce auto`` takes the node-shared update there (every rank on one
    node, P >= 2, a large enough step message; the matrix's runs are plain sync ones);
    None when every rank updates all of them."""
    from mpitrain.collectives.context import state_of
    from mpitrain.collectives.ring import chunk_offsets
    from mpitrain.collectives.select import picks_shared_update

    size = comm.Get_size()
    nbytes = (point.parameters + 4) * np.dtype(point.dtype).itemsize
    if not picks_shared_update(nbytes, size) or not state_of(comm).one_node():
        return None
    offsets = chunk_offsets(point.parameters, size)
    return offsets[comm.Get_rank()], offsets[comm.Get_rank() + 1]


def _on_workers(workers: Any, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rank 0: the ceiling workers run ``commands`` together; a failure is a UserError
    (so :func:`alone` agrees on it)."""
    try:
        return workers.all(commands)
    except RuntimeError as exc:
        raise UserError(f"bench matrix: {exc}") from exc


def _json_point(point: Point) -> dict[str, Any]:
    values = asdict(point)
    values.pop("name")
    values["hidden"] = list(point.hidden)
    return values


def _median_run(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Medians of the runs' figures, and the runs' samples/s."""
    return {"samples_per_second": round(statistics.median(
                r["samples_per_second"] for r in runs), 1),
            "runs": [round(r["samples_per_second"], 1) for r in runs],
            **{key: statistics.median(r[key] for r in runs)
               for key in ("step_seconds", "compute_seconds", "comm_seconds")}}


def _summary(point: Point, steps: int, blas: float, kernel: float,
             variants: dict[str, dict[str, Any]], runnable: dict[str, dict[str, Any]],
             skipped: dict[str, str | None], runs: dict[str, list[dict[str, float]]],
             ) -> dict[str, Any]:
    """One point's entry of the JSON document (rank 0's runs are what every rank has)."""
    table: dict[str, Any] = {}
    for name, opts in variants.items():
        if name in runnable and runs[name]:
            table[name] = {"options": opts, **_median_run(runs[name])}
        else:
            table[name] = {"options": opts, "skipped": skipped.get(name) or "not run"}
    ceiling = _median_run(runs["ceiling"]) if runs["ceiling"] else None
    timed = {n: v for n, v in table.items() if n != "default" and "skipped" not in v}
    best = max(timed, key=lambda n: timed[n]["samples_per_second"]) if timed else None
    default = table["default"].get("samples_per_second")
    best_sps = timed[best]["samples_per_second"] if best else None
    return {
        **_json_point(point), "name": point.name, "parameters": point.parameters,
        "gradient_bytes": point.parameters * np.dtype(point.dtype).itemsize,
        "steps_per_epoch": steps, "blas_seconds": blas, "kernel_seconds": kernel,
        "blas_vs_kernel": round(blas / kernel, 3) if kernel > 0 else None,
        "blas_vs_compute": (round(blas / ceiling["compute_seconds"], 3)
                            if ceiling and ceiling["compute_seconds"] > 0 else None),
        "variants": table, "ceiling": ceiling,
        "default_samples_per_second": default, "best": best,
        "best_samples_per_second": best_sps,
        "default_vs_best": round(default / best_sps, 3) if default and best_sps else None,
        "vs_ceiling": (round(default / ceiling["samples_per_second"], 3)
                       if default and ceiling else None),
    }


# ------------------------------------------------------------------------------------------
# report


def _table(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    lines = [f"# bench matrix: {doc['ranks']} ranks, {doc['cpus']} cpus, load average "
             f"{doc['load_average'][0]:.2f} before / {doc['load_average'][1]:.2f} after; "
             f"medians of {s['repeats']} interleaved rounds", HEADER,
             *(_row(p) for p in doc["points"])]
    return "\n".join(lines)


HEADER = (f"{'point (dims, dtype, rows/rank)':<32} {'params':>9} {'default/s':>10} "
          f"{'best explicit':>13} {'best/s':>10} {'def/best':>8} {'ceiling/s':>10} "
          f"{'/ceiling':>8} {'BLAS/kernel':>11}")


def _row(p: dict[str, Any]) -> str:
    """One point's line of the table (printed as soon as the point is done, and again in
    the final table)."""
    def num(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    ceiling = p["ceiling"]["samples_per_second"] if p["ceiling"] else None
    return (f"{p['name']:<32} {p['parameters']:>9,} "
            f"{num(p['default_samples_per_second'], ',.0f'):>10} {p['best'] or 'n/a':>13} "
            f"{num(p['best_samples_per_second'], ',.0f'):>10} "
            f"{num(p['default_vs_best'], '.2f'):>8} {num(ceiling, ',.0f'):>10} "
            f"{num(p['vs_ceiling'], '.2f'):>8} {num(p['blas_vs_kernel'], '.2f'):>11}")


def _plot(path: str, doc: dict[str, Any]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    points = doc["points"]
    names = [p["name"] for p in points]
    x = np.arange(len(points))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 1.1 * len(points)), 8),
                                      sharex=True)
    for i, (key, label) in enumerate((("default_samples_per_second", "default"),
                                      ("best_samples_per_second", "best explicit"))):
        top.bar(x + (i - 1) * 0.27, [p[key] or 0 for p in points], 0.27, label=label)
    top.bar(x + 0.27, [p["ceiling"]["samples_per_second"] if p["ceiling"] else 0
                       for p in points], 0.27, label="ceiling (P x 1 rank)")
    top.set_yscale("log")
    top.set_ylabel("samples/s")
    top.legend(fontsize="small")
    top.set_title(f"bench matrix, {doc['ranks']} ranks (load average "
                  f"{doc['load_average'][0]:.1f})")
    for i, (key, label) in enumerate((("default_vs_best", "default / best"),
                                      ("vs_ceiling", f"{doc['ranks']} ranks / ceiling"),
                                      ("blas_vs_kernel", "BLAS / kernel"))):
        bottom.bar(x + (i - 1) * 0.27, [p[key] or 0 for p in points], 0.27, label=label)
    bottom.axhline(GOAL, color="black", linestyle="--", linewidth=0.8)
    bottom.set_ylabel("ratio (goal >= 0.9)")
    bottom.legend(fontsize="small")
    bottom.set_xticks(x, names, rotation=30, ha="right", fontsize="small")
    for ax in (top, bottom):
        ax.grid(True, axis="y", alpha=0.3)
    save_figure(fig, path)
    return True


def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """Collective: every point of the matrix; rank 0 prints the table and writes outputs."""
    from mpitrain.bench.ceiling import Workers

    points, variants = checked(comm, _check, args)
    load_before = os.getloadavg()[0]
    workers = alone(comm, lambda: Workers(comm.Get_size()))
    try:
        done = []
        for point in points:
            done.append(_measure_point(point, variants, args, comm, workers))
            if comm.Get_rank() == 0:
                print(_row(done[-1]), flush=True)
    finally:
        if workers is not None:
            workers.close()
    defaults = TrainConfig()
    doc = {"ranks": comm.Get_size(),
           "mpi_library": MPI.Get_library_version().strip().splitlines()[0].strip(),
           "mpitrain_version": __version__, "cpus": os.cpu_count(),
           "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
           "settings": {"quick": args.quick, "repeats": args.repeats,
                        "seconds": args.seconds, "variants": list(variants)[1:],
                        "seed": args.seed},
           "defaults": {"reduce": defaults.reduce, "overlap": defaults.overlap,
                        "compress": defaults.compress, "optimizer": defaults.optimizer},
           "points": done}
    checked(comm, _finish, args, doc, comm)
    return 0


def _finish(args: argparse.Namespace, doc: dict[str, Any], comm: MPI.Comm) -> None:
    if comm.Get_rank() != 0:
        return
    print(_table(doc), flush=True)
    save_outputs(doc, json_path=args.json, plot_path=args.plot, plot=_plot)
