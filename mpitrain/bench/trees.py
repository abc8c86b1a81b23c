"""``mpitrain bench trees``: fit time of ``--model gbdt|forest|kmeans`` on P ranks, against
the same fit on one rank and against scikit-learn (and LightGBM where installed).

Run under the launcher, e.g. ``mpiexec -n 2 python -m mpitrain bench trees``. Workload:
synthetic data (``--samples`` rows × ``--features``, ``--classes``, 20% held out),
float32. For each model in ``--models``: the P-rank fit (``mpitrain.train``; fit seconds =
the loop's seconds: data loading, binning and k-means|| initialisation excluded), then
rank 0 alone on the same rows (``comm=COMM_SELF``; the others sleep in a polling
barrier), then, on rank 0, the peers with the same settings and thread count (1: each
rank is one core): scikit-learn's
``HistGradientBoostingClassifier`` / ``RandomForestClassifier`` / ``KMeans`` and
``lightgbm.LGBMClassifier`` when importable. Also each rank's peak RSS during the P-rank
run of each model (Linux: the peak is reset before it, so a model's figure is its own;
elsewhere ``ru_maxrss``, the process's so far) and the RSS of an idle process with the
package imported (``rss_mb_baseline``: what every figure includes). Results are printed by
rank 0 and written with ``--json FILE``:

    {"ranks": P, "workload": {...}, "rss_mb_baseline": ...,
     "models": {name: {"seconds", "one_rank_seconds",
     "speedup", "efficiency", "test_accuracy" or "inertia", "binning_seconds" (trees),
     "peers": {name: {"seconds", "test_accuracy" or "inertia"}}, "rss_mb_per_rank": [...],
     "rss_mb_after_binning_per_rank" (trees: RSS once the float rows are dropped)}}}

A peer's ``seconds`` is its ``fit``, which bins the data; for LightGBM its binning
(Dataset construction) and boosting are also timed apart.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any

import numpy as np
from mpi4py import MPI
from threadpoolctl import threadpool_limits

from mpitrain import train
from mpitrain.bench import output_file
from mpitrain.data import load_dataset
from mpitrain.errors import shared_error
from mpitrain.runtime.compile import quiet_barrier
from mpitrain.training import synthetic_spec

MODELS = ("gbdt", "forest", "kmeans")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bench trees``."""
    parser.add_argument("--models", default="gbdt,kmeans", metavar="LIST",
                        help=f"comma-separated subset of {','.join(MODELS)} (default: "
                             "gbdt,kmeans)")
    parser.add_argument("--samples", type=int, default=1_000_000, help="rows (default 1M)")
    parser.add_argument("--features", type=int, default=50, help="features (default 50)")
    parser.add_argument("--classes", type=int, default=2, help="classes (default 2)")
    parser.add_argument("--trees", type=int, default=50, help="gbdt rounds / forest trees")
    parser.add_argument("--max-depth", type=int, default=6, help="tree depth (default 6)")
    parser.add_argument("--clusters", type=int, default=8, metavar="K",
                        help="kmeans K (default 8)")
    parser.add_argument("--max-iter", type=int, default=20,
                        help="kmeans Lloyd iterations, tol 0 (default 20)")
    parser.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                        help="skip the P independent one-rank fits run at once (the "
                             "ceiling of the speedup)")
    parser.add_argument("--no-peers", action="store_true",
                        help="skip scikit-learn / LightGBM")
    parser.add_argument("--json", default=None, metavar="FILE", help="write results here")


def _options(args: argparse.Namespace, model: str) -> dict[str, Any]:
    common = dict(data="synthetic", samples=args.samples, features=args.features,
                  classes=args.classes, clusters_per_class=2, quiet=True, model=model)
    if model == "kmeans":
        return {**common, "clusters": args.clusters, "max_iter": args.max_iter,
                "tol": 0.0, "standardize": False}
    return {**common, "trees": args.trees, "max_depth": args.max_depth}


def _reset_peak_rss() -> None:
    """Start a new peak of this process's resident memory (Linux: VmHWM from now)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:  # not Linux, or not allowed: the peak stays the process's
        pass


def _peak_rss_mb() -> float:
    """Peak resident memory (MiB) since :func:`_reset_peak_rss`, else of the process."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fit_seconds(result: Any) -> float:
    return float(sum(line["seconds"] for line in result.history))


def _per_iteration(result: Any, key: str) -> dict[str, float]:
    """k-means: fit seconds per Lloyd iteration (the runs may stop at different counts)."""
    if result.summary["model"].get("name") != "kmeans":
        return {}
    return {key: _fit_seconds(result) / max(len(result.history), 1),
            "iterations": len(result.history)}


def _score(result: Any) -> dict[str, float]:
    last = result.history[-1]
    key = "inertia" if "inertia" in last else "test_accuracy"
    return {key: float(last[key])}


