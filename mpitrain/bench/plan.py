"""``mpitrain plan``: what a run on ``N`` nodes of ``L`` ranks will cost per step, before
spending allocation hours on it.

``python -m mpitrain plan --nodes 16 --ranks-per-node 64 --model mlp --hidden 128
--batch 256 --link-gbps 100 --link-latency-us 2`` predicts, for every allreduce algorithm
(flat ring, hierarchical, MPI's, root; the slot sum on one node), the step time, its
compute/communication split and the weak-scaling efficiency (compute / step: the fraction
of the one-rank throughput each rank keeps, ``--batch`` rows per rank per step at every
scale), from

- the alpha-beta model of each algorithm (:mod:`mpitrain.collectives.cost`) with the
  given link and this machine's node-local copy bandwidth (measured, or
  ``--node-gbytes``) and barrier latency (``--node-latency-us``), and
- the compute time of one step measured here: the fused numba gradient + update of the
  model on ``--batch`` random rows, on every rank of the launch at once (or
  ``--compute-us``).

It then prints, for ``L`` ranks per node and ``1, 2, 4, ...`` nodes up to ``--max-ranks``
ranks, the fastest algorithm by the model, what ``--reduce auto`` picks
(:func:`mpitrain.collectives.select.choose`), the step time and efficiency, and the scale
from which communication takes more time than computation.

``--measure`` (under ``mpiexec``, on any layout, e.g. the emulated cluster of
``tests/cluster.py``) validates the model on the launch's own layout and machine: it
calibrates the model's parameters there (:mod:`mpitrain.bench.calibrate`: ranks per host
against usable cores, the kernels' step time alone and with every rank at once, latency
and bandwidth per link class from lock-step rings with every rank active), predicts each
``--reduce``'s step from them (compute with every rank at once + the algorithm's modelled
allreduce), trains ``--measure-steps`` steps with each, and prints predicted against
measured step times and the error. One rank trains with ``auto`` (no reduction).

JSON (``--json FILE``, rank 0)::

    {"workload": {"model", "dims", "parameters", "message_bytes", "batch", "dtype"},
     "compute_seconds": float, "links": {"alpha_net", "beta_net", "alpha_node",
     "beta_node"}, "scenario": {"nodes", "ranks_per_node", "ranks", "algorithms":
     {name: {"comm_seconds", "step_seconds", "efficiency", "comm_fraction"}}, "fastest",
     "auto"}, "scaling": [{"nodes", "ranks", "fastest", "auto", "step_seconds",
     "efficiency", "comm_fraction", "seconds": {name: float}}, ...],
     "communication_dominates_from": ranks or null,
     "measured": null or {"layout", "ranks_per_node", "host": {"hosts", "ranks_on_host",
     "cores", "oversubscription", "load_average", "modelled_time_sharing"}, "compute":
     {"alone_seconds", "together_seconds", "time_sharing"}, "links", "calibrations":
     [{"links", "compute"}, ...], "algorithms": {name: {"predicted_step_seconds",
     "predicted_step_runs", "measured_step_seconds", "measured_step_runs", "spread",
     "ratio", "error",
     "predicted_comm_seconds", "measured_comm_seconds", "measured_compute_seconds",
     "measured_allreduce_seconds", "comm_ratio"}}}}

``--measure-repeats`` rounds each calibrate (``calibrations``; ``compute`` and ``links``
their medians), predict (``predicted_step_runs``, median ``predicted_step_seconds``) and
train; ``measured_step_seconds`` is the median over the rounds' short training runs
(interleaved across algorithms; each run's slowest rank's loop time per step, ``--shuffle
local``, evaluation included; ``measured_step_runs`` all of them, ``spread`` max / min - 1:
how much the measurement itself moves on this machine); ``measured_comm_seconds`` the
time inside the reduction per step (waiting for the slowest rank included),
``measured_allreduce_seconds`` the allreduce alone as ``bench allreduce`` times it (after
a barrier, slowest rank), which ``comm_ratio`` compares with the model; ``error`` is
predicted / measured step - 1.

Times in seconds, bandwidths in bytes/s. ``--plot FILE.png`` draws the projected
efficiency against ranks per algorithm (and, with ``--measure``, predicted against
measured step times).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI

from mpitrain.bench import save_figure, save_outputs
from mpitrain.collectives import choose
from mpitrain.collectives.context import state_of
from mpitrain.collectives.cost import MODELLED, Links, allreduce_seconds, fastest
from mpitrain.errors import checked, require

MODELS = ("mlp", "softmax", "logistic", "linear")
TAIL = 4  # the step message's tail slots (loss, correct, rows, stop vote)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``plan``."""
    scale = parser.add_argument_group("scale")
    scale.add_argument("--nodes", type=int, default=16, metavar="N",
                       help="nodes of the planned run (default: 16)")
    scale.add_argument("--ranks-per-node", type=int, default=64, metavar="L",
                       help="ranks per node (default: 64)")
    scale.add_argument("--max-ranks", type=int, default=10_000, metavar="P",
                       help="largest scale of the scaling table (default: 10000)")
    work = parser.add_argument_group("workload")
    work.add_argument("--model", default="mlp", choices=MODELS, help="(default: mlp)")
    work.add_argument("--hidden", default="128", metavar="H[,H...]",
                      help="hidden layer sizes of an mlp (default: 128)")
    work.add_argument("--features", type=int, default=64, metavar="D", help="(default: 64)")
    work.add_argument("--classes", type=int, default=10, metavar="K", help="(default: 10)")
    work.add_argument("--batch", type=int, default=256, metavar="ROWS",
                      help="rows per rank per step (weak scaling; default: 256)")
    work.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                      help="(default: float32)")
    link = parser.add_argument_group("links")
    link.add_argument("--link-gbps", type=float, default=100.0, metavar="B",
                      help="network bandwidth per node, Gbit/s (default: 100)")
    link.add_argument("--link-latency-us", type=float, default=2.0, metavar="A",
                      help="network latency per message, us (default: 2)")
    link.add_argument("--node-gbytes", type=float, default=None, metavar="G",
                      help="node-local copy bandwidth per rank, GB/s (default: measured)")
    link.add_argument("--node-latency-us", type=float, default=1.0, metavar="A",
                      help="node-local message/barrier latency, us (default: 1)")
    link.add_argument("--compute-us", type=float, default=None, metavar="T",
                      help="compute time per step, us (default: measured here)")
    out = parser.add_argument_group("validation and output")
    out.add_argument("--measure", action="store_true",
                     help="validate on this launch's layout: fit the links, train with each "
                          "--reduce, compare predicted and measured step times")
    out.add_argument("--measure-steps", type=int, default=60, metavar="S",
                     help="training steps per algorithm with --measure (default: 60)")
    out.add_argument("--measure-repeats", type=int, default=3, metavar="R",
                     help="training runs per algorithm with --measure, interleaved; the "
                          "median is compared, the spread reported (default: 3)")
    out.add_argument("--json", metavar="FILE", help="write the results as JSON (rank 0)")
    out.add_argument("--plot", metavar="FILE.png", help="draw the projection (matplotlib)")


