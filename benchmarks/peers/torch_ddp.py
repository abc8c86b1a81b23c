"""The standard workload with PyTorch DistributedDataParallel (gloo, CPU, one thread/rank).

    mpiexec -n 2 PYTHON benchmarks/peers/torch_ddp.py [--epochs 2 ...]

PYTHON needs torch, numpy and mpi4py (mpi4py only provides ranks and loads mpitrain's data;
gradients go through torch.distributed's gloo backend, as DDP users run it on CPUs). The
model, data, batch (256 rows per rank per step, local shuffle), SGD lr 0.1 and epochs match
``mpitrain bench train``. Prints samples/s (training loop only) and test accuracy; exits 0
with "skipped: ..." when torch or mpi4py is missing. Not a dependency of mpitrain.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from common import load, parser, report, skip

NAME = "torch_ddp"


def main() -> int:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args()
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        return skip(NAME, "PyTorch is not installed in this Python (pip install torch)")
    try:
        from mpi4py import MPI
    except ImportError:
        return skip(NAME, "mpi4py is not installed in this Python (pip install mpi4py)")
    import numpy as np

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    torch.set_num_threads(1)
    port = None
    if rank == 0:
        with socket.socket() as probe:  # a free port on this machine for gloo's store
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(comm.bcast(port, root=0))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    data = load(args, comm)
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(args.features, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, args.classes))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr)
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
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(ddp(X[rows]), y[rows])
            loss.backward()
            optimizer.step()
        elapsed = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
        seconds.append(elapsed)
        samples.append(data.train.n_total)
    with torch.no_grad():
        correct = int((model(torch.from_numpy(data.test.X)).argmax(1)
                       == torch.from_numpy(data.test.y)).sum())
    accuracy = comm.allreduce(correct) / data.test.n_total
    report(NAME, args, comm, seconds, samples, accuracy,
           {"torch_version": torch.__version__, "backend": "gloo", "threads": 1})
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