def _peers(args: argparse.Namespace, model: str) -> dict[str, dict[str, float]]:
    """Rank 0: the peers on the same rows (one thread)."""
    options = _options(args, model)
    config_like = argparse.Namespace(**{**vars(args), "noise": 1.0, "clusters_per_class": 2})
    data = load_dataset("synthetic", comm=MPI.COMM_SELF, task="classification",
                        dtype=np.float32, seed=0, standardize=False,
                        synthetic=synthetic_spec(config_like))
    X, y, Xt, yt = data.train.X, data.train.y, data.test.X, data.test.y
    peers: dict[str, Any] = {}
    if model == "gbdt":
        from sklearn.ensemble import HistGradientBoostingClassifier
        peers["sklearn"] = HistGradientBoostingClassifier(
            max_iter=args.trees, max_depth=args.max_depth, max_leaf_nodes=None,
            early_stopping=False)
        try:
            import lightgbm
            peers["lightgbm"] = lightgbm.LGBMClassifier(
                n_estimators=args.trees, max_depth=args.max_depth,
                num_leaves=2 ** args.max_depth, n_jobs=1, verbose=-1)
        except ImportError:  # the [bench] extra
            pass
    elif model == "forest":
        from sklearn.ensemble import RandomForestClassifier
        peers["sklearn"] = RandomForestClassifier(n_estimators=args.trees,
                                                  max_depth=args.max_depth, n_jobs=1)
    else:
        from sklearn.cluster import KMeans, kmeans_plusplus

        # its k-means++ centers computed beforehand (not timed): the fit is Lloyd alone, as
        # ours (k-means|| excluded), so seconds per iteration compare the iterations
        init, _ = kmeans_plusplus(X, options["clusters"], random_state=0)
        peers["sklearn"] = KMeans(n_clusters=options["clusters"], init=init, n_init=1,
                                  max_iter=args.max_iter, tol=0.0)
    out = {}
    with threadpool_limits(limits=1):  # the same thread count as one rank
        for name, estimator in peers.items():
            started = time.perf_counter()
            estimator.fit(X, y)
            seconds = time.perf_counter() - started
            score = ({"inertia": float(estimator.inertia_),
                      "seconds_per_iteration": seconds / max(int(estimator.n_iter_), 1),
                      "iterations": int(estimator.n_iter_)} if model == "kmeans"
                     else {"test_accuracy": float(estimator.score(Xt, yt))})
            out[name] = {"seconds": seconds, **score}
    if "lightgbm" in peers:  # its fit bins the data; ours excludes binning: time it apart
        out["lightgbm"].update(_lightgbm_parts(peers["lightgbm"], X, y))
    return out


def _lightgbm_parts(estimator: Any, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """LightGBM's binning (Dataset construction) and boosting seconds, apart."""
    import lightgbm

    params = {**estimator.get_params(), "objective": "binary", "num_threads": 1}
    rounds = params.pop("n_estimators")
    for unused in ("n_jobs", "importance_type", "class_weight"):
        params.pop(unused, None)
    started = time.perf_counter()
    dataset = lightgbm.Dataset(X, y, params={"verbose": -1}).construct()
    binned = time.perf_counter()
    lightgbm.train(params, dataset, num_boost_round=rounds)
    return {"binning_seconds": binned - started,
            "boosting_seconds": time.perf_counter() - binned}


def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """Collective: every model of ``--models``; rank 0 prints and writes the results."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise shared_error(f"--models takes a comma-separated subset of {','.join(MODELS)} "
                           f"(got {args.models!r})")
    rank, ranks = comm.Get_rank(), comm.Get_size()
    report: dict[str, Any] = {"ranks": ranks, "workload": {
        k: getattr(args, k) for k in ("samples", "features", "classes", "trees", "max_depth",
                                      "clusters", "max_iter")},
        "rss_mb_baseline": _peak_rss_mb(), "models": {}}
    if rank == 0:
        print(json.dumps({"rss_mb_baseline": report["rss_mb_baseline"]}), flush=True)
    for model in models:
        _reset_peak_rss()
        result = train(comm=comm, **_options(args, model))
        seconds = _fit_seconds(result)
        rss = comm.gather(_peak_rss_mb(), root=0)
        entry: dict[str, Any] = {"seconds": seconds, **_score(result),
                                 **_per_iteration(result, "seconds_per_iteration"),
                                 "rss_mb_per_rank": rss}
        if "binning_seconds" in result.summary:  # not in "seconds" (peers' fit includes it)
            entry["binning_seconds"] = result.summary["binning_seconds"]
        if "rss_mb_after_binning" in result.summary:  # floats dropped: the codes' RSS
            entry["rss_mb_after_binning_per_rank"] = comm.gather(
                result.summary["rss_mb_after_binning"], root=0)
        if ranks > 1 and args.ceiling:
            # every rank fits all the rows alone at once: what P independent runs get from
            # the shared memory bandwidth and cores (the ceiling of the P-rank speedup)
            alone = train(comm=MPI.COMM_SELF, **_options(args, model))
            independent = comm.gather(_fit_seconds(alone), root=0)
        if rank == 0:
            one = train(comm=MPI.COMM_SELF, **_options(args, model))
            entry["one_rank_seconds"] = _fit_seconds(one)
            entry.update(_per_iteration(one, "one_rank_seconds_per_iteration"))
            entry["speedup"] = entry["one_rank_seconds"] / seconds
            entry["efficiency"] = entry["speedup"] / ranks
            if ranks > 1 and args.ceiling:
                entry["independent_seconds"] = max(independent)
                entry["ceiling_speedup"] = ranks * entry["one_rank_seconds"] / max(independent)
                entry["of_ceiling"] = entry["speedup"] / entry["ceiling_speedup"]
            if not args.no_peers:
                entry["peers"] = _peers(args, model)
            print(json.dumps({model: entry}), flush=True)
        quiet_barrier(comm)  # the others sleep while rank 0 runs alone
        report["models"][model] = entry
    if rank == 0 and args.json:
        output_file(args.json).write_text(json.dumps(report, indent=2))
    return 0
