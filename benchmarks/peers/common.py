"""Shared by the peer scripts: the standard workload's data, options and report line.

The data is mpitrain's own synthetic set, loaded with ``mpitrain.data.load_dataset`` (it
needs numpy and mpi4py only, not numba), so every framework trains on exactly the rows,
holdout, sharding and standardisation mpitrain uses. The repository root is put on
``sys.path`` so a separate environment (one with torch or Horovod) can import it without
installing mpitrain.
"""

from __future__ import annotations

import argparse
import importlib
import json
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
    """Print why a peer cannot run and return exit status 0 (skipped is not failed)."""
    print(f"{name}: skipped: {why}", flush=True)
    return 0


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """Options of every peer script; defaults are the standard workload."""
    p = argparse.ArgumentParser(prog=name, description=description)
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--rows-per-rank", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write the result as JSON (rank 0)")
    return p


def load(args: argparse.Namespace, comm: Any) -> Any:
    """This rank's shard of the standard workload (float32), as mpitrain loads it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import numpy as np

    from mpitrain.data import SyntheticSpec, load_dataset

    return load_dataset("synthetic", comm=comm, task="classification", dtype=np.float32,
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
              "rows_per_rank": args.rows_per_rank, "samples_per_second": round(rate),
              "samples_per_second_per_rank": round(rate / size),
              "epoch_samples_per_second": [round(n / s) for n, s in zip(samples, seconds,
                                                                       strict=True)],
              "test_accuracy": accuracy, **extra}
    print(f"{name}: {size} ranks, {args.epochs} epochs, {args.rows_per_rank} rows/rank/step: "
          f"{rate:,.0f} samples/s ({rate / size:,.0f} per rank), test accuracy "
          f"{accuracy:.4f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


def train_torch_mlp(args: argparse.Namespace, comm: Any, data: Any, *, wrap: Any,
                    make_optimizer: Any) -> tuple[Any, list[float], list[int], float]:
    """The standard workload with a torch MLP, the same for every torch-based peer.

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
    model = torch.nn.Sequential(torch.nn.Linear(args.features, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, args.classes))
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
