"""What one sparse logistic step costs a rank, part by part: the gradient (with its touched
rows), the row reduction and the optimizer, as the sync strategy calls them, on 1 or P ranks
(README, "2 ranks >= 90% of the two-independent-runs ceiling").

    python benchmarks/sparse/step_parts.py --data wide.svm
    mpiexec -n 2 python benchmarks/sparse/step_parts.py --data wide.svm

Rank ``r`` of ``P`` takes the ``r``-th of ``P`` equal blocks of lines of the libsvm file and
steps through it ``--batch-size`` rows at a time (its share of the global batch), updating
the model with ``--optimizer`` (momentum 0.9 or plain SGD, lr 0.1). ``--path full`` times
what a step did before the rows step: the whole-gradient step kernel, then the sorted
touched rows, the reduction into its own message (not in place) and the update over all
weights. Prints, on rank 0, the fastest and the median microseconds of each part over
``--steps`` steps after ``--warmup``.

``--reduce`` picks the reduction on P ranks: ``auto`` (the thresholds of
:mod:`mpitrain.collectives.sparse`, as training does), ``bounded`` (the one-exchange path
whatever the payload), ``per-step`` (the counts, then ``Allgatherv``, whatever the payload)
or ``dense`` (the whole message's allreduce; the next step then zeroes the whole gradient,
as the sync strategy's dense steps do): the whole step of each path, what the thresholds
are set from (``--batch-size`` 32, 128, 512 are the 2-rank job's batches 64, 256, 1024).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mpi4py import MPI

from mpitrain.collectives import Allreducer
from mpitrain.collectives.sparse import SparseRowAllreducer
from mpitrain.kernels.network import BINARY_XENT
from mpitrain.kernels.optimizers import momentum_update, sgd_update, sgd_update_rows
from mpitrain.kernels.sparse import batch_columns, sparse_rows_step, sparse_step

PARTS = ("gradient", "reduction", "optimizer", "step")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--features", type=int, default=2**18)
    parser.add_argument("--batch-size", type=int, default=32, help="rows per rank and step")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--optimizer", choices=("momentum", "sgd"), default="momentum")
    parser.add_argument("--path", choices=("rows", "full"), default="rows")
    parser.add_argument("--reduce", choices=("auto", "bounded", "per-step", "dense"),
                        default="auto")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    from sklearn.datasets import load_svmlight_file

    args = parse(argv)
    comm = MPI.COMM_WORLD
    size, rank = comm.Get_size(), comm.Get_rank()
    dtype, d, batch = np.dtype(args.dtype), args.features, args.batch_size
    X, y = load_svmlight_file(args.data, n_features=d)
    mine = slice(rank * X.shape[0] // size, (rank + 1) * X.shape[0] // size)
    X, y = X[mine], (y[mine] > 0).astype(np.int64)
    Xa = (X.data.astype(dtype), X.indices.astype(np.int32), X.indptr.astype(np.int64))
    spec = np.array([BINARY_XENT, d, 1], dtype=np.int64)
    params, velocity = np.zeros(d + 1, dtype), np.zeros(d + 1, dtype)
    work = np.zeros(2 * batch, dtype)
    mark, touched = np.zeros(d, np.uint8), np.zeros(d, np.int64)
    dense = Allreducer(d + 1 + 4, dtype, comm)
    bound = batch * int(np.diff(Xa[2]).max())
    forced = {"auto": None, "bounded": np.inf, "per-step": np.inf}
    rows_reducer = (SparseRowAllreducer(dense, rows=d, width=1, comm=comm,
                                        max_touched=None if args.reduce == "per-step" else bound,
                                        in_place=args.path == "rows",
                                        distinct_rows=args.optimizer == "sgd",
                                        up_to=forced[args.reduce])
                    if size > 1 and args.reduce != "dense" else None)
    n, held, scale = len(y) - batch, -1, 1.0 / (batch * size)
    times = np.zeros((args.steps, len(PARTS)))
    for step in range(args.warmup + args.steps):
        first = (step * batch) % n
        rows = np.arange(first, first + batch, dtype=np.int64)
        t0 = time.perf_counter()
        message = dense.buffer()
        if args.path == "rows":
            held = sparse_rows_step(params, message, Xa, y, rows, work, spec, mark, touched,
                                    held)
        else:
            sparse_step(params, message, Xa, y, rows, work, spec)
            held = batch_columns(Xa, rows, mark, touched) if size > 1 else 0
        t1 = time.perf_counter()
        grad = rows_reducer(message, touched[:held]) if rows_reducer else dense()
        union = rows_reducer.rows_written if rows_reducer else touched[:held]
        if union is None or (size > 1 and rows_reducer is None):  # a dense step
            union, held = None, -1  # (it may have written the message: zero it all)
        elif grad is message:  # (in place: the message is non-zero in all of the union)
            touched[: union.size] = union
            held = union.size
        t2 = time.perf_counter()
        if args.optimizer == "momentum":
            momentum_update(params, grad, velocity, scale, 0.1, 0.9, 0.0, False)
        elif args.path == "rows" and union is not None:
            sgd_update_rows(params, grad, union, union.size, 1, d, scale, 0.1, 0.0)
        else:
            sgd_update(params, grad, scale, 0.1, 0.0)
        t3 = time.perf_counter()
        if step >= args.warmup:
            times[step - args.warmup] = (t1 - t0, t2 - t1, t3 - t2, t3 - t0)
    if rows_reducer is not None:
        rows_reducer.close()
    dense.close()
    result = {part: (float(times[:, i].min() * 1e6), float(np.median(times[:, i]) * 1e6))
              for i, part in enumerate(PARTS)}
    if rank == 0:
        how = "" if rows_reducer is None else (
            f", {rows_reducer.transport} {rows_reducer.sparse_steps} sparse / "
            f"{rows_reducer.dense_steps} dense steps")
        print(f"{size} rank(s), {args.dtype}, {args.optimizer}, path {args.path}, batch "
              f"{batch}, reduce {args.reduce}{how}: " + "; ".join(
            f"{part} {fast:.1f} / {mid:.1f} us" for part, (fast, mid) in result.items()))
    return result


if __name__ == "__main__":
    main()
