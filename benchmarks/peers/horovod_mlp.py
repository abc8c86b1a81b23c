"""The standard workload with Horovod (PyTorch frontend, MPI), one thread per rank.

    mpiexec -n 2 PYTHON benchmarks/peers/horovod_mlp.py [--epochs 2 ...]

PYTHON needs horovod[pytorch] (built with MPI), torch, numpy and mpi4py (for mpitrain's
data loader). Same model, data, batch, SGD lr 0.1 and epochs as ``mpitrain bench train``.
Prints samples/s (training loop only) and test accuracy; exits 0 with "skipped: ..." when
Horovod, torch or mpi4py is missing. Not a dependency of mpitrain.
"""

from __future__ import annotations

import sys
import time

from common import load, parser, report, skip

NAME = "horovod"


def main() -> int:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args()
    try:
        import torch
    except ImportError:
        return skip(NAME, "PyTorch is not installed in this Python (pip install torch)")
    try:
        import horovod.torch as hvd
    except ImportError:
        return skip(NAME, "Horovod is not installed in this Python (HOROVOD_WITH_PYTORCH=1 "
                    "HOROVOD_WITH_MPI=1 pip install horovod)")
    try:
        from mpi4py import MPI
    except ImportError:
        return skip(NAME, "mpi4py is not installed in this Python (pip install mpi4py)")
    import numpy as np

    comm = MPI.COMM_WORLD
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    torch.set_num_threads(1)
    data = load(args, comm)
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(args.features, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, args.classes))
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=args.lr),
                                         named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    loss_fn = torch.nn.CrossEntropyLoss()
    X = torch.from_numpy(data.train.X)
    y = torch.from_numpy(data.train.y)
    steps = -(-data.train.n_total // (args.rows_per_rank * size))
    rng = np.random.default_rng([args.seed, rank])
    seconds, samples = [], []
    for _ in range(args.epochs):
        order = torch.from_numpy(rng.permutation(len(y)))
        bounds = (np.arange(steps + 1) * len(y)) // steps
        comm.Barrier()
        start = time.perf_counter()
        for step in range(steps):
            rows = order[bounds[step]:bounds[step + 1]]
            optimizer.zero_grad()
            loss = loss_fn(model(X[rows]), y[rows])
            loss.backward()
            optimizer.step()
        seconds.append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
        samples.append(data.train.n_total)
    with torch.no_grad():
        correct = int((model(torch.from_numpy(data.test.X)).argmax(1)
                       == torch.from_numpy(data.test.y)).sum())
    accuracy = comm.allreduce(correct) / data.test.n_total
    report(NAME, args, comm, seconds, samples, accuracy,
           {"horovod_version": getattr(sys.modules.get("horovod"), "__version__", None),
            "torch_version": torch.__version__, "threads": 1})
    return 0


if __name__ == "__main__":
    sys.exit(main())
