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
import scipy.sparse
from mpi4py import MPI

from mpitrain.checkpoint.policy import load_resume_checkpoint, make_checkpointer
from mpitrain.checkpoint.store import Checkpoint
from mpitrain.collectives.shared_memory import single_node
from mpitrain.runtime.compile import compile_notice, in_waves, prepare_numba
from mpitrain.runtime.launch import check_mpi_wiring, limit_loaded_blas
from mpitrain.runtime.outputs import RunOutput, open_run_output, written
from mpitrain.runtime.progress import progress_line
from mpitrain.runtime.watchdog import start_watchdog

from . import __version__
from .config import TrainConfig, coerce_keywords, feature_columns, resolve, to_toml, validate
from .data import Arrays, Dataset, ReadOptions, SyntheticSpec, load_dataset
from .data.memory import IN_MEMORY
from .errors import UserError, agree, checked
from .kernels.trees import warm as warm_tree_kernels
from .kernels.warmup import KERNELS, warm_up
from .loop import run_loop
from .models import (
    BoundModel,
    Model,
    ModelError,
    SavedModel,
    make_model,
    model_name,
    save_model,
    trained_model,
)
from .models.bound import user_call
from .models.checks import HOOK_NAMES, smoke_test
from .models.estimators import SavedEstimator, save_estimator
from .models.registry import canonical_name, options_text, parse_options
from .models.sparse import has_sparse_variant, sparse_variant
from .strategies import ESTIMATORS, strategy_class, strategy_for
from .strategies.base import Strategy


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """Trained parameters (named views of ``flat``), per-period metrics, the config, the
    run's summary (what ``summary.json`` holds: data sizes, layer sizes, status, ...) and
    the trained model as model.npz holds it (``predict(result.model, X)``)."""

    params: dict[str, np.ndarray]
    flat: np.ndarray
    history: list[dict[str, Any]]
    config: TrainConfig
    status: str
    summary: dict[str, Any]
    model: SavedModel | SavedEstimator


