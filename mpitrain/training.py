"""``train()``: one training run from a resolved config — the shared core behind the CLI
and the Python API.

files → rank's shard (:mod:`.data`) → kernels (:mod:`.gradients`) → flat gradient buffer →
collective (:mod:`.collectives`) → optimizer (:mod:`.optimizers`) → parameters, driven by
the loop (:mod:`.loop`) and a strategy (:mod:`.strategies`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from mpi4py import MPI

from mpitrain.checkpoint.policy import load_resume_checkpoint, make_checkpointer
from mpitrain.models.gradient import BatchGradient
from mpitrain.optimizers import make_optimizer
from mpitrain.runtime.compile import warm_kernels
from mpitrain.runtime.launch import check_mpi_wiring, limit_loaded_blas
from mpitrain.runtime.outputs import RunOutput, open_run_output
from mpitrain.runtime.progress import progress_line
from mpitrain.runtime.watchdog import start_watchdog

from . import __version__
from .config import TrainConfig, resolve, shared_memory_allowed, to_toml, validate
from .data import Dataset, SyntheticSpec, load_dataset
from .errors import UserError, agree, checked
from .evaluation import Evaluator, label_stats
from .loop import run_loop
from .models import Layout, init_params, loss_kind, network_dims, save_model, task_of
from .strategies import Strategy, SyncStrategy


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """Trained parameters (named views of ``flat``), per-period metrics, the config and the
    run's summary (what ``summary.json`` holds: data sizes, layer sizes, status, ...)."""

    params: dict[str, np.ndarray]
    flat: np.ndarray
    history: list[dict[str, Any]]
    config: TrainConfig
    status: str
    summary: dict[str, Any]