def _hidden(text: str) -> tuple[int, ...]:
    try:
        hidden = tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        hidden = ()
    require(bool(hidden) and min(hidden) >= 1,
            f"--hidden must be positive integers separated by commas (got {text!r})")
    return hidden


def _check(args: argparse.Namespace) -> None:
    for name in ("nodes", "ranks_per_node", "max_ranks", "features", "classes", "batch",
                 "measure_steps", "measure_repeats"):
        value = getattr(args, name)
        require(value >= 1, f"--{name.replace('_', '-')} must be >= 1 (got {value})")
    for name in ("link_gbps", "link_latency_us", "node_gbytes", "node_latency_us",
                 "compute_us"):
        value = getattr(args, name)
        require(value is None or (math.isfinite(value) and value > 0),
                f"--{name.replace('_', '-')} must be a positive number (got {value})")


def workload(args: argparse.Namespace) -> dict[str, Any]:
    """Layer sizes, parameter count and step message bytes of the planned model (a dense
    network: one weight matrix and one bias vector per layer)."""
    hidden = _hidden(args.hidden) if args.model == "mlp" else ()
    outputs = 1 if args.model in ("linear", "logistic") else args.classes
    dims = [args.features, *hidden, outputs]
    parameters = sum(a * b + b for a, b in itertools.pairwise(dims))
    itemsize = np.dtype(args.dtype).itemsize
    return {"model": args.model, "dims": dims, "parameters": parameters,
            "message_bytes": (parameters + TAIL) * itemsize, "batch": args.batch,
            "dtype": args.dtype}


