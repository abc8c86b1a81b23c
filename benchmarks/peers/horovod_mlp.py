"""The workload (standard by default) with Horovod (PyTorch frontend, MPI), one thread per rank.

    mpiexec -n 2 PYTHON benchmarks/peers/horovod_mlp.py [--epochs 2 ...]

PYTHON needs horovod[pytorch] (built with MPI), torch, numpy and mpi4py (for mpitrain's
data loader). Same model, data, batch, optimizer and epochs as ``mpitrain train`` in compare.py.
Prints samples/s (training loop only) and test accuracy; exits 0 with "skipped: ..." when
Horovod, torch or mpi4py is missing. Not a dependency of mpitrain.
"""

from __future__ import annotations

import sys

from common import first_missing, load, make_sgd, parser, report, skip, train_torch_mlp

NAME = "horovod"


def main() -> int:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args()
    why = first_missing("torch", "horovod.torch", "mpi4py")
    if why is not None:
        return skip(NAME, why)
    import horovod.torch as hvd
    import torch
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    hvd.init()

    torch.set_num_threads(1)
    data = load(args, comm)

    def make_optimizer(module):
        optimizer = hvd.DistributedOptimizer(make_sgd(args, module.parameters()),
                                             named_parameters=module.named_parameters())
        hvd.broadcast_parameters(module.state_dict(), root_rank=0)
        return optimizer

    _, seconds, samples, accuracy = train_torch_mlp(
        args, comm, data, wrap=lambda model: model, make_optimizer=make_optimizer)
    report(NAME, args, comm, seconds, samples, accuracy,
           {"horovod_version": getattr(sys.modules.get("horovod"), "__version__", None),
            "torch_version": torch.__version__, "threads": 1})
    return 0


if __name__ == "__main__":
    sys.exit(main())
