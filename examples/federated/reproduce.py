"""McMahan et al. 2017's FedAvg-vs-FedSGD experiment on digits and at the paper's scale, over MPI.

    mpiexec -n 2 python examples/federated/reproduce.py --out runs/federated
    mpiexec -n 2 python examples/federated/reproduce.py --dataset paper-scale --out runs/federated

100 clients, C = 0.1, an MLP with one hidden layer of 64 units on raw features (the paper
used unnormalised pixels too; ``--standardize`` switches to mpitrain's default per-feature
standardisation). ``--dataset digits`` uses scikit-learn's digits (~14 training rows per
client); ``--dataset paper-scale`` gives every client the 600 rows of an MNIST client in the
paper: mpitrain's synthetic Gaussian data, 70 000 rows (60 000 training, 10 000 test),
64 features, 10 classes of 10 clusters each (so that, like MNIST, it needs a nonlinear model
and many optimisation steps). For IID and the pathological non-IID split (``shards``) it
runs FedSGD (E = 1, B = full batch) and FedAvg (E = 5, B = 10), each over a grid of client
learning rates (the paper tuned the rate per method on a 10^(1/3) grid), and reports the
rounds the best rate needs to reach the data set's target test accuracy (median over
``--seeds``; a seed changes the data, the holdout, the partition, the initialisation and
the sampling). On the non-IID split it adds FedProx (mu grid) and FedAdam (server-lr grid)
at FedAvg's best client rate.

Writes ``results.json`` (every run's accuracy curve), ``results.md`` (the table) and
``accuracy.png`` (mean test accuracy over the seeds vs rounds, best setting of each method)
into ``--out``/<dataset>. Every rank runs the same ``mpitrain.train`` calls (they are
collective); rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpi4py import MPI

from mpitrain import UserError, train

PROX_MU = (0.01, 0.1, 1.0)  # FedProx's mu
ADAM_LR = (0.01, 0.03, 0.1)  # FedAdam's server rate
BASE: dict[str, Any] = dict(model="mlp", hidden=(64,), mode="fedavg", clients=100,
                            client_fraction=0.1, eval_every=1, quiet=True)
FEDSGD = dict(local_epochs=1, local_batch=0)
FEDAVG = dict(local_epochs=5, local_batch=10)


@dataclass(frozen=True)
class Setup:
    """One data set of the reproduction: what it trains on, its target and its rate grids."""

    name: str  # the --dataset value and the output subdirectory
    title: str  # how tables and plots name the data
    data: dict[str, Any]  # mpitrain.train options selecting the data
    target: float  # test accuracy whose rounds are counted
    # per method: client learning rates (FedSGD, FedAvg; ~10^(1/3) apart), FedProx's mu and
    # FedAdam's server rate (both at FedAvg's best non-IID client rate)
    grids: dict[str, tuple[float, ...]]
    rounds: int  # default --rounds


def setups(standardize: bool) -> dict[str, Setup]:
    """The data sets by name; the grids hold each method's best rate away from their edges."""
    # digits: 0.22 diverges on raw pixels; standardised features take rates up to ~2-5
    digits = ((0.046, 0.1, 0.22, 0.46, 1.0, 2.2, 4.6) if standardize
              else (0.01, 0.022, 0.046, 0.1))
    return {s.name: s for s in (
        Setup("digits", "digits", {"data": "digits"}, 0.90,
              {"FedSGD": digits, "FedAvg": digits, "FedProx": PROX_MU, "FedAdam": ADAM_LR},
              300),
        # the paper's MNIST client size: 100 clients x 600 training rows, 10 000 test rows;
        # 10 Gaussian clusters per class (100 centres): not linearly separable (softmax ~55%),
        # an MLP 64 ends at ~97% (Bayes ~100%) and full-batch steps need tens of rounds
        Setup("paper-scale", "synthetic 60 000 rows (600 per client), 64 features, 10 classes "
              "x 10 clusters, noise 0.3",
              {"data": "synthetic", "samples": 70_000, "test_fraction": 1 / 7, "features": 64,
               "classes": 10, "clusters_per_class": 10, "noise": 0.3}, 0.90,
              {"FedSGD": (2.2, 4.6, 10.0, 22.0),
               "FedAvg": (0.1, 0.22, 0.46, 1.0, 2.2, 4.6),
               "FedProx": (0.001, *PROX_MU), "FedAdam": (*ADAM_LR, 0.3, 1.0)}, 200),
    )}


