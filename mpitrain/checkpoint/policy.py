"""When checkpoints are written and how a run resumes from one.

Storage (atomic files, checksums, finding the newest good one) is :mod:`.store`; this
module decides *when* (every N units, when asked to stop, at the end), *what* (the
strategy's state plus the unit index, the resolved config, the version and the number of
ranks), *which* checkpoint ``--resume`` means, and checks that it fits the run that wants
to resume from it. Problems are reported to the user here, in the CLI's words.

Sharded training (a strategy with a :attr:`~mpitrain.strategies.base.Strategy.checkpoint_slice`)
writes sharded checkpoints: every rank saves its slice into its own shard file, then rank 0
writes the manifest naming them (:mod:`.sharded`); nothing is gathered. Resuming cuts any
checkpoint, sharded or not, to the slice the resuming run's rank owns, so a run resumes
on another number of ranks, with or without ``--shard``, with any ``--tensor-parallel``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from mpitrain import __version__
from mpitrain.checkpoint import sharded
from mpitrain.checkpoint.store import (
    CHECKPOINT_SUBDIR,
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_shard,
)
from mpitrain.config import TrainConfig, flag
from mpitrain.errors import UserError, agree, checked
from mpitrain.runtime.outputs import written
from mpitrain.runtime.preemption import stop_reached
from mpitrain.strategies.base import Strategy, Unit

# Options a resumed run may change: how long, how it communicates, where it writes.
MAY_CHANGE = frozenset({"epochs", "rounds", "trees", "reduce", "out", "overwrite", "quiet",
                        "resume", "checkpoint_every", "keep", "stall_timeout", "eval_every",
                        "shard", "straggler", "tensor_parallel"})


@dataclass(kw_only=True)
class Checkpointer:
    """Writes checkpoints of ``strategy`` from rank 0 into ``OUT/checkpoints`` (sharded: a
    shard from every rank, then the manifest from rank 0)."""

    strategy: Strategy
    config: TrainConfig
    comm: MPI.Comm
    directory: Path | None  # None on other ranks or without --out
    shard_directory: Path | None = None  # sharded: OUT/checkpoints on every rank
    every: int
    keep: int
    periods: int = 0  # metrics lines recorded so far (to trim metrics.jsonl on resume)
    last_saved: int = -1

    def after_unit(self, unit: Unit, stopping: bool) -> None:
        """Loop hook: save when due or when the job is stopping."""
        if stopping:
            stop_reached()  # every rank got here: the stop will complete
        due = self.every > 0 and (unit.index + 1) % self.every == 0
        if due or stopping:
            self._save(unit.index + 1)

    def save(self, next_unit: int) -> None:
        """The final checkpoint, after the last unit (see :meth:`_save`)."""
        stop_reached()  # a stop signal that came after the last step needs no more waiting
        self._save(next_unit)

    def _save(self, next_unit: int) -> None:
        """Write the checkpoint that resumes at ``next_unit`` (rank 0; once per index).

        Collective when there is an ``--out``: every rank calls it at the same units. Never
        writes non-finite parameters (they would replace the last good checkpoint): raises
        the same UserError on every rank instead.
        """
        if self.config.out is None or next_unit == self.last_saved:
            return
        agree(self.comm, self._not_finite(next_unit))
        self.last_saved = next_unit
        if self.shard_directory is not None:
            self._save_sharded(next_unit)
            return
        written(self.comm, f"a checkpoint to {Path(self.config.out) / CHECKPOINT_SUBDIR}",
                self._write, next_unit)

    def _write(self, next_unit: int) -> None:
        """Rank 0: write the checkpoint file (the other ranks have nothing to write)."""
        if self.directory is None:
            return
        arrays, meta = self.strategy.checkpoint_state()
        save_checkpoint(self.directory, index=next_unit, arrays=arrays,
                        meta=self._meta(meta, next_unit), keep=self.keep)

    def _meta(self, meta: dict[str, Any], next_unit: int) -> dict[str, Any]:
        return {**meta, "next_unit": next_unit, "periods": self.periods,
                "config": self.config.to_dict(), "mpitrain_version": __version__,
                "ranks": self.comm.Get_size()}

    def _save_sharded(self, next_unit: int) -> None:
        """Collective: every rank writes its shard, then rank 0 the manifest naming them
        (so the checkpoint exists, under its usual name, only once every shard does)."""
        comm = self.comm
        rank, ranks = comm.Get_rank(), comm.Get_size()
        start, stop = self.strategy.checkpoint_slice
        arrays, meta = self.strategy.checkpoint_state()
        records: list[dict[str, Any]] = []

        def write_shard() -> None:
            path, digest = save_shard(
                self.shard_directory, index=next_unit, rank=rank, ranks=ranks, arrays=arrays,
                meta={"shard": {"rank": rank, "ranks": ranks, "start": start, "stop": stop,
                                "next_unit": next_unit}})
            records.append({"file": path.name, "start": start, "stop": stop,
                            "sha256": digest})

        written(comm, f"the checkpoint shard of rank {rank} to {self.shard_directory}",
                write_shard)
        gathered = comm.gather(records[0], root=0)  # small metadata only
        written(comm, f"a checkpoint to {self.shard_directory}", self._write_manifest,
                next_unit, list(arrays), meta, gathered)

    def _write_manifest(self, next_unit: int, names: list[str], meta: dict[str, Any],
                        records: list[dict[str, Any]] | None) -> None:
        """Rank 0: the manifest naming every rank's shard."""
        if self.directory is None:
            return
        meta = {**self._meta(meta, next_unit),
                **sharded.manifest_meta(n=self.strategy.layout.size, arrays=names,
                                        shards=records)}
        save_checkpoint(self.directory, index=next_unit, arrays={}, meta=meta,
                        keep=self.keep)

    def _not_finite(self, next_unit: int) -> str | None:
        if np.isfinite(self.strategy.params).all():
            return None
        return (f"training diverged: the parameters are not finite after "
                f"{self.strategy.unit_name} "
                f"{next_unit}; not writing a checkpoint; try a smaller --lr; the last good "
                "checkpoint is kept")


