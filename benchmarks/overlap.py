"""Does ``--overlap`` pay on this machine? One training step of an MLP, timed the ways the
sync strategy can run it, variants interleaved.

Run under the launcher (and once more with MPICH's progress thread to test that
mechanism)::

    mpiexec -n 2 python benchmarks/overlap.py [--dims 784,1024,1024,10]
        [--rows 128] [--dtype float32] [--steps 20] [--repeats 5] [--json FILE]
    MPIR_CVAR_ASYNC_PROGRESS=1 mpiexec -n 2 python benchmarks/overlap.py ...

Variants (each a block of ``--steps`` steps on random rows; rounds interleave them; the
time is the slowest rank's, median over ``--repeats`` rounds):

- ``compute``: the fused gradient kernel alone, no communication (the floor);
- ``plain``: the fused kernel, then the persistent step allreduce ``--reduce auto``
  (what training runs without ``--overlap``);
- ``plain-mpi``: the same with ``--reduce mpi``;
- ``overlap-mpi`` / ``overlap-ring``: what ``--overlap`` runs: forward once, backward layer
  by layer from the top, each layer's slice reduced nonblocking as soon as it is written,
  the requests tested between layer kernels, all waited for at the end;
- ``serial-mpi``: the split kernels with each layer's reduction waited for at once (the
  split's own cost, no overlap possible).

A progress probe then starts ``Iallreduce`` of the whole message and times its ``Wait``
at once and after one gradient kernel with no MPI call in between: equal waits mean MPI
moved nothing during the kernel. It also checks that every variant's reduced message is
bitwise the same as ``plain-mpi``'s on a fixed batch (the exactness ``--overlap``
promises). Rank 0 prints microseconds per
step and each variant's ratio to ``plain``, the MPI thread level, whether MPICH's
progress thread was asked for, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from mpitrain.runtime.launch import configure_threads

configure_threads()  # before numpy/numba load, as ``python -m mpitrain`` does

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from mpitrain.collectives import Allreducer, start_allreduce  # noqa: E402
from mpitrain.models import BoundModel, make_model  # noqa: E402
from mpitrain.models.gradient import BatchGradient  # noqa: E402

TAIL = 4


def _model(dims: list[int]) -> BoundModel:
    return BoundModel(make_model("mlp", hidden=tuple(dims[1:-1])), n_features=dims[0],
                      n_classes=dims[-1])


class Step:
    """The step variants over one model, batch size and communicator."""

    def __init__(self, dims: list[int], rows: int, dtype: np.dtype, comm: MPI.Comm) -> None:
        self.comm = comm
        model = _model(dims)
        self.gradient = BatchGradient(model, max_rows=rows, dtype=dtype)
        self.params = model.init_params(seed=0, dtype=dtype)
        rng = np.random.default_rng(1 + comm.Get_rank())
        self.X = rng.standard_normal((max(4 * rows, 512), dims[0])).astype(dtype)
        self.y = rng.integers(0, dims[-1], len(self.X)).astype(np.int64)
        self.rows = np.arange(rows, dtype=np.int64)
        self.n = model.size
        count = self.n + TAIL
        self.reducers = {name: Allreducer(count, dtype, comm, algorithm=algorithm,
                                          exact_tail=TAIL, batch_size=rows)
                         for name, algorithm in (("plain", "auto"), ("plain-mpi", "mpi"))}
        self.message = np.zeros(count, dtype=dtype)
        self.scratch = np.zeros(count, dtype=dtype)  # (the probe's kernel output)
        layers = self.gradient.layers
        self.buckets = []
        for layer in range(layers - 1, -1, -1):
            start, stop = self.gradient.layer_slice(layer)
            stop = count if layer == layers - 1 else stop
            self.buckets.append((layer, self.message[start:stop]))

    def run(self, variant: str) -> np.ndarray:
        g, p = self.gradient, self.params
        if variant == "compute":
            g.step(p, self.message, self.X, self.y, self.rows)
            return self.message
        if variant.startswith("plain"):
            reducer = self.reducers[variant]
            g.step(p, reducer.buffer(), self.X, self.y, self.rows)
            return reducer()
        algorithm = variant.split("-")[1]
        message = self.message
        g.forward(p, message, self.X, self.y, self.rows)
        handles = []
        for layer, bucket in self.buckets:
            g.backward(p, message, self.rows.size, layer)
            for handle in handles:
                handle.test()
            handle = start_allreduce(bucket, self.comm, algorithm=algorithm, op="sum")
            if variant.startswith("serial"):
                handle.wait()
            else:
                handles.append(handle)
        for handle in handles:
            handle.wait()
        return message


def progress_probe(step: Step, repeats: int) -> dict[str, float]:
    """Does MPI move a nonblocking reduction while a kernel runs? The whole message's
    ``Iallreduce`` is waited for at once (``wait_idle``) or after one fused gradient kernel
    with no MPI call (``wait_after_kernel``); medians of the shortest wait over the ranks
    (the rank whose kernel ended last: the others' waits include its lateness),
    microseconds. Without progress during the kernel the second wait is as long as the
    first."""
    comm, message = step.comm, step.message
    idle, after = [], []
    for _ in range(repeats):
        for waits, compute in ((idle, False), (after, True)):
            comm.Barrier()
            handle = start_allreduce(message, comm, algorithm="mpi", op="sum")
            if compute:
                step.gradient.step(step.params, step.scratch, step.X, step.y, step.rows)
            start = time.perf_counter()
            handle.wait()
            took = np.array([time.perf_counter() - start])
            comm.Allreduce(MPI.IN_PLACE, took, op=MPI.MIN)
            waits.append(float(took[0]) * 1e6)
    return {"wait_idle_us": statistics.median(idle),
            "wait_after_kernel_us": statistics.median(after)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="784,1024,1024,10")
    parser.add_argument("--rows", type=int, default=128, help="rows per rank per step")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants",
                        default="compute,plain,plain-mpi,overlap-mpi,overlap-ring,serial-mpi")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank0 = comm.Get_rank() == 0
    dims = [int(v) for v in args.dims.split(",")]
    variants = args.variants.split(",")
    load = os.getloadavg()[0]
    step = Step(dims, args.rows, np.dtype(args.dtype), comm)
    reference = step.run("plain-mpi").copy()
    exact = {}
    for variant in variants:
        if variant != "compute":
            exact[variant] = bool(np.array_equal(step.run(variant), reference))
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for variant in variants:
            step.run(variant)  # (warm: the first call of a block pays for its buffers)
            comm.Barrier()
            start = time.perf_counter()
            for _ in range(args.steps):
                step.run(variant)
            took = np.array([(time.perf_counter() - start) / args.steps])
            comm.Allreduce(MPI.IN_PLACE, took, op=MPI.MAX)
            times[variant].append(float(took[0]))
    median = {v: statistics.median(t) * 1e6 for v, t in times.items()}
    probe = progress_probe(step, args.repeats)
    result = {
        "dims": dims, "params": step.n, "rows_per_rank": args.rows, "dtype": args.dtype,
        "ranks": comm.Get_size(), "steps": args.steps, "repeats": args.repeats,
        "thread_level": MPI.Query_thread(),
        "async_progress": os.environ.get("MPIR_CVAR_ASYNC_PROGRESS", "0"),
        "plain_algorithm": step.reducers["plain"].algorithm,
        "median_us": median, "runs_us": {v: [t * 1e6 for t in ts] for v, ts in times.items()},
        "ratio_to_plain": {v: median["plain"] / m for v, m in median.items()}
        if "plain" in median else {},
        "bitwise_equal_to_plain_mpi": exact, "progress_probe": probe,
        "load_before": load, "load_after": os.getloadavg()[0]}
    if rank0:
        print(f"dims {dims} ({step.n:,} params), {args.rows} rows/rank, {args.dtype}, "
              f"{comm.Get_size()} ranks, thread level {result['thread_level']}, "
              f"MPIR_CVAR_ASYNC_PROGRESS={result['async_progress']}, plain = "
              f"{result['plain_algorithm']}, load {load:.1f} -> {result['load_after']:.1f}")
        for v in variants:
            ratio = result["ratio_to_plain"].get(v, float("nan"))
            print(f"  {v:13s} {median[v]:10.0f} us/step  plain/this {ratio:5.2f}  "
                  f"exact {exact.get(v, '-')}")
        print(f"  progress probe: Iallreduce of the message waited for at once "
              f"{probe['wait_idle_us']:.0f} us, after a kernel with no MPI call "
              f"{probe['wait_after_kernel_us']:.0f} us")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
    for reducer in step.reducers.values():
        reducer.close()


if __name__ == "__main__":
    main()
