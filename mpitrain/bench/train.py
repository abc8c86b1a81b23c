"""``mpitrain bench train``: training throughput, its compute/communication split and weak
scaling, plus the kernel, start-up and memory checks of the performance targets.

Run under the launcher with P ranks, e.g. ``mpiexec -n 2 python -m mpitrain bench train``.
Defaults are the standard workload: synthetic data, 64 features, 10 classes, 200,000 rows
(20% held out), MLP with one hidden layer of 128, SGD lr 0.1, 256 rows per rank per step
(global batch 256·P), 2 epochs, float32, ``--shuffle local``, ``--reduce auto``. The
options shared with ``mpitrain train`` are its flags (same names, choices, parsing and
checks); only the defaults differ. One command runs, in this order:

1. **probe**: one P-rank training run (``mpitrain.train``) that records, per rank, the time
   from launch to the end of step 0's local computation (see :mod:`.probes` for where a
   step is observed), RSS after every epoch, and the allocations made by a window
   of steps in epoch 2 (tracemalloc: Python objects and numpy buffers; numba's NRT counter:
   arrays allocated inside kernels). Not timed otherwise. Its summary gives the layer
   sizes and training rows the later phases and the report use.
2. **kernel**: every rank at once times the fused numba step alone (gradient + SGD update on
   random batches of its shard's size, no loop, no communication): the ceiling the loop is
   measured against.
3. **numpy vs numba** (rank 0 alone, the others idle without spinning): the plain-numpy
   reference step (:mod:`mpitrain.kernels.reference`) against the numba step, for softmax and for
   the MLP, on the same batches, interleaved in blocks.
4. **throughput**, ``--repeats`` times: rank 0 alone trains the same per-rank work on one
   rank (``batch = rows per rank``, same data; ``comm=COMM_SELF``, the others idle), then
   all P ranks train. Throughput = training rows / loop seconds (evaluation excluded);
   medians over the repeats. Weak-scaling efficiency = P-rank / (P × 1-rank throughput).

Definitions: ``step_seconds`` = loop seconds / steps; ``compute_seconds`` (kernels, Python
loop) and ``comm_seconds`` (inside ``reduce``: the collective, including waiting for the
slowest rank; with ``--overlap`` the reductions started during the backward pass count as
compute) per step, averaged over ranks; ``loop_overhead_seconds`` = compute per step minus
the kernel-alone step. ``launch_to_first_step_s`` counts from the launcher's start
(``mpiexec`` / ``srun`` found among the process's ancestors; else the process's own start)
to the end of step 0's local computation, when its message is about to be reduced (its
start with ``--overlap``), slowest rank: start-up plus one step's kernels;
``kernels_compiled`` is how many kernel specialisations numba compiled instead of loading
from its cache in this process (0: warm cache).

JSON (``--json FILE``, rank 0)::

    {"ranks": P, "mpi_library": str, "mpitrain_version": str,
     "workload": {"model", "dims", "samples", "train_rows", "features", "classes",
                  "rows_per_rank", "global_batch", "epochs", "lr", "dtype", "shuffle",
                  "reduce", "compress", "overlap", "shared_memory", "optimizer", "shard",
                  "tensor_parallel", "repeats"},
     "throughput": {"samples_per_second", "samples_per_second_per_rank",
                    "reference_samples_per_second", "speedup", "weak_scaling_efficiency",
                    "runs": [samples/s, ...], "reference_runs": [samples/s, ...]},
     "step": {"steps", "step_seconds", "compute_seconds", "comm_seconds", "comm_fraction",
              "kernel_seconds", "loop_overhead_seconds"},
     "accuracy": {"test_accuracy", "reference_test_accuracy", "train_loss"},
     "kernels": [{"model", "dims", "rows", "numba_samples_per_second",
                  "numpy_samples_per_second", "speedup"}, ...],
     "startup": {"launch_to_first_step_s", "process_start_to_first_step_s", "launcher",
                 "kernels_compiled"},
     "memory": {"rss_mb_per_epoch": [...], "rss_growth_after_first_epoch_mb",
                "window_steps", "traced_peak_bytes", "traced_net_bytes",
                "kernel_allocations", "allocation_free",
                "shard", "parameter_bytes", "optimizer_state_bytes_per_rank",
                "optimizer_state_bytes_unsharded", "optimizer_state_fraction",
                "gradient_message_bytes", "reduced_gradient_bytes_per_rank",
                "tensor_parallel", "parameter_bytes_per_rank", "split_layer_bytes",
                "split_layer_bytes_per_rank", "split_layer_fraction"  # --tensor-parallel
                }}

The second half of ``memory`` is the probe run's ``summary.json`` section: bytes of the
arrays training keeps (the largest rank's), e.g. the optimizer state that ``--shard``
cuts to 1/P.

Times are in seconds, ``*_mb`` in MiB; a value that could not be measured is null.
``allocation_free`` holds when, over the window of steps, tracemalloc (which sees every
Python object and every numpy buffer) shows both the peak and the net growth under
:data:`ALLOCATION_SLACK` bytes above the start (transient floats and array views, a cached
small object; any array of the model's size, or a leak of even one float per step over the
window of up to 200 steps, would exceed it), and no step kernel allocates inside (numba's NRT
counter over one call of each, minus the records it makes for the array arguments:
``kernel_allocations`` = 0).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from mpi4py import MPI

from mpitrain import __version__
from mpitrain.bench import output_file
from mpitrain.bench.probes import StartClock, StepProbe, rss_bytes
from mpitrain.cli import add_config_arguments
from mpitrain.config import TrainConfig, flag, resolve
from mpitrain.data.batches import steps_per_epoch
from mpitrain.data.holdout import make_holdout
from mpitrain.data.sharding import block_range
from mpitrain.errors import UserError, agree, checked, require
from mpitrain.models import BoundModel, make_model

T = TypeVar("T")

ALLOCATION_SLACK = 4096
LR = 0.01  # learning rate of the kernel timings (small: the numbers stay tame)
_MB = 1 << 20

#: TrainConfig fields that are ``bench train`` flags, as ``mpitrain train`` declares them.
CONFIG_OPTIONS = ("samples", "features", "classes", "dtype", "model", "hidden", "seed",
                  "epochs", "lr", "optimizer", "shuffle", "reduce", "compress", "overlap",
                  "shard", "tensor_parallel", "shared_memory")
#: The standard workload where it differs from ``mpitrain train``'s defaults.
WORKLOAD_DEFAULTS = {"samples": 200_000, "features": 64, "classes": 10, "epochs": 2,
                     "shuffle": "local", "optimizer": "sgd"}
#: Options every benchmark run has (no flags): synthetic data, 20% held out, no progress.
FIXED = {"data": "synthetic", "test_fraction": 0.2, "quiet": True}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench train`` (defaults: the standard workload)."""
    parser.epilog = (f"Every run trains on synthetic data, {FIXED['test_fraction']:.0%} of "
                     "--samples held out for testing.")
    add_config_arguments(parser, CONFIG_OPTIONS, defaults=WORKLOAD_DEFAULTS)
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--rows-per-rank", type=int, default=256, metavar="N",
                       help="rows per rank per step; global batch = N x ranks (default: 256)")
    bench.add_argument("--repeats", type=int, default=3, metavar="N",
                       help="timed 1-rank + P-rank run pairs; medians reported (default: 3)")
    bench.add_argument("--kernel-steps", type=int, default=300, metavar="N",
                       help="steps per variant in the kernel and numpy-vs-numba timings "
                       "(default: 300)")
    bench.add_argument("--json", metavar="FILE", help="write the results as JSON (rank 0)")