def train(config: TrainConfig | None = None, *, comm: MPI.Comm | None = None,
          stop_requested: Callable[[], bool] | None = None, **options: Any) -> TrainResult:
    """Train a model with every rank of ``comm``: collective, call it on all ranks.

    Pass a :class:`TrainConfig` or its fields as keywords (``train(data="digits",
    model="softmax", epochs=5)``). Bad input raises :class:`mpitrain.errors.UserError` on
    every rank. ``stop_requested`` (e.g. a signal flag) is polled once per step; when it is
    true on any rank, all ranks checkpoint and return with status ``"stopped"``.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    config = checked(comm, _config_from, config, options)
    started = time.perf_counter()
    check_mpi_wiring(MPI.COMM_WORLD)  # world of 1 everywhere: nothing to agree with
    limit_loaded_blas()
    dataset = load_dataset(
        config.data, comm=comm, task=task_of(config.model), dtype=np.dtype(config.dtype),
        seed=config.seed, test_fraction=config.test_fraction, test_source=config.test_data,
        standardize=config.standardize,
        synthetic=synthetic_spec(config))
    agree(comm, _model_data_mismatch(config, dataset))
    kind = loss_kind(config.model)
    layout = Layout(network_dims(config.model, n_features=dataset.n_features,
                                 n_classes=dataset.n_classes, hidden=config.hidden))
    warm_kernels(comm, dtype=np.dtype(config.dtype), label_dtype=dataset.train.y.dtype,
                 kernels=_kernels_needed(config, comm))
    params = init_params(layout, seed=config.seed, dtype=config.dtype)
    federated = config.mode == "fedavg"
    strategy: Strategy
    if federated:
        # imported here: the federated code pulls in scipy, ~0.2 s of every sync start-up
        from .strategies.federated import build_federated_strategy

        strategy = build_federated_strategy(config, layout=layout, kind=kind, params=params,
                                            dataset=dataset, comm=comm)
    else:
        strategy = _sync_strategy(config, layout=layout, kind=kind, params=params,
                                  dataset=dataset, comm=comm)
    resume_from = load_resume_checkpoint(config, comm, strategy)
    output = open_run_output(config.out, comm=comm, overwrite=config.overwrite,
                             resume=config.resume is not None, quiet=config.quiet)
    checkpointer = make_checkpointer(strategy, config, comm)
    start = 0
    if resume_from is not None:
        strategy.restore_state(resume_from.arrays, resume_from.meta)
        start = int(resume_from.meta["next_unit"])
        checkpointer.periods = int(resume_from.meta["periods"])
        output.keep_metrics(checkpointer.periods)
        output.say(f"resuming from {resume_from.path} at unit {start}")
    output.write_text("config.toml", to_toml(config))
    summary = _summary_head(config, dataset, layout, comm)
    if federated:
        summary["federated"] = strategy.summary()
    output.write_json("summary.json", {**summary, "status": "running"})
    history: list[dict[str, Any]] = []

    def on_period(metrics: dict[str, Any]) -> None:
        history.append(metrics)
        checkpointer.periods += 1
        line = (progress_line(metrics, unit="round", total=config.rounds) if federated
                else progress_line(metrics, unit="epoch", total=config.epochs))
        output.record(metrics, line)

    watchdog = start_watchdog(comm, timeout=config.stall_timeout)
    try:
        result = run_loop(strategy, start=start, on_period=on_period,
                          stop_requested=stop_requested or (lambda: False),
                          after_unit=checkpointer.after_unit, watchdog=watchdog)
        if not result.stopped:
            checkpointer.save(result.next_unit)
        strategy.close()
    except UserError as exc:
        output.write_json("summary.json", {**summary, "status": "failed", "error": str(exc)})
        if exc.agreed:  # every rank is here: collective clean-up is safe
            strategy.close()
        raise
    finally:
        output.close()
        if watchdog is not None:
            watchdog.stop()
    status = "stopped" if result.stopped else "finished"
    if federated:
        summary["federated"] = strategy.summary()  # with the final epsilon
    summary = {**summary, "status": status, "seconds": time.perf_counter() - started,
               "final": history[-1] if history else {}}
    _write_final(output, config, layout, params, dataset, summary)
    return TrainResult(params=layout.views(params), flat=params, history=history,
                       config=config, status=status, summary=summary)


def synthetic_spec(config: TrainConfig) -> SyntheticSpec:
    """The ``--data synthetic`` options of ``config``."""
    return SyntheticSpec(samples=config.samples, features=config.features,
                         classes=config.classes, noise=config.noise, clusters=config.clusters)


def _config_from(config: TrainConfig | None, options: dict[str, Any]) -> TrainConfig:
    if config is None:
        return resolve({}, options)
    if options:
        config = dataclasses.replace(config, **options)
    validate(config)
    return config


def _kernels_needed(config: TrainConfig, comm: MPI.Comm) -> frozenset[str] | None:
    """The kernels a sync run calls (loading each from numba's cache takes up to ~0.1 s per
    process, so start-up loads only these); None (all) for federated runs."""
    if config.mode != "sync":
        return None
    needed = {"split_step" if config.overlap else "step_gradient", "network_loss",
              config.optimizer}
    if config.compress != "none":
        needed.add("compress")
    if comm.Get_size() > 1:
        needed.add("shared")
    return frozenset(needed)


def _model_data_mismatch(config: TrainConfig, dataset: Dataset) -> str | None:
    """Message when the data cannot train this model (same outcome on every rank)."""
    if config.model == "logistic" and dataset.n_classes > 2:
        return (f"--model logistic needs binary labels 0/1 but the data has "
                f"{dataset.n_classes} classes; use --model softmax or mlp")
    return None


def _sync_strategy(config: TrainConfig, *, layout: Layout, kind: int, params: np.ndarray,
                   dataset: Dataset, comm: MPI.Comm) -> SyncStrategy:
    size = comm.Get_size()
    max_rows = -(-config.batch_size // size) if config.shuffle == "local" else config.batch_size
    max_rows = min(max_rows, max(1, len(dataset.train.y)))
    regression = task_of(config.model) == "regression"
    test = (Evaluator(layout, loss_kind=kind, shard=dataset.test, comm=comm)
            if dataset.test.n_total > 0 else None)
    return SyncStrategy(
        comm=comm, layout=layout, params=params,
        optimizer=make_optimizer(config.optimizer, params, weight_decay=config.weight_decay,
                                 momentum=config.momentum, nesterov=config.nesterov,
                                 beta1=config.beta1, beta2=config.beta2, eps=config.eps),
        gradient=BatchGradient(layout, loss_kind=kind, max_rows=max_rows,
                               dtype=params.dtype),
        train=dataset.train, test=test,
        train_label_stats=label_stats(dataset.train, comm) if regression else None,
        epochs=config.epochs, batch_size=config.batch_size, shuffle=config.shuffle,
        seed=config.seed, lr=config.lr, lr_schedule=config.lr_schedule,
        lr_step_epochs=config.lr_step_epochs, lr_gamma=config.lr_gamma,
        reduce_algorithm=config.reduce, compress=config.compress, overlap=config.overlap,
        shared_memory=shared_memory_allowed(config))


def _summary_head(config: TrainConfig, dataset: Dataset, layout: Layout,
                  comm: MPI.Comm) -> dict[str, Any]:
    return {
        "mpitrain_version": __version__,
        "ranks": comm.Get_size(),
        "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
        "data": {"name": dataset.name, "train_rows": dataset.train.n_total,
                 "test_rows": dataset.test.n_total, "features": dataset.n_features,
                 "classes": dataset.n_classes},
        "model": {"name": config.model, "dims": list(layout.dims), "parameters": layout.size},
        "config": config.to_dict(),
    }


def _write_final(output: RunOutput, config: TrainConfig, layout: Layout, params: np.ndarray,
                 dataset: Dataset, summary: dict[str, Any]) -> None:
    if output.directory is None:
        return
    save_model(output.directory / "model.npz", model=config.model, layout=layout,
               flat=params, mean=dataset.mean, std=dataset.std, version=__version__)
    output.write_json("summary.json", summary)


__all__ = ["TrainResult", "UserError", "train"]
