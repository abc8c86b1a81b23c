"""Train the example models (factorization machine, 1-D convnet) on their synthetic data.

    mpiexec -n 2 python examples/models/train_models.py --model fm --out runs/fm
    mpiexec -n 2 python examples/models/train_models.py --model conv1d --out runs/conv1d

Rank 0 writes the data file once (the others wait at a barrier), then every rank calls
``mpitrain.train`` with the model object; the run directory holds model.npz, which
``mpitrain.predict`` loads again wherever ``fm`` / ``conv1d`` are importable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conv1d import Conv1D, make_signals
from fm import FactorizationMachine, make_ctr

import mpitrain

SETUPS = {
    "fm": (lambda: FactorizationMachine(rank=8), make_ctr,
           {"standardize": False, "optimizer": "adam", "lr": 0.1}),
    "conv1d": (lambda: Conv1D(filters=8, width=5), make_signals,
               {"optimizer": "adam", "lr": 0.01}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=SETUPS, required=True)
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rows", type=int, default=None, help="rows of synthetic data")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    model, make_data, options = SETUPS[args.model]
    out = Path(args.out)
    data = out.parent / f"{out.name}-data.npz"
    comm = MPI.COMM_WORLD
    if comm.Get_rank() == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        make_data(str(data), **({"rows": args.rows} if args.rows else {}))
    comm.Barrier()
    result = mpitrain.train(model=model(), data=str(data), epochs=args.epochs,
                            dtype=args.dtype, out=str(out), overwrite=True, **options)
    if comm.Get_rank() == 0:
        print(f"{args.model}: test accuracy {result.history[-1]['test_accuracy']:.3f}")


if __name__ == "__main__":
    main()