# ------------------------------------------------------------------------------------------
# helpers


def _workload(args: argparse.Namespace, ranks: int) -> TrainConfig:
    """The checked options: the bench's own, then the config's (UserError on a bad one)."""
    for name in ("rows_per_rank", "repeats", "kernel_steps"):
        value = getattr(args, name)
        require(value >= 1, f"--{flag(name)} must be >= 1 (got {value})")
    return _config(args, ranks)


def _config(args: argparse.Namespace, ranks: int) -> TrainConfig:
    """The TrainConfig of a run on ``ranks`` ranks with ``--rows-per-rank`` rows each,
    checked by the config itself."""
    flags = {name: getattr(args, name) for name in CONFIG_OPTIONS}
    if ranks == 1:  # the 1-rank reference holds the whole model
        flags["tensor_parallel"] = 1
    return resolve(FIXED, {**flags, "batch_size": args.rows_per_rank * ranks})


def _train_rows(config: TrainConfig) -> int:
    """Training rows of a run of ``config``, known before it starts: its holdout's."""
    return make_holdout(config.samples, config.test_fraction, config.seed).n_train


def alone(comm: MPI.Comm, fn: Callable[[], T]) -> T | None:
    """Collective: rank 0 runs ``fn`` while the others wait WITHOUT spinning (an MPI
    barrier busy-polls a core, which would slow rank 0 down when ranks share cores)."""
    result, message = None, None
    if comm.Get_rank() == 0:
        try:
            result = fn()
        except UserError as exc:
            message = str(exc)
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.002)
    agree(comm, message)
    return result


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _run_stats(history: list[dict[str, Any]]) -> dict[str, float]:
    """Totals of one run's epochs: samples/s over the whole loop, per-step split."""
    seconds = sum(h["seconds"] for h in history)
    steps = history[-1]["step"]
    samples = sum(h["samples_per_second"] * h["seconds"] for h in history)
    return {"samples_per_second": samples / seconds, "steps": steps,
            "step_seconds": seconds / steps,
            "compute_seconds": sum(h["compute_seconds"] for h in history) / steps,
            "comm_seconds": sum(h["comm_seconds"] for h in history) / steps,
            "test_accuracy": history[-1].get("test_accuracy", float("nan")),
            "train_loss": history[-1].get("train_loss", float("nan"))}


