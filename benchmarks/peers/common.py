"""Shared by the peer scripts: the workload's data, options and report line.

The default workload is the standard one (64 features, MLP 128, 10 classes, 256 rows per
rank per step); ``--features``, ``--hidden H[,H2...]``, ``--rows-per-rank`` and ``--dtype``
select the larger points of ``mpitrain bench matrix`` (e.g. 784-1024-10 at 128 rows). The
optimizer (``--optimizer sgd|momentum``, ``--momentum``) is passed explicitly to every
framework, so all of them run the same update rule (PyTorch's SGD convention).

The data is mpitrain's own synthetic set, loaded with ``mpitrain.data.load_dataset`` (it
needs mpitrain's dependencies but not mpitrain; setup-peers.sh installs them), so every
framework trains on exactly the rows, holdout, sharding and standardisation mpitrain uses.
The repository root is put on ``sys.path`` so a separate environment (one with torch or
Horovod) can import it without installing mpitrain.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


# What each peer script imports, and how to get it.
INSTALL = {
    "torch": "PyTorch is not installed in this Python (pip install torch)",
    "horovod.torch": "Horovod is not installed in this Python (HOROVOD_WITH_PYTORCH=1 "
                     "HOROVOD_WITH_MPI=1 pip install horovod; or benchmarks/peers/"
                     "setup-peers.sh)",
    "mpi4py": "mpi4py is not installed in this Python (pip install mpi4py)",
}


def first_missing(*modules: str) -> str | None:
    """Why a peer cannot run: the first of ``modules`` that does not import (None: all do)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return INSTALL[module]
    return None


def skip(name: str, why: str) -> int:
    """Print why a peer cannot run (rank 0 of the launcher only) and return exit status 0
    (skipped is not failed)."""
    rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    if rank == "0":
        print(f"{name}: skipped: {why}", flush=True)
    return 0


def hidden_sizes(text: str) -> tuple[int, ...]:
    """``--hidden 1024,1024`` -> (1024, 1024): positive layer sizes."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive layer sizes like 128 or "
                                         f"1024,1024 (got {text!r})")
    return sizes


#: The workload options: (flag, type, default, help); defaults are the standard workload.
WORKLOAD: tuple[tuple[str, Any, Any, str], ...] = (
    ("--samples", int, 200_000, "synthetic rows (80%% train, 20%% test)"),
    ("--features", int, 64, "input width"),
    ("--classes", int, 10, "classes"),
    ("--hidden", hidden_sizes, (128,), "MLP hidden layer sizes (ReLU), e.g. 1024,1024"),
    ("--rows-per-rank", int, 256, "rows per rank per step (batch = this x ranks)"),
    ("--dtype", str, "float32", "float32 or float64"),
    ("--epochs", int, 2, "epochs"),
    ("--lr", float, 0.1, "learning rate"),
    ("--optimizer", str, "momentum", "sgd or momentum (the same rule for every framework)"),
    ("--momentum", float, 0.9, "momentum factor (--optimizer momentum)"),
    ("--seed", int, 0, "data and initialisation seed"),
)
CHOICES = {"--dtype": ("float32", "float64"), "--optimizer": ("sgd", "momentum")}


def add_workload(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the workload options (shared by compare.py and every peer script) to ``p``."""
    for flag, kind, default, help_text in WORKLOAD:
        p.add_argument(flag, type=kind, default=default, choices=CHOICES.get(flag),
                       help=f"{help_text} (default: {default})")
    return p


def workload_argv(args: argparse.Namespace) -> list[str]:
    """The workload options of ``args`` as command-line words, for a peer script."""
    argv: list[str] = []
    for flag, _, _, _ in WORKLOAD:
        value = getattr(args, flag[2:].replace("-", "_"))
        argv += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return argv


def describe(args: argparse.Namespace) -> str:
    """``784-1024-10 float32, 128 rows/rank/step, momentum 0.9 lr 0.1`` for headers."""
    dims = "-".join(str(d) for d in (args.features, *args.hidden, args.classes))
    rule = (f"momentum {args.momentum:g}" if args.optimizer == "momentum" else "sgd")
    return (f"MLP {dims} {args.dtype}, {args.rows_per_rank} rows/rank/step, "
            f"{args.samples:,} samples, {rule} lr {args.lr:g}")


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """Options of every peer script; defaults are the standard workload."""
    p = add_workload(argparse.ArgumentParser(prog=name, description=description))
    p.add_argument("--json", metavar="FILE", help="write the result as JSON (rank 0)")
    return p