def rounds_to(curve: list[float], target: float) -> float:
    """First round (1-based) whose test accuracy reaches ``target``; inf if none."""
    return next((i + 1 for i, acc in enumerate(curve) if acc >= target), math.inf)


def one_seed(setup: Setup, options: dict[str, Any], *, rounds: int, seed: int,
             standardize: bool) -> list[float]:
    """Test accuracy after every round ([] when the run diverged)."""
    try:
        history = train(**BASE, **setup.data, **options, rounds=rounds, seed=seed,
                        standardize=standardize).history
    except UserError as exc:  # a rate too large for this method: the same on every rank
        if "diverged" not in str(exc):
            raise
        return []
    return [m["test_accuracy"] for m in history]


def run(name: str, setup: Setup, args: argparse.Namespace, **options: Any) -> dict[str, Any]:
    """One setting over every seed: rounds to the target per seed, their median, and the
    mean accuracy curve."""
    started = time.perf_counter()
    curves = [one_seed(setup, options, rounds=args.rounds, seed=s,
                       standardize=args.standardize) for s in args.seeds]
    rounds = [rounds_to(c, setup.target) for c in curves]
    complete = [c for c in curves if c]
    mean = ([statistics.fmean(values) for values in zip(*complete, strict=True)]
            if len(complete) == len(curves) else [])
    return {"name": name, "options": options, "seeds": args.seeds,
            "rounds_to_target": [None if math.isinf(r) else r for r in rounds],
            "median_rounds": statistics.median(rounds),
            "final_accuracy": mean[-1] if mean else math.nan,
            "mean_accuracy": [round(a, 5) for a in mean],
            "seconds": time.perf_counter() - started}


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The setting with the fewest median rounds (ties: higher final accuracy)."""
    return min(runs, key=lambda r: (r["median_rounds"], -(r["final_accuracy"] or 0)))


def entry(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A grid's best run, and whether it sits at an edge of the grid (then widen the grid:
    a better setting may lie outside it)."""
    top = best(runs)
    return {"best": top, "at_grid_edge": len(runs) > 1 and top in (runs[0], runs[-1]),
            "runs": runs}


def shown(rounds: float, limit: int) -> str:
    """Rounds for a table: the number, or "> limit" when the target was never reached."""
    if math.isinf(rounds):
        return f"> {limit}"
    return f"{rounds:g}"


def setting_of(options: dict[str, Any]) -> dict[str, Any]:
    """The tuned values of a run's options (client rate, FedProx mu, server rate)."""
    return {k: v for k, v in options.items() if k in ("local_lr", "prox_mu", "server_lr")}