# ------------------------------------------------------------------------------------------
# phases


def _probe(config: TrainConfig, comm: MPI.Comm, clock: StartClock) -> dict[str, Any]:
    """Phase 1: one P-rank run with the step probe; the job-wide (slowest-rank) figures,
    and the run's layer sizes and training rows (from its summary)."""
    from mpitrain.training import train

    per_epoch = steps_per_epoch(_train_rows(config), config.batch_size)
    start = per_epoch + 2 if config.epochs >= 2 else min(2, per_epoch - 1)
    window = max(0, min(200, (2 * per_epoch if config.epochs >= 2 else per_epoch) - start - 1))
    probe = StepProbe(steps_per_epoch=per_epoch, window_start=start, window=window)
    result = train(config, comm=comm, stop_requested=probe)
    end_rss = rss_bytes()
    first = probe.first_step
    launch = clock.since_launch(first) if first is not None else None
    own = clock.since_process_start(first) if first is not None else None
    compiled = _compiled_kernels()
    rss = [*probe.rss_at_epoch_start, end_rss]
    local = np.array([launch if launch is not None else np.nan,
                      own if own is not None else np.nan, compiled,
                      probe.traced_peak_bytes if probe.traced_peak_bytes is not None else 0,
                      probe.traced_net_bytes if probe.traced_net_bytes is not None else 0,
                      rss[-1] - rss[0]], dtype=np.float64)
    worst = np.empty_like(local)
    comm.Allreduce(local, worst, op=MPI.MAX)
    rss_all = comm.gather(rss, root=0)
    kernel_allocs = _kernel_allocations(np.dtype(config.dtype))
    measured = probe.traced_peak_bytes is not None
    return {
        "startup": {"launch_to_first_step_s": _finite(worst[0]),
                    "process_start_to_first_step_s": _finite(worst[1]),
                    "launcher": clock.launcher, "kernels_compiled": int(worst[2])},
        "memory": {
            "rss_mb_per_epoch": ([round(max(col) / _MB, 2) for col in zip(*rss_all,
                                                                          strict=True)]
                                 if rss_all is not None else None),
            "rss_growth_after_first_epoch_mb": round(float(worst[5]) / _MB, 3),
            "window_steps": window if measured else 0,
            "traced_peak_bytes": int(worst[3]) if measured else None,
            "traced_net_bytes": int(worst[4]) if measured else None,
            "kernel_allocations": kernel_allocs,
            "allocation_free": (bool(worst[3] < ALLOCATION_SLACK
                                     and worst[4] < ALLOCATION_SLACK
                                     and kernel_allocs == 0) if measured else None)},
        "held": result.summary["memory"],
        "probe_test_accuracy": result.history[-1].get("test_accuracy"),
        "dims": [int(d) for d in result.summary["model"]["dims"]],
        "train_rows": int(result.summary["data"]["train_rows"]),
    }


