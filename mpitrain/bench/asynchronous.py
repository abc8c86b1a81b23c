"""``mpitrain bench async``: when do the asynchronous modes beat synchronous SGD?

Run under the launcher with P ranks, e.g. ``mpiexec -n 4 python -m mpitrain bench async``.
Trains the same workload (the ``mpitrain train`` flags below; default: digits, MLP with
two hidden layers of 1024 (so that a step's compute, not MPI latency, dominates: ~5 ms per
rank), momentum SGD lr 0.05, global batch 64, 10 epochs, float32) with
every ``--modes`` entry (default: sync, ssp, local-sgd, gossip, async-ps, each with its own
defaults), twice: without a straggler and with rank ``--straggler-rank`` (default: the
last, a worker under async-ps) ``--straggler-factor`` times slower (``--straggler``, see
:mod:`mpitrain.asynchronous.straggler`). Each run is ``mpitrain.train`` on every rank;
``--repeats`` runs per (mode, scenario), the median reported.

Per run: the training wall-clock time (the loop's seconds; evaluation excluded) at the end
of each epoch and the test accuracy there; ``time_to_target`` = the time at the end of the
first epoch whose test accuracy is >= ``--target`` (null: never reached), and that epoch's
number (``epochs_to_target``: how many passes over the data the mode needs, which does not
depend on timing except for async-ps);
``final_accuracy`` = the last epoch's. The verdicts are the issue's targets:

1. ``straggler_speedup``: with the straggler, sync's time to target over the best
   asynchronous mode's, whose final accuracy must be within 1 point of sync's (target: >=2);
2. ``no_straggler_ratio``: without it, ssp's and local-sgd's time to target over sync's
   (target: <= 1.10);
3. ``floor``: every mode's final accuracy (target: >= 0.95 on digits).

JSON (``--json FILE``, rank 0)::

    {"ranks", "mpi_library", "mpitrain_version", "cpus",
     "load_average": [1-minute load average before, after] (other work on the machine),
     "workload": {"data", "model", "hidden", "optimizer", "lr", "batch_size", "epochs",
                  "dtype", "target", "straggler", "repeats"},
     "runs": [{"mode", "scenario" ("none" | "straggler"), "time_to_target",
               "epochs_to_target", "final_accuracy", "seconds",
               "curves": [[[seconds, accuracy], ...], ...]}],
     "verdicts": {"straggler_speedup", "straggler_best_mode", "straggler_accuracy_gap",
                  "no_straggler_ratio": {mode: ratio}, "floor": {mode: accuracy}}}

``--plot FILE.png`` draws test accuracy against wall-clock time, one panel per scenario.
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

from mpi4py import MPI

from mpitrain import __version__, train
from mpitrain.bench import save_figure, save_outputs
from mpitrain.cli import add_config_arguments
from mpitrain.config import TrainConfig, resolve
from mpitrain.errors import checked, require
from mpitrain.strategies import MODES

#: TrainConfig fields that are ``bench async`` flags, as ``mpitrain train`` declares them.
CONFIG_OPTIONS = ("data", "samples", "features", "classes", "model", "hidden", "seed",
                  "optimizer", "lr", "batch_size", "epochs", "dtype", "reduce", "servers",
                  "staleness", "sync_every")
WORKLOAD_DEFAULTS = {"data": "digits", "hidden": (1024, 1024), "optimizer": "momentum",
                     "lr": 0.05, "epochs": 10}
ASYNC_MODES = ("ssp", "local-sgd", "gossip", "async-ps")
DEFAULT_MODES = ("sync", *ASYNC_MODES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench async``."""
    add_config_arguments(parser, CONFIG_OPTIONS, defaults=WORKLOAD_DEFAULTS)
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--modes", default=",".join(DEFAULT_MODES), metavar="M[,M...]",
                       help=f"modes to compare (default: {','.join(DEFAULT_MODES)})")
    bench.add_argument("--target", type=float, default=0.95, metavar="ACC",
                       help="test accuracy whose time is reported (default: 0.95)")
    bench.add_argument("--straggler-factor", type=float, default=3.0, metavar="F",
                       help="how much slower the straggler computes (default: 3)")
    bench.add_argument("--straggler-rank", type=int, default=-1, metavar="R",
                       help="the straggling rank (default: -1, the last)")
    bench.add_argument("--repeats", type=int, default=1, metavar="N",
                       help="runs per mode and scenario; medians reported (default: 1)")
    bench.add_argument("--json", metavar="FILE", help="write the results as JSON (rank 0)")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="draw accuracy against wall-clock time (needs matplotlib)")