def make_sgd(args: argparse.Namespace, parameters: Any) -> Any:
    """``torch.optim.SGD`` with the workload's rule (momentum as mpitrain's: no dampening)."""
    import torch

    momentum = args.momentum if args.optimizer == "momentum" else 0.0
    return torch.optim.SGD(parameters, lr=args.lr, momentum=momentum)


def load(args: argparse.Namespace, comm: Any) -> Any:
    """This rank's shard of the workload (``--dtype``), as mpitrain loads it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import numpy as np

    from mpitrain.data import SyntheticSpec, load_dataset

    return load_dataset("synthetic", comm=comm, task="classification",
                        dtype=np.dtype(args.dtype),
                        seed=args.seed, test_fraction=0.2,
                        synthetic=SyntheticSpec(samples=args.samples, features=args.features,
                                                classes=args.classes, noise=1.0))


def report(name: str, args: argparse.Namespace, comm: Any, seconds: list[float],
           samples: list[int], accuracy: float, extra: dict[str, Any]) -> None:
    """Rank 0: one line (and --json) with samples/s over the training loop and accuracy.

    ``seconds`` / ``samples`` are per epoch (training loop only, evaluation excluded);
    ``seconds`` is the slowest rank's.
    """
    if comm.Get_rank() != 0:
        return
    size = comm.Get_size()
    rate = sum(samples) / sum(seconds)
    result = {"framework": name, "ranks": size, "epochs": args.epochs,
              "workload": describe(args), "rows_per_rank": args.rows_per_rank,
              "samples_per_second": round(rate),
              "samples_per_second_per_rank": round(rate / size),
              "epoch_samples_per_second": [round(n / s) for n, s in zip(samples, seconds,
                                                                       strict=True)],
              "test_accuracy": accuracy, **extra}
    print(f"{name}: {size} ranks, {args.epochs} epochs, {describe(args)}: "
          f"{rate:,.0f} samples/s ({rate / size:,.0f} per rank), test accuracy "
          f"{accuracy:.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


def train_torch_mlp(args: argparse.Namespace, comm: Any, data: Any, *, wrap: Any,
                    make_optimizer: Any) -> tuple[Any, list[float], list[int], float]:
    """The workload with a torch MLP, the same for every torch-based peer.

    ``wrap(model)`` returns the module to train (DDP wraps it; Horovod returns it as is),
    ``make_optimizer(module)`` its optimizer. Each rank takes equal shares of its own shuffled
    rows per step, as mpitrain's ``--shuffle local``. Returns the model, per-epoch seconds
    (slowest rank), rows per epoch and the global test accuracy.
    """
    import numpy as np
    import torch
    from mpi4py import MPI

    size = comm.Get_size()
    torch.manual_seed(args.seed)
    dims = (args.features, *args.hidden)
    layers: list[Any] = []
    for width_in, width_out in itertools.pairwise(dims):
        layers += [torch.nn.Linear(width_in, width_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(dims[-1], args.classes))
    model = model.to(getattr(torch, args.dtype))
    module = wrap(model)
    optimizer = make_optimizer(module)
    loss_fn = torch.nn.CrossEntropyLoss()
    X = torch.from_numpy(data.train.X)
    y = torch.from_numpy(data.train.y)
    steps = -(-data.train.n_total // (args.rows_per_rank * size))
    rng = np.random.default_rng([args.seed, comm.Get_rank()])
    seconds: list[float] = []
    samples: list[int] = []
    for _ in range(args.epochs):
        order = torch.from_numpy(rng.permutation(len(y)))
        bounds = (np.arange(steps + 1) * len(y)) // steps
        comm.Barrier()
        start = time.perf_counter()
        for step in range(steps):
            rows = order[bounds[step]:bounds[step + 1]]
            optimizer.zero_grad()
            loss = loss_fn(module(X[rows]), y[rows])
            loss.backward()
            optimizer.step()
        seconds.append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
        samples.append(data.train.n_total)
    with torch.no_grad():
        correct = int((model(torch.from_numpy(data.test.X)).argmax(1)
                       == torch.from_numpy(data.test.y)).sum())
    return model, seconds, samples, comm.allreduce(correct) / data.test.n_total