def _compiled_kernels() -> int:
    """Kernel specialisations numba compiled (rather than loaded from its cache) so far."""
    from mpitrain.kernels import backward, network, optimizers, reduce, shared

    kernels = [network.network_grad, network.network_loss, network.network_predict,
               backward.step_gradient, backward.forward_loss, backward.backward_layer,
               optimizers.sgd_update, optimizers.momentum_update, optimizers.adam_update,
               reduce.add_into, reduce.scale_inplace, shared.sum_slots, shared.sum_range]
    return sum(sum(kernel.stats.cache_misses.values()) for kernel in kernels)


def _kernel_allocations(dtype: np.dtype) -> int | None:
    """numba runtime allocations made INSIDE the step kernels, summed over one call each.

    NRT counts one small record per array argument when Python calls a kernel (it wraps the
    caller's array; no data is allocated), so that number is subtracted: 0 means the
    kernels allocate nothing.
    """
    from numba.core.runtime import _nrt_python, rtsys

    from mpitrain.kernels import backward, compress, optimizers, reduce, shared
    from mpitrain.kernels.network import SOFTMAX_XENT, workspace_size

    try:
        if not _nrt_python.memsys_stats_enabled():
            _nrt_python.memsys_enable_stats()
    except AttributeError:
        return None
    dims = np.array([3, 4, 2], dtype=np.int64)
    n = 3 * 4 + 4 + 4 * 2 + 2
    p, m = np.zeros(n, dtype=dtype), np.zeros(n + 4, dtype=dtype)
    s1, s2, s3 = (np.zeros(n, dtype=dtype) for _ in range(3))
    X, y = np.ones((5, 3), dtype=dtype), np.zeros(5, dtype=np.int64)
    rows = np.arange(5, dtype=np.int64)
    work = np.empty(workspace_size(dims, 5), dtype=dtype)
    slots = np.zeros((2, 2, n + 4), dtype=dtype)
    span = np.zeros((2, n + 4), dtype=dtype)  # one slot per rank (the node-shared update)
    calls: list[tuple[int, Callable[[], object]]] = [
        (7, lambda: backward.step_gradient(p, m, dims, SOFTMAX_XENT, X, y, rows, work)),
        (7, lambda: backward.forward_loss(p, m, dims, SOFTMAX_XENT, X, y, rows, work)),
        (4, lambda: backward.backward_layer(p, m, dims, work, 5, 1)),
        (4, lambda: backward.backward_layer(p, m, dims, work, 5, 0)),
        (2, lambda: optimizers.sgd_update(p, m, 1.0, 0.1, 0.0)),
        (3, lambda: optimizers.momentum_update(p, m, s1, 1.0, 0.1, 0.9, 0.0, False)),
        (4, lambda: optimizers.adam_update(p, m, s2, s3, 1.0, 0.1, 0.9, 0.999, 1e-8, 0.0, 1)),
        (2, lambda: shared.sum_slots(slots, 1, m)),
        (2, lambda: shared.sum_range(span, 2, m[:n])),
        (2, lambda: reduce.add_into(m, m)),
    ]
    if dtype == np.dtype(np.float32):
        words = np.zeros(n + 4, dtype=np.uint16)
        for codec in compress.CODECS.values():
            calls += [(2, lambda c=codec: compress.encode(m, words, c, 1.0)),
                      (2, lambda c=codec: compress.decode_add(words, m, c)),
                      (2, lambda c=codec: compress.decode(words, m, c, 1.0))]
    extra = 0
    for arrays, call in calls:
        call()  # compiled / loaded already; once more so nothing lazy is counted
        before = rtsys.get_allocation_stats().alloc
        call()
        extra += rtsys.get_allocation_stats().alloc - before - arrays
    return extra


