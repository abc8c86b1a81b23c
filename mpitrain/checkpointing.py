"""When checkpoints are written and how a run resumes from one.

Storage (atomic files, checksums, finding the newest good one) is :mod:`.checkpoints`; this
module decides *when* (every N units, when asked to stop, at the end), *what* (the
strategy's state plus the unit index, the resolved config, the version and the number of
ranks) and checks that a checkpoint fits the run that wants to resume from it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpi4py import MPI

from . import __version__
from .checkpoints import (
    CHECKPOINT_SUBDIR,
    Checkpoint,
    find_resume_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .config import TrainConfig, flag
from .errors import agree, checked
from .strategies import Strategy, Unit

# Options a resumed run may change: how long, how it communicates, where it writes.
MAY_CHANGE = frozenset({"epochs", "rounds", "reduce", "out", "overwrite", "quiet", "resume",
                        "checkpoint_every", "keep", "stall_timeout", "eval_every"})


@dataclass(kw_only=True)
class Checkpointer:
    """Writes checkpoints of ``strategy`` from rank 0 into ``OUT/checkpoints``."""

    strategy: Strategy
    config: TrainConfig
    comm: MPI.Comm
    directory: Path | None  # None on other ranks or without --out
    every: int
    keep: int
    periods: int = 0  # metrics lines recorded so far (to trim metrics.jsonl on resume)
    last_saved: int = -1

    def after_unit(self, unit: Unit, stopping: bool) -> None:
        """Loop hook: save when due or when the job is stopping."""
        due = self.every > 0 and (unit.index + 1) % self.every == 0
        if due or stopping:
            self.save(unit.index + 1)

    def save(self, next_unit: int) -> None:
        """Write the checkpoint that resumes at ``next_unit`` (rank 0; once per index)."""
        if self.directory is None or next_unit == self.last_saved:
            return
        arrays, meta = self.strategy.checkpoint_state()
        meta = {**meta, "next_unit": next_unit, "periods": self.periods,
                "config": self.config.to_dict(), "mpitrain_version": __version__,
                "ranks": self.comm.Get_size()}
        save_checkpoint(self.directory, index=next_unit, arrays=arrays, meta=meta,
                        keep=self.keep)
        self.last_saved = next_unit


def make_checkpointer(strategy: Strategy, config: TrainConfig, comm: MPI.Comm) -> Checkpointer:
    """A Checkpointer writing under ``--out`` on rank 0."""
    directory = None
    if config.out is not None and comm.Get_rank() == 0:
        directory = Path(config.out) / CHECKPOINT_SUBDIR
        directory.mkdir(parents=True, exist_ok=True)
    return Checkpointer(strategy=strategy, config=config, comm=comm, directory=directory,
                        every=config.checkpoint_every, keep=config.keep)


def load_resume_checkpoint(config: TrainConfig, comm: MPI.Comm) -> Checkpoint | None:
    """Collective: the checkpoint ``--resume`` names (None: start fresh), checked against
    ``config`` on every rank."""
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
    checkpoint = checked(comm, load_checkpoint, path)
    agree(comm, mismatch(checkpoint, config))
    return checkpoint


def mismatch(checkpoint: Checkpoint, config: TrainConfig) -> str | None:
    """Why ``checkpoint`` cannot continue a run with ``config``, or None."""
    saved: dict[str, Any] = checkpoint.meta.get("config", {})
    current = config.to_dict()
    for name, value in current.items():
        if name in MAY_CHANGE or name not in saved:
            continue
        if saved[name] != value:
            return (f"--resume: checkpoint {checkpoint.path} was written with "
                    f"--{flag(name)} {_show(saved[name])} but this run has "
                    f"--{flag(name)} {_show(value)}; use the same value or start a new run")
    return None


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)