def make_checkpointer(strategy: Strategy, config: TrainConfig, comm: MPI.Comm) -> Checkpointer:
    """A Checkpointer writing under ``--out`` on rank 0."""
    directory = shard_directory = None
    if config.out is not None and comm.Get_rank() == 0:
        directory = Path(config.out) / CHECKPOINT_SUBDIR  # created by the first save
    if config.out is not None and strategy.checkpoint_slice is not None:
        shard_directory = Path(config.out) / CHECKPOINT_SUBDIR
    return Checkpointer(strategy=strategy, config=config, comm=comm, directory=directory,
                        shard_directory=shard_directory, every=config.checkpoint_every,
                        keep=config.keep)


def load_resume_checkpoint(config: TrainConfig, comm: MPI.Comm,
                           strategy: Strategy | None = None) -> Checkpoint | None:
    """Collective: the checkpoint ``--resume`` names (None: start fresh), checked against
    ``config`` (and the state ``strategy`` will restore) on every rank, before anything in
    ``--out`` is touched."""
    if config.resume is None:
        return None
    if config.resume == "latest" and config.out is None:
        agree(comm, "--resume without a path resumes from --out, but no --out was given")

    def find() -> str | None:
        if comm.Get_rank() != 0:
            return None
        path = None if config.resume == "latest" else config.resume
        checkpoint, warnings = find_resume_checkpoint(path, config.out or ".")
        for warning in warnings:
            print(f"mpitrain: warning: {warning}", file=sys.stderr, flush=True)
        return None if checkpoint is None else str(checkpoint.path)

    path = comm.bcast(checked(comm, find), root=0)
    if path is None:
        return None
    checkpoint = checked(comm, load, path)
    if strategy is None:
        agree(comm, mismatch(checkpoint, config))
        return checkpoint
    agree(comm, mismatch(checkpoint, config))
    checkpoint = checked(comm, _state_for, checkpoint, strategy)
    agree(comm, _state_mismatch(checkpoint, config, strategy))
    return checkpoint