def _modes(args: argparse.Namespace) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    for mode in modes:
        require(mode in MODES and mode != "fedavg",
                f"--modes: {mode!r} is not a mode to compare; choose from "
                f"{', '.join(DEFAULT_MODES)}")
    require(bool(modes), "--modes names no mode")
    return modes


def _config(args: argparse.Namespace, mode: str, straggler: str) -> TrainConfig:
    """The run of ``mode``: the workload's options, the mode's own only where it has them."""
    options = {name: getattr(args, name) for name in CONFIG_OPTIONS}
    own = {"servers": "async-ps", "staleness": "ssp", "sync_every": "local-sgd"}
    for name, owner in own.items():
        if mode != owner:
            options.pop(name)
    return resolve({"quiet": True}, {**options, "mode": mode, "straggler": straggler})


def _checked(args: argparse.Namespace, ranks: int) -> tuple[tuple[str, ...], str]:
    modes = _modes(args)
    require(0.0 < args.target <= 1.0, f"--target must be in (0, 1] (got {args.target})")
    require(args.straggler_factor >= 1.0,
            f"--straggler-factor must be >= 1 (got {args.straggler_factor})")
    require(args.repeats >= 1, f"--repeats must be >= 1 (got {args.repeats})")
    rank = args.straggler_rank % ranks if -ranks <= args.straggler_rank < ranks else None
    require(rank is not None, f"--straggler-rank must be in -{ranks}..{ranks - 1} "
            f"(got {args.straggler_rank})")
    straggler = f"{rank}:{args.straggler_factor:g}"
    for mode in modes:
        _config(args, mode, straggler)  # every option checked before the first run
    return modes, straggler


def _curve(history: list[dict[str, Any]]) -> list[list[float]]:
    """[[training seconds so far, test accuracy], ...] at the end of each epoch."""
    elapsed, points = 0.0, []
    for metrics in history:
        elapsed += metrics["seconds"]
        points.append([elapsed, metrics.get("test_accuracy", float("nan"))])
    return points


def _time_to(curve: list[list[float]], target: float) -> float | None:
    return next((seconds for seconds, accuracy in curve if accuracy >= target), None)


