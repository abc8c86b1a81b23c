"""The workload (standard by default) with PyTorch DDP (gloo, CPU, one thread per rank).

    mpiexec -n 2 PYTHON benchmarks/peers/torch_ddp.py [--epochs 2 ...]

PYTHON needs torch, numpy and mpi4py (mpi4py only provides ranks and loads mpitrain's data;
gradients go through torch.distributed's gloo backend, as DDP users run it on CPUs). The
model, data, batch (``--rows-per-rank``, 256 by default, local shuffle), optimizer (momentum
0.9, lr 0.1 by default) and epochs are those compare.py gives ``mpitrain train``. Prints
samples/s (training loop only) and test accuracy; exits 0 with "skipped: ..." when torch or
mpi4py is missing. Not a dependency of mpitrain.
"""

from __future__ import annotations

import os
import socket
import sys

from common import first_missing, load, make_sgd, parser, report, skip, train_torch_mlp

NAME = "torch_ddp"


def main() -> int:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args()
    why = first_missing("torch", "mpi4py")
    if why is not None:
        return skip(NAME, why)
    import torch
    import torch.distributed as dist
    from mpi4py import MPI

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
    _, seconds, samples, accuracy = train_torch_mlp(
        args, comm, data, wrap=torch.nn.parallel.DistributedDataParallel,
        make_optimizer=lambda module: make_sgd(args, module.parameters()))
    report(NAME, args, comm, seconds, samples, accuracy,
           {"torch_version": torch.__version__, "backend": "gloo", "threads": 1})
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