def experiments(setup: Setup, args: argparse.Namespace,
                say: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Every grid of ``setup``: FedSGD and FedAvg on both splits, FedProx and FedAdam on
    shards at FedAvg's best non-IID rate."""
    table: dict[str, dict[str, Any]] = {}

    def tune(partition: str, method: str, variants: list[dict[str, Any]]) -> None:
        runs = [run(method, setup, args, partition=partition, **v) for v in variants]
        for r in runs:
            say(f"{setup.name} {partition:6} {method:7} {setting_of(r['options'])}  rounds to "
                f"{setup.target:.0%}: {r['rounds_to_target']} (median "
                f"{shown(r['median_rounds'], args.rounds)})  final {r['final_accuracy']:.4f}  "
                f"({r['seconds']:.1f}s)")
        table[f"{partition}/{method}"] = entry(runs)

    for partition in ("iid", "shards"):
        for method, local in (("FedSGD", FEDSGD), ("FedAvg", FEDAVG)):
            tune(partition, method, [dict(local_lr=lr, **local) for lr in setup.grids[method]])
    lr = table["shards/FedAvg"]["best"]["options"]["local_lr"]
    tune("shards", "FedProx", [dict(local_lr=lr, **FEDAVG, prox_mu=mu)
                               for mu in setup.grids["FedProx"]])
    tune("shards", "FedAdam", [dict(local_lr=lr, **FEDAVG, server_opt="fedadam", server_lr=s)
                               for s in setup.grids["FedAdam"]])
    return table


def markdown(setup: Setup, table: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    """The results table: best setting of each method, its rounds to target, the ratio."""
    seeds = ",".join(map(str, args.seeds))
    target = f"{setup.target:.0%}"
    lines = [f"Rounds to {target} test accuracy ({setup.title}, K = 100, C = 0.1, MLP 64, "
             f"{'standardised' if args.standardize else 'raw'} features, at most "
             f"{args.rounds} rounds, seeds {seeds}; best setting of each grid by median, "
             "* = at the edge of its grid):",
             "", f"| split | method | E | B | setting | rounds to {target} (median) | per seed | "
             "fewer rounds than FedSGD | final acc (mean) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, item in table.items():
        partition, method = key.split("/")
        b = item["best"]
        options = b["options"]
        setting = ", ".join(f"{k}={v}" for k, v in setting_of(options).items())
        setting += " *" if item["at_grid_edge"] else ""
        rounds = b["median_rounds"]
        base = table[f"{partition}/FedSGD"]["best"]["median_rounds"]
        speedup = (f"{base / rounds:.1f}×" if not (math.isinf(rounds) or math.isinf(base))
                   else "–")
        per_seed = ", ".join("–" if r is None else str(r) for r in b["rounds_to_target"])
        batch = options.get("local_batch", 10) or "∞"
        lines.append(f"| {partition} | {method} | {options.get('local_epochs')} | {batch} | "
                     f"{setting} | {shown(rounds, args.rounds)} | {per_seed} | {speedup} | "
                     f"{b['final_accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(setup: Setup, table: dict[str, dict[str, Any]], path: Path, *, seeds: int) -> None:
    """Mean test accuracy vs rounds of each method's best setting, IID and shards side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, partition in zip(axes, ("iid", "shards"), strict=True):
        for key, item in table.items():
            if not key.startswith(partition + "/"):
                continue
            b = item["best"]
            acc = b["mean_accuracy"]
            method = key.split("/")[1]
            rounds = b["median_rounds"]
            label = f"{method} ({shown(rounds, len(acc))} rounds)"
            ax.plot(range(1, len(acc) + 1), acc, label=label,
                    linestyle="--" if method == "FedProx" else "-")
        ax.axhline(setup.target, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("round")
        ax.set_title("IID" if partition == "iid" else "non-IID (shards, 2 per client)")
        ax.legend(loc="lower right", fontsize=8, title=f"median rounds to {setup.target:.0%}",
                  title_fontsize=8)
    axes[0].set_ylabel(f"global test accuracy (mean of {seeds} seeds)")
    fig.suptitle(f"FedAvg (E=5, B=10) vs FedSGD (E=1, B=∞) on {setup.title}, "
                 "100 clients, C=0.1", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/federated",
                        help="output directory (one subdirectory per data set)")
    parser.add_argument("--dataset", default="digits", choices=("digits", "paper-scale", "all"),
                        help="digits (default), paper-scale (600 synthetic rows per client) "
                        "or all")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per run (default: 300 on digits, 200 at paper scale)")
    parser.add_argument("--seeds", default="0,1,2,3",
                        type=lambda text: [int(s) for s in text.split(",")],
                        help="comma-separated seeds (default: 0,1,2,3)")
    parser.add_argument("--standardize", action="store_true",
                        help="standardise features (mpitrain's default) instead of raw values")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank0 = comm.Get_rank() == 0

    def say(line: str) -> None:
        if rank0:
            print(line, flush=True)

    known = setups(args.standardize)
    for setup in known.values() if args.dataset == "all" else [known[args.dataset]]:
        started = time.perf_counter()
        plan = argparse.Namespace(**{**vars(args), "dataset": setup.name,
                                     "rounds": args.rounds or setup.rounds})
        table = experiments(setup, plan, say)
        if rank0:
            out = Path(args.out) / setup.name
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.json").write_text(json.dumps(
                {"ranks": comm.Get_size(), "args": vars(plan), "target": setup.target,
                 "data": setup.data, "results": table}, indent=1))
            text = markdown(setup, table, plan)
            (out / "results.md").write_text(text)
            plot(setup, table, out / "accuracy.png", seeds=len(plan.seeds))
            print("\n" + text)
            print(f"wrote {out}/results.json, results.md, accuracy.png in "
                  f"{time.perf_counter() - started:.0f}s on {comm.Get_size()} ranks", flush=True)


if __name__ == "__main__":
    main()