def copy_bandwidth(comm: MPI.Comm, nbytes: int) -> float:
    """Collective: bytes/s of ``numpy.copyto`` of ``nbytes`` (at least 64 KiB) by every
    rank at once, the slowest rank's median."""
    n = max(nbytes, 1 << 16)
    src, dst = np.full(n, 1, dtype=np.uint8), np.empty(n, dtype=np.uint8)
    times = []
    for _ in range(30):
        comm.Barrier()
        start = MPI.Wtime()
        np.copyto(dst, src)
        times.append(MPI.Wtime() - start)
    slowest = comm.allreduce(statistics.median(times[5:]), op=MPI.MAX)
    return n / slowest


def predict(message: int, compute: float, nodes: int, per_node: int,
            links: Links) -> dict[str, dict[str, float]]:
    """Per modelled algorithm that can run there: comm and step seconds, efficiency,
    communication's share of the step."""
    out = {}
    for name in MODELLED:
        seconds = allreduce_seconds(name, message, nodes, per_node, links)
        if math.isfinite(seconds):
            step = compute + seconds
            out[name] = {"comm_seconds": seconds, "step_seconds": step,
                         "efficiency": compute / step, "comm_fraction": seconds / step}
    return out


def scaling(message: int, itemsize: int, compute: float, per_node: int, max_ranks: int,
            links: Links) -> list[dict[str, Any]]:
    """The scaling table: 1, 2, 4, ... nodes of ``per_node`` ranks (and the largest whole
    number of nodes within ``max_ranks``)."""
    counts, nodes = [], 1
    while nodes * per_node <= max_ranks:
        counts.append(nodes)
        nodes *= 2
    last = max(1, max_ranks // per_node)
    if not counts or counts[-1] != last:
        counts.append(last)
    rows = []
    for nodes in counts:
        size = nodes * per_node
        name, seconds = fastest(message, nodes, per_node, links)
        step = compute + seconds
        auto = choose(message, size, itemsize, shared=nodes == 1, nodes=nodes,
                      slices=per_node)
        rows.append({"nodes": nodes, "ranks": size, "fastest": name, "auto": auto,
                     "step_seconds": step, "efficiency": compute / step,
                     "comm_fraction": seconds / step,
                     "seconds": {alg: s for alg in MODELLED
                                 if math.isfinite(s := allreduce_seconds(
                                     alg, message, nodes, per_node, links))}})
    return rows


# -- measurement on this launch ------------------------------------------------------------

def _train_steps(args: argparse.Namespace, comm: MPI.Comm, name: str,
                 rows: int) -> dict[str, float]:
    """Collective: a short training run with ``--reduce name``; per step, the slowest
    rank's loop seconds and the mean over ranks of compute and reduction seconds."""
    from mpitrain.config import resolve
    from mpitrain.training import train

    size = comm.Get_size()
    config = resolve({"data": "synthetic", "test_fraction": 0.2, "quiet": True,
                      "shuffle": "local"},
                     {"model": args.model, "hidden": _hidden(args.hidden)
                      if args.model == "mlp" else (), "features": args.features,
                      "classes": args.classes, "dtype": args.dtype,
                      "samples": math.ceil(rows / 0.8), "epochs": 1,
                      "batch_size": args.batch * size, "reduce": name})
    history = train(config, comm=comm).history
    steps = history[-1]["step"]
    every = comm.allgather({key: sum(h[key] for h in history) / steps
                            for key in ("seconds", "compute_seconds", "comm_seconds")})
    return {"seconds": max(s["seconds"] for s in every),
            "compute_seconds": statistics.fmean(s["compute_seconds"] for s in every),
            "comm_seconds": statistics.fmean(s["comm_seconds"] for s in every)}


def _median_of(records: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in records) for key in records[0]}