def _finite(value: float) -> float | None:
    return round(float(value), 3) if math.isfinite(value) else None


def synthetic_rows(rows: int, features: int, outputs: int, kind: int, dtype: np.dtype,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random rows and labels of the kind the loss ``kind`` takes (``outputs`` classes)."""
    from mpitrain.kernels.network import SQUARED

    rng = np.random.default_rng([seed, 0xBE7C])
    X = rng.standard_normal((rows, features)).astype(dtype)
    if kind == SQUARED:
        return X, rng.standard_normal(rows).astype(dtype)
    return X, rng.integers(0, max(2, outputs) if outputs > 1 else 2, size=rows).astype(np.int64)


def _kernel_step_seconds(args: argparse.Namespace, config: TrainConfig, comm: MPI.Comm,
                         dims: list[int], rows: int) -> float:
    """Phase 2: the fused numba step alone on ``rows`` random rows of the run's layer sizes
    ``dims``, on every rank at once; median seconds/step."""
    return kernel_step_seconds(comm, dims=dims, model=config.model,
                               dtype=np.dtype(config.dtype), seed=config.seed, rows=rows,
                               batch=args.rows_per_rank, steps=args.kernel_steps)


def kernel_step_seconds(comm: MPI.Comm, *, dims: list[int] | tuple[int, ...], model: str,
                        dtype: np.dtype, seed: int, rows: int, batch: int,
                        steps: int, update: tuple[int, int] | None = None) -> float:
    """Collective: the fused numba step (gradient + SGD update) alone, ``batch`` of
    ``rows`` random rows per step, layer sizes ``dims``, on every rank at once; the mean
    over ranks of each rank's median seconds/step (``bench train`` and ``plan``).
    ``update``: the slice ``[lo, hi)`` of the parameters this rank updates (the
    node-shared update, ``--reduce shared-update``: 1/P of them); None: all."""
    from mpitrain.kernels.backward import step_gradient
    from mpitrain.kernels.network import workspace_size
    from mpitrain.kernels.optimizers import sgd_update

    bound = _dense_model(model, list(dims))
    kind = bound.spec[0]
    X, y = synthetic_rows(rows, dims[0], dims[-1], kind, dtype, seed + comm.Get_rank())
    params = bound.init_params(seed=seed, dtype=dtype)
    message = np.zeros(bound.size + 4, dtype=dtype)
    batch = min(batch, rows)
    work = np.empty(workspace_size(list(dims), batch), dtype=dtype)
    order = np.random.default_rng(seed).permutation(rows).astype(np.int64)
    dims_array = np.asarray(dims, dtype=np.int64)
    lo, hi = update if update is not None else (0, bound.size)
    updated, reduced = params[lo:hi], message[lo:]

    def step(index: int) -> None:
        at = (index * batch) % max(1, rows - batch + 1)
        step_gradient(params, message, dims_array, kind, X, y, order[at:at + batch], work)
        sgd_update(updated, reduced, 1.0 / batch, 0.0, 0.0)  # lr 0: stable numbers

    return median_call_seconds(comm, step, steps)


def median_call_seconds(comm: MPI.Comm, call: Callable[[int], None], calls: int) -> float:
    """Collective: ``call(i)`` for ``i`` in ``0..calls-1`` in 5 timed blocks, on every rank
    at once; the mean over ranks of each rank's median seconds per call."""
    blocks = []
    count = max(1, calls // 5)
    comm.Barrier()
    for block in range(5):
        start = time.perf_counter()
        for i in range(count):
            call(block * count + i)
        blocks.append((time.perf_counter() - start) / count)
    local = np.array([statistics.median(blocks)])
    comm.Allreduce(MPI.IN_PLACE, local, op=MPI.SUM)
    return float(local[0]) / comm.Get_size()


def _dense_model(name: str, dims: list[int]) -> BoundModel:
    """The built-in model ``name`` with layer sizes ``dims``."""
    model = make_model(name, hidden=tuple(dims[1:-1]) or (1,))
    return BoundModel(model, n_features=dims[0], n_classes=max(2, dims[-1]))


def _numpy_vs_numba(args: argparse.Namespace, config: TrainConfig,
                    rows: int) -> list[dict[str, Any]]:
    """Phase 3 (rank 0 alone): plain-numpy reference step against the numba step, for
    softmax and the MLP on the workload's features and classes, on ``rows`` rows."""
    from mpitrain.kernels.backward import step_gradient
    from mpitrain.kernels.network import SOFTMAX_XENT, workspace_size
    from mpitrain.kernels.optimizers import sgd_update
    from mpitrain.kernels.reference import reference_grad, reference_sgd

    dtype = np.dtype(config.dtype)
    X, y = synthetic_rows(rows, config.features, config.classes, SOFTMAX_XENT, dtype, config.seed)
    batch = min(args.rows_per_rank, rows)
    order = np.random.default_rng(config.seed).permutation(rows).astype(np.int64)
    out = []
    for model in ("softmax", "mlp"):
        dense = BoundModel(make_model(model, hidden=config.hidden),
                           n_features=config.features, n_classes=config.classes)
        dims = dense.model.dims(**dense.counts)
        dims_array = np.asarray(dims, dtype=np.int64)
        p_numba = dense.init_params(seed=config.seed, dtype=dtype)
        p_numpy = p_numba.copy()
        message = np.zeros(dense.size + 4, dtype=dtype)
        work = np.empty(workspace_size(dims, batch), dtype=dtype)

        def numba_step(at: int, p: np.ndarray = p_numba, message: np.ndarray = message,
                       work: np.ndarray = work, dims_array: np.ndarray = dims_array) -> None:
            step_gradient(p, message, dims_array, SOFTMAX_XENT, X, y, order[at:at + batch],
                          work)
            sgd_update(p, message, 1.0 / batch, LR, 0.0)

        def numpy_step(at: int, p: np.ndarray = p_numpy, dims: tuple[int, ...] = dims) -> None:
            grad, _, _ = reference_grad(p, dims, SOFTMAX_XENT, X, y, order[at:at + batch])
            reference_sgd(p, grad, 1.0 / batch, LR, 0.0)

        times: dict[str, list[float]] = {"numba": [], "numpy": []}
        blocks = 10
        count = max(1, args.kernel_steps // blocks)
        numba_step(0)
        numpy_step(0)
        for block in range(blocks):
            for name, step in (("numpy", numpy_step), ("numba", numba_step)):
                start = time.perf_counter()
                for i in range(count):
                    step(((block * count + i) * batch) % max(1, rows - batch + 1))
                times[name].append((time.perf_counter() - start) / count)
        numba_sps = batch / statistics.median(times["numba"])
        numpy_sps = batch / statistics.median(times["numpy"])
        out.append({"model": model, "dims": list(dims), "rows": batch,
                    "numba_samples_per_second": round(numba_sps),
                    "numpy_samples_per_second": round(numpy_sps),
                    "speedup": round(numba_sps / numpy_sps, 3)})
    return out


def _throughput(args: argparse.Namespace, config: TrainConfig,
                comm: MPI.Comm) -> dict[str, Any]:
    """Phase 4: alternating 1-rank reference and P-rank runs; per-run figures."""
    from mpitrain.training import train

    size = comm.Get_size()
    runs: list[dict[str, float]] = []
    references: list[dict[str, float]] = []
    for _ in range(args.repeats):
        if size > 1:
            reference = alone(comm, lambda: _run_stats(
                train(_config(args, 1), comm=MPI.COMM_SELF).history))
            if reference is not None:
                references.append(reference)
        stats = _run_stats(train(config, comm=comm).history)
        every = comm.allgather(stats)
        runs.append({key: (statistics.fmean(s[key] for s in every)
                           if key in ("compute_seconds", "comm_seconds") else stats[key])
                     for key in stats})
    if size == 1:
        references = runs
    return {"runs": runs, "references": references}


# ------------------------------------------------------------------------------------------
# report


def _report(args: argparse.Namespace, config: TrainConfig, comm: MPI.Comm,
            probe: dict[str, Any], kernel_seconds: float,
            kernels: list[dict[str, Any]] | None, timed: dict[str, Any]) -> dict[str, Any]:
    """The JSON document (see the module docstring)."""
    size = comm.Get_size()
    runs, references = timed["runs"], timed["references"]
    sps = _median([r["samples_per_second"] for r in runs])
    ref = _median([r["samples_per_second"] for r in references])
    median_run = sorted(runs, key=lambda r: r["samples_per_second"])[len(runs) // 2]
    compute = median_run["compute_seconds"]
    comm_s = median_run["comm_seconds"]
    step = median_run["step_seconds"]
    return {
        "ranks": size,
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0].strip(),
        "mpitrain_version": __version__,
        "workload": {"model": config.model, "dims": probe["dims"], "samples": config.samples,
                     "train_rows": probe["train_rows"], "features": config.features,
                     "classes": config.classes, "rows_per_rank": args.rows_per_rank,
                     "global_batch": config.batch_size, "epochs": config.epochs,
                     "lr": config.lr, "dtype": config.dtype, "shuffle": config.shuffle,
                     "reduce": config.reduce, "compress": config.compress,
                     "overlap": config.overlap, "shared_memory": config.shared_memory,
                     "optimizer": config.optimizer, "shard": config.shard,
                     "tensor_parallel": config.tensor_parallel, "repeats": args.repeats},
        "throughput": {
            "samples_per_second": round(sps),
            "samples_per_second_per_rank": round(sps / size),
            "reference_samples_per_second": round(ref) if ref else None,
            "speedup": round(sps / ref, 3) if ref else None,
            "weak_scaling_efficiency": round(sps / (size * ref), 3) if ref else None,
            "runs": [round(r["samples_per_second"]) for r in runs],
            "reference_runs": [round(r["samples_per_second"]) for r in references]},
        "step": {"steps": int(median_run["steps"]), "step_seconds": step,
                 "compute_seconds": compute, "comm_seconds": comm_s,
                 "comm_fraction": round(comm_s / step, 4) if step > 0 else None,
                 "kernel_seconds": kernel_seconds,
                 "loop_overhead_seconds": compute - kernel_seconds},
        "accuracy": {"test_accuracy": median_run["test_accuracy"],
                     "reference_test_accuracy": (references[len(references) // 2][
                         "test_accuracy"] if references else None),
                     "train_loss": median_run["train_loss"]},
        "kernels": kernels,
        "startup": probe["startup"],
        "memory": {**probe["memory"], **probe["held"]},
    }


def _table(doc: dict[str, Any]) -> str:
    w, t, s = doc["workload"], doc["throughput"], doc["step"]
    us = 1e6
    lines = [
        f"# bench train: {doc['ranks']} ranks, {w['model']} {w['dims']}, {w['train_rows']} "
        f"training rows, {w['rows_per_rank']} rows/rank/step, {w['epochs']} epochs, "
        f"{w['dtype']}, shuffle {w['shuffle']}, reduce {w['reduce']}, compress "
        f"{w['compress']}, overlap {w['overlap']}, shared memory {w['shared_memory']}; "
        f"medians of {w['repeats']} runs",
        f"{'throughput':<34} {t['samples_per_second']:>12,} samples/s  "
        f"({t['samples_per_second_per_rank']:,} per rank)",
    ]
    if t["reference_samples_per_second"]:
        lines.append(f"{'1-rank reference (same per-rank work)':<34} "
                     f"{t['reference_samples_per_second']:>12,} samples/s")
        lines.append(f"{'speedup / weak-scaling efficiency':<34} {t['speedup']:>12.3f}x  "
                     f"{100 * t['weak_scaling_efficiency']:.1f}%")
    lines.append(f"{'step':<34} {s['step_seconds'] * us:>12.1f} us  = compute "
                 f"{s['compute_seconds'] * us:.1f} + comm {s['comm_seconds'] * us:.1f} "
                 f"({100 * (s['comm_fraction'] or 0):.1f}% comm)")
    lines.append(f"{'fused kernel alone':<34} {s['kernel_seconds'] * us:>12.1f} us/step  "
                 f"(loop overhead {s['loop_overhead_seconds'] * us:.1f} us)")
    a = doc["accuracy"]
    lines.append(f"{'test accuracy':<34} {a['test_accuracy']:>12.4f}  (1-rank reference "
                 f"{a['reference_test_accuracy'] or float('nan'):.4f})")
    for k in doc["kernels"] or []:
        lines.append(f"{'numba vs numpy step, ' + k['model']:<34} "
                     f"{k['numba_samples_per_second']:>12,} vs "
                     f"{k['numpy_samples_per_second']:,} samples/s = {k['speedup']:.2f}x")
    st, m = doc["startup"], doc["memory"]
    launch = st["launch_to_first_step_s"]
    lines.append(f"{'launch to first step':<34} "
                 f"{'n/a' if launch is None else f'{launch:.2f} s':>12}  (from "
                 f"{st['launcher'] or 'process start'}; kernels compiled: "
                 f"{st['kernels_compiled']})")
    lines.append(f"{'RSS per epoch (MiB, max over ranks)':<34} {m['rss_mb_per_epoch']}  "
                 f"growth after epoch 1: {m['rss_growth_after_first_epoch_mb']} MiB")
    lines.append(f"{'optimizer state per rank (MiB)':<34} "
                 f"{m['optimizer_state_bytes_per_rank'] / _MB:>12.2f}  ({w['optimizer']}, "
                 f"--shard {w['shard']}; unsharded "
                 f"{m['optimizer_state_bytes_unsharded'] / _MB:.2f} MiB, fraction "
                 f"{m['optimizer_state_fraction']:.3f}; parameters "
                 f"{m['parameter_bytes'] / _MB:.2f} MiB)")
    if w["tensor_parallel"] > 1:
        lines.append(f"{'parameters per rank (MiB)':<34} "
                     f"{m['parameter_bytes_per_rank'] / _MB:>12.2f}  (--tensor-parallel "
                     f"{w['tensor_parallel']}: split layers {m['split_layer_fraction']:.3f} "
                     f"of {m['split_layer_bytes'] / _MB:.2f} MiB)")
    verdict = {True: "none", False: "FOUND", None: "n/a"}[m["allocation_free"]]
    lines.append(f"{'allocations in ' + str(m['window_steps']) + ' steps':<34} "
                 f"{verdict:>12}  (traced peak {m['traced_peak_bytes']} B, net "
                 f"{m['traced_net_bytes']} B; inside kernels: {m['kernel_allocations']})")
    return "\n".join(lines)


def _write(path: str, doc: dict[str, Any]) -> None:
    try:
        output_file(path).write_text(json.dumps(doc, indent=1) + "\n")
    except OSError as exc:
        raise UserError(f"--json could not write {path!r} ({exc.strerror})") from exc


def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """Collective: every phase (see the module docstring); rank 0 prints and writes JSON."""
    clock = StartClock()  # first: the probe's launch time needs it before any work
    config = checked(comm, _workload, args, comm.Get_size())
    probe = _probe(config, comm, clock)
    n_train = probe["train_rows"]
    start, stop = block_range(n_train, comm.Get_size(), comm.Get_rank())  # this rank's shard
    kernel = _kernel_step_seconds(args, config, comm, probe["dims"], max(1, stop - start))
    kernels = alone(comm, lambda: _numpy_vs_numba(args, config, n_train))
    timed = _throughput(args, config, comm)
    checked(comm, _finish, args, config, comm, probe, kernel, kernels, timed)
    return 0


def _finish(args: argparse.Namespace, config: TrainConfig, comm: MPI.Comm,
            probe: dict[str, Any], kernel: float, kernels: list[dict[str, Any]] | None,
            timed: dict[str, Any]) -> None:
    """Rank 0: print the table and write the JSON (a failure is agreed by the caller)."""
    if comm.Get_rank() != 0:
        return
    doc = _report(args, config, comm, probe, kernel, kernels, timed)
    print(_table(doc), flush=True)
    if args.json:
        _write(args.json, doc)
        print(f"wrote {args.json}", flush=True)
