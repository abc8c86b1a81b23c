"""``train()``: one training run from a resolved config — the shared core behind the CLI
and the Python API.

files → rank's shard (:mod:`.data`) → kernels (:mod:`.models.gradient`) → flat gradient
buffer → collective (:mod:`.collectives`) → optimizer (:mod:`.optimizers`) → parameters,
driven by the loop (:mod:`.loop`) and the strategy ``--mode`` names (:mod:`.strategies`),
with checkpoints (:mod:`.checkpoint`) and run-time services (:mod:`.runtime`) around it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from mpitrain.checkpoint.policy import load_resume_checkpoint, make_checkpointer
from mpitrain.checkpoint.store import Checkpoint
from mpitrain.collectives.shared_memory import single_node
from mpitrain.runtime.compile import warm_kernels
from mpitrain.runtime.launch import check_mpi_wiring, limit_loaded_blas
from mpitrain.runtime.outputs import RunOutput, open_run_output, written
from mpitrain.runtime.progress import progress_line
from mpitrain.runtime.watchdog import start_watchdog

from . import __version__
from .config import TrainConfig, coerce_keywords, resolve, to_toml, validate
from .data import Dataset, SyntheticSpec, load_dataset
from .errors import UserError, agree, checked
from .loop import run_loop
from .models import Layout, init_params, loss_kind, network_dims, save_model, task_of
from .strategies import strategy_class


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
    every rank. ``stop_requested`` (e.g. a signal flag) is polled once per step (or round),
    when the step's message is about to be reduced; when it is true on any rank, all ranks
    checkpoint and return with status ``"stopped"``.
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
    if config.reduce == "shm":  # collective test, the same answer on every rank
        agree(comm, None if single_node(comm) else
              "--reduce shm needs every rank on one node, but the ranks span several nodes; "
              "use --reduce auto")
    kind = loss_kind(config.model)
    layout = Layout(network_dims(config.model, n_features=dataset.n_features,
                                 n_classes=dataset.n_classes, hidden=config.hidden))
    mode = strategy_class(config.mode)
    warm_kernels(comm, dtype=np.dtype(config.dtype), label_dtype=dataset.train.y.dtype,
                 kernels=mode.kernels(config, ranks=comm.Get_size()),
                 announce=not config.quiet)
    params = init_params(layout, seed=config.seed, dtype=config.dtype)
    strategy = mode.build(config, layout=layout, kind=kind, params=params, dataset=dataset,
                          comm=comm)
    resume_from = load_resume_checkpoint(config, comm, strategy)
    output = open_run_output(config.out, comm=comm, overwrite=config.overwrite,
                             resume=config.resume is not None, quiet=config.quiet,
                             continues=_inside(resume_from, config.out),
                             checkpoint_every=config.checkpoint_every)
    checkpointer = make_checkpointer(strategy, config, comm)

    def save(name: str, write: Callable[..., object], *args: Any) -> None:
        """Rank 0 writes ``--out/name``; a failed write is one error on every rank."""
        if config.out is None:
            write(*args)  # nothing is written; progress lines are still printed
        else:
            written(comm, str(Path(config.out) / name), write, *args)

    start = 0
    if resume_from is not None:
        strategy.restore_state(resume_from.arrays, resume_from.meta)
        start = int(resume_from.meta["next_unit"])
        checkpointer.periods = int(resume_from.meta["periods"])
        save("metrics.jsonl", output.keep_metrics, checkpointer.periods)
        output.say(f"resuming from {resume_from.path} at unit {start}")
    save("config.toml", output.write_text, "config.toml", to_toml(config))
    summary = {**_summary_head(config, dataset, layout, comm), **strategy.summary()}
    save("summary.json", output.write_json, "summary.json", {**summary, "status": "running"})
    history: list[dict[str, Any]] = []

    def on_period(metrics: dict[str, Any]) -> None:
        history.append(metrics)
        checkpointer.periods += 1
        save("metrics.jsonl", output.record, metrics,
             progress_line(metrics, unit=strategy.period_name,
                           total=getattr(config, strategy.length_option)))

    watchdog = start_watchdog(comm, timeout=config.stall_timeout)
    closed = False
    try:
        result = run_loop(strategy, start=start, on_period=on_period,
                          stop_requested=stop_requested or (lambda: False),
                          after_unit=checkpointer.after_unit, watchdog=watchdog)
        if not result.stopped:
            checkpointer.save(result.next_unit)
        strategy.close()
        closed = True
        status = "stopped" if result.stopped else "finished"
        summary = {**summary, **strategy.summary(), "status": status,
                   "seconds": time.perf_counter() - started,
                   "final": history[-1] if history else {}}
        save("model.npz", _write_final, output, config, layout, params, dataset, summary)
    except UserError as exc:
        output.write_status({**summary, "status": "failed", "error": str(exc)})
        if exc.agreed and not closed:  # every rank is here: collective clean-up is safe
            strategy.close()
        raise
    finally:
        output.close()
        if watchdog is not None:
            watchdog.stop()
    return TrainResult(params=layout.views(params), flat=params, history=history,
                       config=config, status=status, summary=summary)


def synthetic_spec(config: TrainConfig) -> SyntheticSpec:
    """The ``--data synthetic`` options of ``config``."""
    return SyntheticSpec(samples=config.samples, features=config.features,
                         classes=config.classes, noise=config.noise, clusters=config.clusters)


def _config_from(config: TrainConfig | None, options: dict[str, Any]) -> TrainConfig:
    options = coerce_keywords(options, source="train()")
    if config is None:
        return resolve({}, options)
    if options:
        config = dataclasses.replace(config, **options)
    validate(config)
    return config


def _inside(checkpoint: Checkpoint | None, out: str | None) -> bool:
    """Does the run continue from a checkpoint of its own --out (not another run's)?"""
    if checkpoint is None or out is None:
        return False
    return Path(out).resolve() in Path(checkpoint.path).resolve().parents


def _model_data_mismatch(config: TrainConfig, dataset: Dataset) -> str | None:
    """Message when the data cannot train this model (same outcome on every rank)."""
    if config.model == "logistic" and dataset.n_classes > 2:
        return (f"--model logistic needs binary labels 0/1 but the data has "
                f"{dataset.n_classes} classes; use --model softmax or mlp")
    return None


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