def measure(args: argparse.Namespace, comm: MPI.Comm, work: dict[str, Any],
            step_compute: Callable[[MPI.Comm], float]) -> dict[str, Any]:
    """Collective: ``--measure-repeats`` rounds of: calibrate the model on this launch
    (:mod:`.calibrate`), predict each algorithm's step from that calibration, train with
    each (interleaved, so a drifting load hits every algorithm alike). Compared: the
    medians over rounds of predicted and measured steps. Then each allreduce alone."""
    from mpitrain.bench.allreduce import measure as time_allreduce
    from mpitrain.bench.calibrate import calibrate_links, compute_share, host_share

    layout = state_of(comm).layout()
    host = host_share(comm)
    host["modelled_time_sharing"] = max(1.0, host["oversubscription"])
    size = comm.Get_size()
    algorithms = [name for name in ("ring", "hierarchical", "mpi", "root", "shm")
                  if (name != "shm" or layout.nodes == 1) and size > 1]
    names = algorithms or ["auto"]
    rows = args.batch * size * args.measure_steps
    calibrations, guesses = [], []
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for repeat in range(args.measure_repeats):
        links = calibrate_links(comm, layout)
        share = compute_share(comm, step_compute)
        calibrations.append({"links": links.__dict__, "compute": share})
        guess = predict(work["message_bytes"], share["together_seconds"], layout.nodes,
                        max(layout.sizes), links)
        guesses.append({name: guess.get(name, {"step_seconds": share["together_seconds"],
                                               "comm_seconds": 0.0}) for name in names})
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            runs[name].append(_train_steps(args, comm, name, rows))
    itemsize = np.dtype(args.dtype).itemsize
    alone = {row.algorithm: row.latency_us * 1e-6 for row in time_allreduce(
        comm, algorithms, np.dtype(args.dtype), work["message_bytes"] // itemsize * itemsize,
        "sum", 5, 40)} if algorithms else {}
    results = {}
    for name in names:
        steps = [run["seconds"] for run in runs[name]]
        step = statistics.median(steps)
        guess = _median_of([g[name] for g in guesses])
        timed = alone.get(name, 0.0)
        results[name] = {"predicted_step_seconds": guess["step_seconds"],
                         "predicted_step_runs": [g[name]["step_seconds"] for g in guesses],
                         "measured_step_seconds": step,
                         "measured_step_runs": steps,
                         "spread": max(steps) / min(steps) - 1,
                         "predicted_comm_seconds": guess["comm_seconds"],
                         "measured_comm_seconds": statistics.median(
                             run["comm_seconds"] for run in runs[name]),
                         "measured_compute_seconds": statistics.median(
                             run["compute_seconds"] for run in runs[name]),
                         "measured_allreduce_seconds": timed,
                         "comm_ratio": guess["comm_seconds"] / timed if timed else 1.0,
                         "ratio": guess["step_seconds"] / step,
                         "error": guess["step_seconds"] / step - 1}
    return {"layout": layout.describe(), "ranks_per_node": list(layout.sizes),
            "host": host, "compute": _median_of([c["compute"] for c in calibrations]),
            "links": _median_of([c["links"] for c in calibrations]),
            "calibrations": calibrations, "algorithms": results}


# -- output ------------------------------------------------------------------------------

def _us(seconds: float) -> str:
    return f"{seconds * 1e6:10.1f}"