def _state_for(checkpoint: Checkpoint, strategy: Strategy) -> Checkpoint:
    """The part of ``checkpoint`` that ``strategy`` restores on this rank: its slice (read
    from the shards that hold it, when sharded), or the whole state."""
    n = strategy.layout.size
    where = f"--resume: checkpoint {checkpoint.path}"
    if sharded.is_sharded(checkpoint) and sharded.length(checkpoint) != n:
        raise UserError(f"{where} holds a model of {sharded.length(checkpoint)} parameters "
                        f"but this run's model ({strategy.layout.describe()}) has {n}: the "
                        "data or the model changed since it was written; start a new run")
    start, stop = strategy.checkpoint_slice or (0, n)
    try:
        return sharded.slice_of(checkpoint, n, start, stop)
    except CheckpointError as exc:
        raise UserError(f"--resume: {exc}") from None


def load(path: str | PathLike[str]) -> Checkpoint:
    """:func:`~.store.load_checkpoint`, its problems as the user's (UserError)."""
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None


def resolve_resume_path(path: str | PathLike[str]) -> Path:
    """Map a ``--resume`` argument to a checkpoint file or a directory of checkpoints.

    Accepts a checkpoint file, a run directory ``OUT/`` (its ``checkpoints/`` subdirectory
    is used when present) or ``OUT/checkpoints/`` itself. Raises UserError when ``path``
    does not exist.
    """
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        sub = candidate / CHECKPOINT_SUBDIR
        return sub if sub.is_dir() else candidate
    raise UserError(f"--resume {path}: no such checkpoint file or run directory")


def find_resume_checkpoint(
    resume: str | PathLike[str] | None,
    out: str | PathLike[str],
) -> tuple[Checkpoint | None, list[str]]:
    """What ``--resume [PATH]`` resumes from: ``(checkpoint or None, warnings)``.

    ``resume=None`` (``--resume`` with no path): the newest good checkpoint in
    ``OUT/checkpoints/``, or None to start fresh when there is none. With a path: that
    checkpoint file (no fallback: it must load), or the newest good checkpoint of that
    directory, which must have one (UserError otherwise).
    """
    if resume is None:
        return latest_checkpoint(Path(out) / CHECKPOINT_SUBDIR)
    target = resolve_resume_path(resume)
    if target.is_file():
        return load(target), []
    checkpoint, warnings = latest_checkpoint(target)
    if checkpoint is None:
        detail = "; ".join(warnings) if warnings else "it holds no ckpt-*.npz files"
        raise UserError(f"--resume {resume}: no usable checkpoint in {target} ({detail})")
    return checkpoint, warnings


def consolidate_run(run: str | PathLike[str], output: str | PathLike[str] | None = None,
                    ) -> tuple[Path, Path]:
    """``mpitrain checkpoint consolidate RUN``: the newest good checkpoint of ``RUN`` (a
    run directory, its checkpoints directory or a manifest file), if sharded, written as
    one ordinary checkpoint file at ``output`` (default ``RUN/consolidated-ckpt-N.npz``
    next to the checkpoints directory). Returns (checkpoint read, file written)."""
    if not Path(run).exists():
        raise UserError(f"checkpoint consolidate {run}: no such checkpoint file or run "
                        "directory")
    target = resolve_resume_path(run)
    if target.is_file():
        checkpoint = load(target)
    else:
        checkpoint, warnings = latest_checkpoint(target)
        for warning in warnings:
            print(f"mpitrain: warning: {warning}", file=sys.stderr, flush=True)
        if checkpoint is None:
            raise UserError(f"checkpoint consolidate {run}: no usable checkpoint in {target}")
    if not sharded.is_sharded(checkpoint):
        raise UserError(f"checkpoint consolidate: {checkpoint.path} is not sharded (it is "
                        "already one ordinary file)")
    if output is None:
        base = checkpoint.path.parent
        base = base.parent if base.name == CHECKPOINT_SUBDIR else base
        output = base / f"consolidated-{checkpoint.path.name}"
    try:
        return checkpoint.path, sharded.consolidate(checkpoint, output)
    except CheckpointError as exc:
        raise UserError(f"checkpoint consolidate: {exc}") from None
    except OSError as exc:
        raise UserError(f"checkpoint consolidate: cannot write {output}: {exc}") from None