def _median(values: list[float | None]) -> float | None:
    """Median, a never-reached target counting as infinitely late (null if most were)."""
    ranked = sorted(values, key=lambda v: float("inf") if v is None else v)
    return ranked[(len(ranked) - 1) // 2]


def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """Collective: every (scenario, mode, repeat) run; rank 0 prints and writes."""
    modes, straggler = checked(comm, _checked, args, comm.Get_size())
    load_before = os.getloadavg()[0]
    runs = []
    for scenario, slow in (("none", ""), ("straggler", straggler)):
        for mode in modes:
            curves = []
            for _ in range(args.repeats):
                result = train(_config(args, mode, slow), comm=comm)
                curves.append(_curve(result.history))
            times = [_time_to(curve, args.target) for curve in curves]
            epochs = [next((i + 1 for i, (_, accuracy) in enumerate(curve)
                            if accuracy >= args.target), None) for curve in curves]
            runs.append({
                "mode": mode, "scenario": scenario,
                "time_to_target": _median(times), "epochs_to_target": _median(epochs),
                "final_accuracy": statistics.median(c[-1][1] for c in curves),
                "seconds": statistics.median(c[-1][0] for c in curves),
                "curves": curves})
            if comm.Get_rank() == 0:
                row = runs[-1]
                print(f"{scenario:>9} {mode:>9}: time to {args.target:g} "
                      f"{_show(row['time_to_target'])}, final accuracy "
                      f"{row['final_accuracy']:.4f}, {row['seconds']:.2f} s", flush=True)
    load = [load_before, os.getloadavg()[0]]
    checked(comm, _finish, args, comm, straggler, runs, load)
    return 0


def _show(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"


def verdicts(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets from the runs (see the module docstring)."""
    by = {(r["scenario"], r["mode"]): r for r in runs}
    out: dict[str, Any] = {"straggler_speedup": None, "straggler_best_mode": None,
                           "straggler_accuracy_gap": None, "no_straggler_ratio": {},
                           "floor": {r["mode"]: r["final_accuracy"] for r in runs
                                     if r["scenario"] == "none"}}
    sync = by.get(("straggler", "sync"))
    candidates = [r for r in runs if r["scenario"] == "straggler" and r["mode"] != "sync"
                  and r["time_to_target"] is not None]
    if sync is not None and sync["time_to_target"] is not None and candidates:
        best = min(candidates, key=lambda r: r["time_to_target"])
        out["straggler_best_mode"] = best["mode"]
        out["straggler_speedup"] = sync["time_to_target"] / best["time_to_target"]
        out["straggler_accuracy_gap"] = sync["final_accuracy"] - best["final_accuracy"]
    plain = by.get(("none", "sync"))
    for mode in ("ssp", "local-sgd"):
        other = by.get(("none", mode))
        if plain and other and plain["time_to_target"] and other["time_to_target"]:
            out["no_straggler_ratio"][mode] = other["time_to_target"] / plain["time_to_target"]
    return out


def _finish(args: argparse.Namespace, comm: MPI.Comm, straggler: str,
            runs: list[dict[str, Any]], load: list[float]) -> None:
    if comm.Get_rank() != 0:
        return
    doc = {"ranks": comm.Get_size(),
           "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
           "mpitrain_version": __version__,
           "cpus": os.cpu_count(), "load_average": load,
           "workload": {"data": args.data, "model": args.model, "hidden": list(args.hidden),
                        "optimizer": args.optimizer, "lr": args.lr,
                        "batch_size": args.batch_size, "epochs": args.epochs,
                        "dtype": args.dtype, "target": args.target, "straggler": straggler,
                        "repeats": args.repeats},
           "runs": runs, "verdicts": verdicts(runs)}
    print(_table(doc), flush=True)
    save_outputs(doc, json_path=args.json, plot_path=args.plot, plot=_plot)


def _table(doc: dict[str, Any]) -> str:
    w, v = doc["workload"], doc["verdicts"]
    lines = [f"# bench async: {doc['ranks']} ranks, {w['data']} {w['model']} "
             f"{w['hidden']}, {w['optimizer']} lr {w['lr']}, batch {w['batch_size']}, "
             f"{w['epochs']} epochs; straggler {w['straggler']}; target accuracy "
             f"{w['target']}; {doc['cpus']} CPUs, load average "
             f"{doc['load_average'][0]:.1f} before, {doc['load_average'][1]:.1f} after",
             f"{'scenario':<10} {'mode':<10} {'time to target':>15} {'epochs':>7} "
             f"{'final acc':>10} {'train s':>8}"]
    for r in doc["runs"]:
        lines.append(f"{r['scenario']:<10} {r['mode']:<10} {_show(r['time_to_target']):>15} "
                     f"{r['epochs_to_target'] or '-':>7} {r['final_accuracy']:>10.4f} "
                     f"{r['seconds']:>8.2f}")
    if v["straggler_speedup"] is not None:
        lines.append(f"straggler: best async mode {v['straggler_best_mode']} reaches the "
                     f"target {v['straggler_speedup']:.2f}x faster than sync (final accuracy "
                     f"{-100 * v['straggler_accuracy_gap']:+.2f} points)")
    for mode, ratio in v["no_straggler_ratio"].items():
        lines.append(f"no straggler: {mode} takes {ratio:.2f}x sync's time to target")
    return "\n".join(lines)


def _plot(path: str, doc: dict[str, Any]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, scenario in zip(axes, ("none", "straggler"), strict=True):
        for r in (r for r in doc["runs"] if r["scenario"] == scenario):
            curve = r["curves"][0]
            ax.plot([p[0] for p in curve], [p[1] for p in curve], marker="o", markersize=3,
                    label=r["mode"])
        ax.axhline(doc["workload"]["target"], color="black", linestyle="--", linewidth=0.8)
        title = "no straggler" if scenario == "none" else \
            f"straggler {doc['workload']['straggler']}"
        ax.set_title(f"{title}, {doc['ranks']} ranks")
        ax.set_xlabel("training wall-clock time (s)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize="small")
    save_figure(fig, path)
    return True