def report(doc: dict[str, Any]) -> str:
    """The human-readable summary."""
    w, links, scenario = doc["workload"], doc["links"], doc["scenario"]
    lines = [f"# plan: {w['model']} {w['dims']} ({w['parameters']} parameters, "
             f"{w['message_bytes']} bytes per step message), {w['batch']} rows per rank per "
             f"step, {w['dtype']}",
             f"# compute per step {doc['compute_seconds'] * 1e6:.1f} us; network "
             f"{links['beta_net'] * 8 / 1e9:g} Gbit/s, {links['alpha_net'] * 1e6:g} us; node "
             f"{links['beta_node'] / 1e9:.1f} GB/s, {links['alpha_node'] * 1e6:g} us",
             f"## {scenario['nodes']} nodes x {scenario['ranks_per_node']} ranks = "
             f"{scenario['ranks']} ranks",
             f"{'algorithm':>12} {'comm us':>10} {'step us':>10} {'comm %':>7} "
             f"{'efficiency':>10}"]
    for name, row in scenario["algorithms"].items():
        lines.append(f"{name:>12} {_us(row['comm_seconds'])} {_us(row['step_seconds'])} "
                     f"{100 * row['comm_fraction']:6.1f}% {100 * row['efficiency']:9.1f}%")
    lines.append(f"fastest by the model: {scenario['fastest']}; --reduce auto picks: "
                 f"{scenario['auto']} (select.py's measured table)")
    lines.append(f"## scaling, {scenario['ranks_per_node']} ranks per node")
    lines.append(f"{'nodes':>6} {'ranks':>6} {'fastest':>12} {'auto now':>12} {'step us':>10} "
                 f"{'comm %':>7} {'efficiency':>10}")
    for row in doc["scaling"]:
        lines.append(f"{row['nodes']:>6} {row['ranks']:>6} {row['fastest']:>12} "
                     f"{row['auto']:>12} {_us(row['step_seconds'])} "
                     f"{100 * row['comm_fraction']:6.1f}% {100 * row['efficiency']:9.1f}%")
    start = doc["communication_dominates_from"]
    lines.append(f"communication takes longer than computation from {start} ranks"
                 if start else "communication stays below computation at every scale above")
    measured = doc.get("measured")
    if measured:
        host, share, fitted = measured["host"], measured["compute"], measured["links"]
        load = host["load_average"]
        lines.append(f"## validation on this launch ({measured['layout']}): "
                     f"{host['ranks_on_host']} ranks on {host['cores']} cores of the busiest "
                     f"host (oversubscription {host['oversubscription']:.2f}), load average "
                     f"{load[0] if load else float('nan'):.1f}")
        lines.append(f"# calibrated: compute {share['alone_seconds'] * 1e6:.1f} us alone, "
                     f"{share['together_seconds'] * 1e6:.1f} us with every rank at once "
                     f"(time-sharing x{share['time_sharing']:.2f}, cores alone would give "
                     f"x{host['modelled_time_sharing']:.2f}); across nodes "
                     f"{fitted['alpha_net'] * 1e6:.1f} us + {fitted['beta_net'] / 1e9:.2f} "
                     f"GB/s, in a node {fitted['alpha_node'] * 1e6:.1f} us + "
                     f"{fitted['beta_node'] / 1e9:.2f} GB/s")
        lines.append(f"{'algorithm':>12} {'step: predicted us':>18} {'measured us':>12} "
                     f"{'error':>6} {'spread':>6} | {'allreduce: predicted us':>23} "
                     f"{'measured us':>12} {'ratio':>6}")
        for name, row in measured["algorithms"].items():
            lines.append(f"{name:>12} {row['predicted_step_seconds'] * 1e6:18.1f} "
                         f"{row['measured_step_seconds'] * 1e6:12.1f} "
                         f"{100 * row['error']:+5.0f}% {100 * row['spread']:5.0f}% | "
                         f"{row['predicted_comm_seconds'] * 1e6:23.1f} "
                         f"{row['measured_allreduce_seconds'] * 1e6:12.1f} "
                         f"{row['comm_ratio']:6.2f}")
    return "\n".join(lines)


