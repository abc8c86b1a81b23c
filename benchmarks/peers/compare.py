"""mpitrain next to its peers on one workload (standard by default), in one table.

    python benchmarks/peers/compare.py --ranks 2 --peer-python /path/to/env-with-torch/bin/python
    python benchmarks/peers/compare.py --features 784 --hidden 1024 --rows-per-rank 128 \
        --samples 50000 --peer-python ...          # a large point of `mpitrain bench matrix`

The workload options (``--features``, ``--hidden H[,H2...]``, ``--rows-per-rank``,
``--dtype``, ``--optimizer``/``--momentum``/``--lr``, ``--samples``, ``--epochs``; see
common.py) go unchanged to every framework: the same synthetic data, MLP, batch per rank
and update rule (momentum 0.9 by default, given explicitly to all).

Runs, ``--repeats`` times in turn (medians reported, so noise from other work on the
machine hits every framework alike): ``mpitrain train`` with ``--mpitrain-python``, then
``torch_ddp.py`` and ``horovod_mlp.py`` with ``--peer-python``, each under the ``mpiexec``
found next to its Python (else the one on PATH). A peer whose framework is missing prints
"skipped: ..." and is left out. Standard library only; exit 0 unless mpitrain itself fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import add_workload, describe, workload_argv

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PEERS = {"torch_ddp": HERE / "torch_ddp.py", "horovod": HERE / "horovod_mlp.py"}


def mpiexec_for(python: str) -> str:
    """The mpiexec installed beside ``python`` (same MPI as its mpi4py), else PATH's."""
    beside = Path(python).with_name("mpiexec")
    return str(beside) if beside.exists() else (shutil.which("mpiexec") or "mpiexec")


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          stdin=subprocess.DEVNULL)


def mpitrain_once(args: argparse.Namespace, out: Path) -> dict[str, float]:
    python = args.mpitrain_python
    command = [mpiexec_for(python), "-n", str(args.ranks), python, "-m", "mpitrain", "train",
               "--data", "synthetic", "--samples", str(args.samples),
               "--features", str(args.features), "--classes", str(args.classes),
               "--model", "mlp", "--hidden", ",".join(map(str, args.hidden)),
               "--dtype", args.dtype, "--lr", str(args.lr), "--optimizer", args.optimizer,
               "--momentum", str(args.momentum), "--seed", str(args.seed),
               "--batch-size", str(args.rows_per_rank * args.ranks),
               "--epochs", str(args.epochs),
               "--shuffle", "local", "--quiet", "--overwrite", "--out", str(out)]
    done = run(command, args.timeout)
    if done.returncode != 0:
        raise SystemExit(f"mpitrain failed:\n{done.stderr}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    samples = sum(m["samples_per_second"] * m["seconds"] for m in lines)
    return {"samples_per_second": samples / sum(m["seconds"] for m in lines),
            "test_accuracy": lines[-1]["test_accuracy"]}


def peer_once(args: argparse.Namespace, script: Path, out: Path) -> dict[str, float] | str:
    python = args.peer_python
    command = [mpiexec_for(python), "-n", str(args.ranks), python, str(script),
               *workload_argv(args), "--json", str(out)]
    done = run(command, args.timeout)
    if "skipped:" in done.stdout:
        return done.stdout.strip().splitlines()[-1]
    if done.returncode != 0 or not out.exists():
        return f"{script.name}: failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    return json.loads(out.read_text())


def main() -> int:
    p = add_workload(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mpitrain-python", default=sys.executable)
    p.add_argument("--peer-python", default=sys.executable)
    p.add_argument("--timeout", type=float, default=900)
    args = p.parse_args()
    results: dict[str, list[dict[str, float]]] = {"mpitrain": [], **{k: [] for k in PEERS}}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            results["mpitrain"].append(mpitrain_once(args, Path(tmp) / "mpitrain"))
            for name, script in PEERS.items():
                if name in skipped:
                    continue
                got = peer_once(args, script, Path(tmp) / f"{name}.json")
                if isinstance(got, str):
                    skipped[name] = got
                else:
                    results[name].append(got)
    for message in skipped.values():
        print(message)
    ours = statistics.median(r["samples_per_second"] for r in results["mpitrain"])
    print(f"# {describe(args)}, {args.ranks} ranks, {args.epochs} epochs, medians of "
          f"{args.repeats} runs (samples/s over the training loop)")
    print(f"{'framework':<10} {'samples/s':>12} {'per rank':>10} {'test acc':>9} "
          f"{'mpitrain is':>12}")
    for name, runs in results.items():
        if not runs:
            continue
        rate = statistics.median(r["samples_per_second"] for r in runs)
        accuracy = statistics.median(r["test_accuracy"] for r in runs)
        ratio = "" if name == "mpitrain" else f"{ours / rate:.2f}x"
        print(f"{name:<10} {rate:>12,.0f} {rate / args.ranks:>10,.0f} {accuracy:>9.4f} "
              f"{ratio:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