def train(config: TrainConfig | None = None, *, comm: MPI.Comm | None = None,
          stop_requested: Callable[[], bool] | None = None, X: Any = None, y: Any = None,
          test_X: Any = None, test_y: Any = None, **options: Any) -> TrainResult:
    """Train a model with every rank of ``comm``: collective, call it on all ranks.

    Pass a :class:`TrainConfig` or its fields as keywords (``train(data="digits",
    model="softmax", epochs=5)``); ``model`` may also be a model object
    (``model=MyModel(rank=8)``, a :class:`mpitrain.models.Model`). Bad input raises
    :class:`mpitrain.errors.UserError` on every rank. ``stop_requested`` (e.g. a signal
    flag) is polled once per step (or round), when the step's message is about to be
    reduced; when it is true on any rank, all ranks checkpoint and return with status
    ``"stopped"``.

    In-memory data instead of ``data``: ``X`` (rows, features) and ``y`` (labels: numbers,
    or names such as ``"cat"``; or targets), either each rank its own rows or rank 0 all
    rows and the other ranks None (mpitrain scatters them). Rows are numbered in rank
    order, so the model is the one a file with the same rows gives, for any number of
    ranks. ``test_X``/``test_y`` likewise give a test set instead of a holdout.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    instance = options.pop("model") if isinstance(options.get("model"), Model) else None
    if instance is not None:
        options["model"] = model_name(instance)
        options["model_options"] = options_text(instance)
    given = _given_arrays(X, y, test_X, test_y)
    checked(comm, _check_data_keywords, options, given)  # before the options' type checks
    config = checked(comm, _config_from, config, options)
    config, arrays, test_arrays = _in_memory(comm, config, given,
                                             sparse_given="sparse" in options)
    started = time.perf_counter()
    check_mpi_wiring(MPI.COMM_WORLD)  # world of 1 everywhere: nothing to agree with
    limit_loaded_blas()
    if config.model in ESTIMATORS:
        return _train_estimator(config, comm=comm, arrays=arrays, test_arrays=test_arrays,
                                stop_requested=stop_requested, started=started)
    model, dataset, params = prepare(config, comm=comm, model=instance, arrays=arrays,
                                     test_arrays=test_arrays)
    mode = strategy_class(config.mode)
    _warm_kernels(comm, model, params, dataset, mode.kernels(config, ranks=comm.Get_size()),
                  announce=not config.quiet)
    strategy = mode.build(config, model=model, params=params, dataset=dataset, comm=comm)
    del params  # strategy.params from here on (node-shared memory until strategy.close())
    status, summary, history, trained = _run(
        strategy, config, comm=comm, head=_summary_head(config, dataset, model.describe(), comm),
        trained_of=lambda: trained_model(model, strategy.params, mean=dataset.mean,
                                         std=dataset.std,
                                         version=__version__, classes=dataset.classes,
                                         hash_bits=config.hash_bits,
                                         hash_seed=config.hash_seed),
        write_model=save_model, stop_requested=stop_requested, started=started)
    return TrainResult(params=trained.params, flat=strategy.params, history=history,
                       config=config, status=status, summary=summary, model=trained)


def _train_estimator(config: TrainConfig, *, comm: MPI.Comm, arrays: Arrays,
                     test_arrays: Arrays, stop_requested: Callable[[], bool] | None,
                     started: float) -> TrainResult:
    """Collective: train a tree ensemble or k-means (``--model gbdt|forest|kmeans``): its
    data, its strategy, the same loop and outputs. ``params`` of the result are the arrays
    of its model.npz; ``flat`` its checkpointed numbers (leaf values, centers)."""
    mode = strategy_for(config.model, config.mode)
    dataset = load_dataset(
        config.data, comm=comm, dtype=np.dtype(config.dtype), seed=config.seed,
        test_fraction=config.test_fraction, test_source=config.test_data,
        synthetic=synthetic_spec(config), read=read_options(config), arrays=arrays,
        test_arrays=test_arrays, **mode.data_options(config))
    prepare_numba()
    in_waves(comm, lambda: warm_tree_kernels(np.dtype(config.dtype)))
    strategy = mode.build(config, dataset=dataset, comm=comm)
    del dataset  # trees keep only their binned rows (strategy.dataset drops the floats)
    status, summary, history, trained = _run(
        strategy, config, comm=comm, head=_summary_head(config, strategy.dataset,
                                                        strategy.describe(), comm),
        trained_of=lambda: strategy.trained(version=__version__), write_model=save_estimator,
        stop_requested=stop_requested, started=started)
    return TrainResult(params=trained.arrays, flat=strategy.params.ravel(), history=history,
                       config=config, status=status, summary=summary, model=trained)


def _run(strategy: Strategy, config: TrainConfig, *, comm: MPI.Comm, head: dict[str, Any],
         trained_of: Callable[[], Any], write_model: Callable[[Path, Any], None],
         stop_requested: Callable[[], bool] | None, started: float,
         ) -> tuple[str, dict[str, Any], list[dict[str, Any]], Any]:
    """Collective: resume, run the loop with checkpoints and outputs, write the summary and
    the model (``trained_of()``, written by ``write_model``); the status, summary,
    per-period metrics and the trained model."""
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
    summary = {**head, **strategy.summary()}
    save("summary.json", output.write_json, "summary.json", {**summary, "status": "running"})
    header = strategy.header()
    if header:
        output.say(header)
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
        trained = trained_of()
        save("model.npz", _write_final, output, write_model, trained, summary)
    except UserError as exc:
        output.write_status({**summary, "status": "failed", "error": str(exc)})
        if exc.agreed and not closed:  # every rank is here: collective clean-up is safe
            strategy.close()
        raise
    finally:
        output.close()
        if watchdog is not None:
            watchdog.stop()
    return status, summary, history, trained


def prepare(config: TrainConfig, *, comm: MPI.Comm, model: Model | None = None,
            arrays: Arrays | None = None, test_arrays: Arrays | None = None,
            ) -> tuple[BoundModel, Dataset, np.ndarray]:
    """Collective: the run's model bound to its data, the rank's data and the initial
    parameters (``model``: a model object to use instead of ``config.model``; ``arrays``,
    ``test_arrays``: in-memory rows, see :func:`mpitrain.data.load_dataset`)."""
    instance = checked(comm, _model_object, config, model)
    dataset = load_dataset(
        config.data, comm=comm, task=instance.task, dtype=np.dtype(config.dtype),
        seed=config.seed, test_fraction=config.test_fraction, test_source=config.test_data,
        standardize=config.standardize, sparse=checked(comm, _sparse, config, instance),
        synthetic=synthetic_spec(config), read=read_options(config), arrays=arrays,
        test_arrays=test_arrays)
    if dataset.sparse:
        instance = sparse_variant(instance)
    bound, params = checked(comm, _bind, instance, dataset, config)
    if config.reduce == "shm":  # collective test, the same answer on every rank
        agree(comm, None if single_node(comm) else
              "--reduce shm needs every rank on one node, but the ranks span several nodes; "
              "use --reduce auto")
    return bound, dataset, params


def _sparse(config: TrainConfig, instance: Model) -> str:
    """``--sparse`` for load_dataset: ``auto`` stays dense for models without CSR kernels
    and other modes than sync; ``on`` with them is an error (the same on every rank)."""
    if config.sparse == "off":
        return "off"
    problem = None
    if not has_sparse_variant(instance):
        problem = (f"--sparse on: --model {config.model} has no sparse kernels (linear, "
                   "logistic, softmax and mlp do)")
    elif config.mode != "sync":
        problem = f"--sparse on trains in --mode sync only (got --mode {config.mode})"
    if problem and config.sparse == "on":
        raise UserError(problem)
    return "off" if problem else config.sparse


def synthetic_spec(config: TrainConfig) -> SyntheticSpec:
    """The ``--data synthetic`` options of ``config``."""
    return SyntheticSpec(samples=config.samples, features=config.features,
                         classes=config.classes, noise=config.noise,
                         clusters=config.clusters_per_class)


def read_options(config: TrainConfig) -> ReadOptions:
    """How ``config`` says files of some formats are read."""
    return ReadOptions(zero_based=config.zero_based, hash_bits=config.hash_bits,
                       hash_seed=config.hash_seed, h5_x=config.h5_x, h5_y=config.h5_y,
                       label_column=config.label_column,
                       feature_columns=feature_columns(config))


def _given_arrays(X: Any, y: Any, test_X: Any, test_y: Any) -> dict[str, Arrays]:
    """The in-memory arrays of ``train(X=..., ...)`` by the option they stand for."""
    return {"data": Arrays(X, y), "test_data": Arrays(test_X, test_y, ("test_X", "test_y"))}


def _in_memory(comm: MPI.Comm, config: TrainConfig, arrays: dict[str, Arrays], *,
               sparse_given: bool = False) -> tuple[TrainConfig, Arrays, Arrays]:
    """Collective: the in-memory arrays of ``train(X=..., ...)`` as load_dataset takes them,
    and the config with ``data``/``test_data`` saying so when any rank passed some (so the
    written config.toml never silently means other data). A scipy.sparse ``X`` makes the
    default ``sparse="off"`` ``"auto"`` unless ``sparse=`` was given (``sparse_given``)."""
    local = np.array([*(a.X is not None or a.y is not None for a in arrays.values()),
                      any(scipy.sparse.issparse(a.X) for a in arrays.values())], np.int8)
    anywhere = np.empty_like(local)
    comm.Allreduce(local, anywhere, op=MPI.MAX)
    replaced: dict[str, str] = {
        name: IN_MEMORY for name, given in zip(arrays, anywhere[:-1], strict=True) if given}
    if anywhere[-1] and not sparse_given and config.sparse == "off":
        replaced["sparse"] = "auto"
    config = dataclasses.replace(config, **replaced) if replaced else config
    return config, arrays["data"], arrays["test_data"]


def _check_data_keywords(options: dict[str, Any], arrays: dict[str, Arrays]) -> None:
    """``data=`` / ``test_data=`` are names or paths, not arrays, and not given with them."""
    for name, given in arrays.items():
        value = options.get(name)
        x_name, y_name = given.names
        if value is not None and not isinstance(value, str):
            raise UserError(f"{name}= takes a name or a path (got {type(value).__name__}); "
                            f"pass in-memory arrays as {x_name}= and {y_name}=")
        if name in options and (given.X is not None or given.y is not None):
            raise UserError(f"pass either {name}= or {x_name}=/{y_name}=, not both")


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


def _model_object(config: TrainConfig, instance: Model | None) -> Model:
    """The model object of the run: ``instance`` if given, else made from ``--model``
    (a user's class is imported here, on every rank)."""
    if instance is not None:
        return instance
    try:
        return make_model(config.model, options=parse_options(config.model_options),
                          hidden=config.hidden)
    except ModelError as exc:
        raise UserError(str(exc)) from None


def _bind(instance: Model, dataset: Dataset, config: TrainConfig,
          ) -> tuple[BoundModel, np.ndarray]:
    """``instance`` bound to the data's feature and class counts, and its initial
    parameters (UserError if it cannot train on them or its methods raise)."""
    counts = {"n_features": dataset.n_features, "n_classes": dataset.n_classes}
    label = canonical_name(config.model)
    try:
        problem = user_call(label, "check_data()", instance.check_data, **counts)
        if problem:
            raise UserError(problem)
        bound = BoundModel(instance, **counts, label=label)
        return bound, bound.init_params(seed=config.seed, dtype=config.dtype)
    except ModelError as exc:
        raise UserError(str(exc)) from None


def _warm_kernels(comm: MPI.Comm, model: BoundModel, params: np.ndarray, dataset: Dataset,
                  names: frozenset[str], *, announce: bool = False) -> None:
    """Collective: compile or load the run's kernels, one wave of ranks at a time, and run
    the model's kernels once on this rank's first rows (ModelError → one UserError).
    ``announce``: rank 0 reports a long compilation on stderr (a cold numba cache)."""
    train = dataset.train if len(dataset.train.y) else dataset.test
    problems: list[str] = []

    def load() -> None:
        with compile_notice(announce and comm.Get_rank() == 0):
            warm_up(dtype=params.dtype, label_dtype=dataset.train.y.dtype,
                    kernels=names & frozenset(KERNELS))
            try:
                smoke_test(model, params, train.X, train.y,
                           hooks=names & frozenset(HOOK_NAMES))
            except ModelError as exc:
                problems.append(str(exc))

    prepare_numba()
    in_waves(comm, load)
    agree(comm, problems[0] if problems else None)


def _summary_head(config: TrainConfig, dataset: Dataset, model: dict[str, Any],
                  comm: MPI.Comm) -> dict[str, Any]:
    return {
        "mpitrain_version": __version__,
        "ranks": comm.Get_size(),
        "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
        "data": {"name": dataset.name, "train_rows": dataset.train.n_total,
                 "test_rows": dataset.test.n_total, "features": dataset.n_features,
                 "class_names": None if dataset.classes is None else dataset.classes.tolist(),
                 "classes": dataset.n_classes},
        "model": model,
        "config": config.to_dict(),
    }


def _write_final(output: RunOutput, write_model: Callable[[Path, Any], None], trained: Any,
                 summary: dict[str, Any]) -> None:
    if output.directory is None:
        return
    write_model(output.directory / "model.npz", trained)
    output.write_json("summary.json", summary)


__all__ = ["TrainResult", "UserError", "train"]