# What Checkpointer.save adds to the strategy's metadata, and its JSON types.
_RUN_META = {"next_unit": int, "periods": int, "config": dict}


def mismatch(checkpoint: Checkpoint, config: TrainConfig,
             strategy: Strategy | None = None) -> str | None:
    """Why ``checkpoint`` cannot continue a run with ``config`` (and restore into
    ``strategy``), or None."""
    where = f"--resume: checkpoint {checkpoint.path}"
    meta = checkpoint.meta
    for key, kind in _RUN_META.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            return (f"{where} is not a training checkpoint (its metadata has no valid "
                    f"{key!r}); was it written by 'mpitrain train'?")
    saved: dict[str, Any] = meta["config"]
    current = config.to_dict()
    for name, value in current.items():
        if name in MAY_CHANGE or name not in saved:
            continue
        if saved[name] != value:
            return (f"{where} was written with --{flag(name)} {_show(saved[name])} but "
                    f"this run has --{flag(name)} {_show(value)}; use the same value or "
                    "start a new run")
    return None if strategy is None else _state_mismatch(checkpoint, config, strategy)


def _state_mismatch(checkpoint: Checkpoint, config: TrainConfig,
                    strategy: Strategy) -> str | None:
    """The checkpoint's arrays and metadata must be exactly what ``strategy`` restores."""
    where = f"--resume: checkpoint {checkpoint.path}"
    arrays, meta = strategy.checkpoint_state()
    missing = sorted(set(arrays) - set(checkpoint.arrays))
    extra = sorted(set(checkpoint.arrays) - set(arrays))
    if missing or extra:
        return (f"{where} holds the state of another kind of run (arrays "
                f"{', '.join(sorted(checkpoint.arrays)) or 'none'}; expected "
                f"{', '.join(sorted(arrays))}); start a new run or resume a matching one")
    for name, want in arrays.items():
        got = checkpoint.arrays[name]
        if strategy.per_unit_arrays:  # rows per unit: only the rest of the shape must fit
            got_shape, want_shape = got.shape[1:], want.shape[1:]
        else:
            got_shape, want_shape = got.shape, want.shape
        if got_shape != want_shape or got.dtype != want.dtype:
            return (f"{where} holds {name} of shape {got.shape} and type {got.dtype} but "
                    f"this run's model ({strategy.layout.describe()}) needs shape "
                    f"{want.shape} and type "
                    f"{want.dtype}: the data or the model changed since it was written; "
                    "start a new run")
    absent = sorted(set(meta) - set(checkpoint.meta))
    if absent:
        return (f"{where} lacks {', '.join(absent)} in its metadata; it was not written by "
                "this kind of run")
    next_unit, total = checkpoint.meta["next_unit"], strategy.total_units
    if not 0 <= next_unit <= total:
        unit, length = strategy.unit_name, strategy.length_option
        return (f"{where} is at {unit} {next_unit} but this run ends at {unit} {total} "
                f"(--{flag(length)} {getattr(config, length)}); ask for at least as many "
                f"--{flag(length)} as the checkpointed run has done")
    return None


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)