def write_plot(path: str, doc: dict[str, Any]) -> bool:
    """Projected efficiency against ranks per algorithm (and predicted against measured
    step times with --measure); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    measured = doc.get("measured")
    fig, axes = plt.subplots(1, 2 if measured else 1, figsize=(12 if measured else 6.5, 4.5),
                             squeeze=False)
    ax = axes[0][0]
    ranks = [row["ranks"] for row in doc["scaling"]]
    compute = doc["compute_seconds"]
    for name in MODELLED:
        points = [(row["ranks"], compute / (compute + row["seconds"][name]))
                  for row in doc["scaling"] if name in row["seconds"]]
        if len(points) > 1:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("ranks")
    ax.set_ylabel("weak-scaling efficiency (model)")
    links = doc["links"]
    ax.set_title(f"{doc['scenario']['ranks_per_node']} ranks/node, "
                 f"{links['beta_net'] * 8 / 1e9:g} Gb/s, {links['alpha_net'] * 1e6:g} us")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    if ranks:
        ax.set_xlim(min(ranks) * 0.8, max(ranks) * 1.25)
    if measured:
        ax = axes[0][1]
        names = list(measured["algorithms"])
        rows = [measured["algorithms"][n] for n in names]
        x = np.arange(len(names))
        ax.bar(x - 0.2, [r["predicted_step_seconds"] * 1e6 for r in rows], 0.4,
               label="predicted")
        median = np.array([r["measured_step_seconds"] for r in rows])
        runs = [r.get("measured_step_runs", [r["measured_step_seconds"]]) for r in rows]
        ax.bar(x + 0.2, median * 1e6, 0.4, label="measured (median; bars: repeats' range)",
               yerr=1e6 * np.array([median - [min(r) for r in runs],
                                    [max(r) for r in runs] - median]), capsize=3)
        ax.set_xticks(x, names)
        ax.set_ylabel("step time (us)")
        ax.set_title(f"{measured['layout']} on this machine (load "
                     f"{(measured['host']['load_average'] or [float('nan')])[0]:.0f}): "
                     "predicted vs measured")
        ax.legend(fontsize="small")
    save_figure(fig, path)
    return True


def _outputs(args: argparse.Namespace, comm: MPI.Comm, doc: dict[str, Any]) -> None:
    if comm.Get_rank() != 0:
        return
    print(report(doc), flush=True)
    save_outputs(doc, json_path=args.json, plot_path=args.plot, plot=write_plot)


def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """Collective: measure what is needed here, model the rest; rank 0 prints."""
    checked(comm, _check, args)
    work = checked(comm, workload, args)
    itemsize = np.dtype(args.dtype).itemsize
    def step_compute(on: MPI.Comm) -> float:
        from mpitrain.bench.train import kernel_step_seconds

        return kernel_step_seconds(on, dims=work["dims"], model=args.model,
                                   dtype=np.dtype(args.dtype), seed=0,
                                   rows=max(4 * args.batch, 1024), batch=args.batch,
                                   steps=200)

    compute = args.compute_us * 1e-6 if args.compute_us is not None else step_compute(comm)
    node_gbytes = (args.node_gbytes if args.node_gbytes is not None
                   else copy_bandwidth(comm, work["message_bytes"]) / 1e9)
    links = Links.from_network(gbps=args.link_gbps, latency_us=args.link_latency_us,
                               node_latency_us=args.node_latency_us,
                               node_gbytes_per_s=node_gbytes)
    message = work["message_bytes"]
    nodes, per_node = args.nodes, args.ranks_per_node
    algorithms = predict(message, compute, nodes, per_node, links)
    table = scaling(message, itemsize, compute, per_node, args.max_ranks, links)
    dominated = [row["ranks"] for row in table if row["comm_fraction"] > 0.5]
    doc = {"workload": work, "compute_seconds": compute, "links": links.__dict__,
           "scenario": {"nodes": nodes, "ranks_per_node": per_node,
                        "ranks": nodes * per_node, "algorithms": algorithms,
                        "fastest": min(algorithms,
                                       key=lambda n: algorithms[n]["step_seconds"]),
                        "auto": choose(message, nodes * per_node, itemsize,
                                       shared=nodes == 1, nodes=nodes, slices=per_node)},
           "scaling": table,
           "communication_dominates_from": dominated[0] if dominated else None,
           "measured": measure(args, comm, work, step_compute) if args.measure else None}
    checked(comm, _outputs, args, comm, doc)
    return 0
