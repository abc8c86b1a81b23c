"""What a run leaves in ``--out``: written by rank 0 only.

``config.toml`` (resolved options), ``metrics.jsonl`` (one JSON object per epoch or round,
flushed as it comes), ``model.npz`` and ``summary.json``. ``summary.json`` is written at the
start with ``"status": "running"`` so an unfinished run is recognisable, and rewritten at the
end with ``"finished"`` (or ``"stopped"`` when the job was asked to stop, ``"failed"`` when
an error ended it).

Writing can fail: ``--out`` is checked for writability before training starts, and a write
that fails later (a full disk, a file system turned read-only) goes through :func:`written`,
which makes it one user error on every rank instead of a traceback on rank 0.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mpi4py import MPI

from mpitrain.errors import UserError, checked

OWNED = ("config.toml", "metrics.jsonl", "model.npz", "summary.json", "checkpoints")


@dataclass(kw_only=True)
class RunOutput:
    """Files of one run; every method is a no-op on ranks other than 0 or without --out."""

    directory: Path | None
    quiet: bool = False
    printing: bool = False
    _metrics: IO[str] | None = field(default=None, init=False)

    def write_text(self, name: str, text: str) -> None:
        """Write ``directory/name`` atomically (temp file + rename)."""
        if self.directory is None:
            return
        target = self.directory / name
        temp = target.with_name(f".{name}.tmp")
        temp.write_text(text, encoding="utf-8")
        temp.replace(target)

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        """``write_text`` of indented JSON."""
        self.write_text(name, json.dumps(data, indent=2, default=_jsonable) + "\n")

    def record(self, metrics: dict[str, Any], line: str) -> None:
        """Append one metrics line to metrics.jsonl and print the progress line."""
        if self.directory is not None:
            if self._metrics is None:
                self._metrics = open(self.directory / "metrics.jsonl", "a", encoding="utf-8")
            self._metrics.write(json.dumps(metrics, default=_jsonable) + "\n")
            self._metrics.flush()
        self.say(line)

    def say(self, line: str) -> None:
        """Print a progress line (rank 0 only, unless --quiet). A closed standard output
        (``| head``) stops the lines, with one warning, never the training."""
        if self.printing and not self.quiet:
            try:
                print(line, file=sys.stdout, flush=True)
            except BrokenPipeError:
                self.quiet = True
                _silence(sys.stdout)
                try:
                    print("mpitrain: warning: standard output was closed (broken pipe); "
                          "training goes on without progress lines", file=sys.stderr,
                          flush=True)
                except BrokenPipeError:  # `2>&1 | head`: the same closed pipe
                    _silence(sys.stderr)

    def keep_metrics(self, lines: int) -> None:
        """Resume: drop metrics.jsonl lines written after the checkpoint being resumed."""
        if self.directory is None:
            return
        path = self.directory / "metrics.jsonl"
        if path.exists():
            kept = path.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]
            self.write_text("metrics.jsonl", "".join(kept))

    def write_status(self, summary: dict[str, Any]) -> None:
        """Record a run's end in summary.json even on a full disk: when the atomic write
        fails, overwrite the old summary in place (its blocks are already allocated)."""
        if self.directory is None:
            return
        try:
            self.write_json("summary.json", summary)
        except OSError:
            text = (json.dumps(summary, default=_jsonable) + "\n").encode()
            try:
                with open(self.directory / "summary.json", "r+b") as file:
                    file.write(text)
                    file.truncate()
            except OSError as exc:
                print(f"mpitrain: warning: could not record status {summary.get('status')!r} "
                      f"in {self.directory / 'summary.json'}: {exc.strerror}",
                      file=sys.stderr, flush=True)

    def close(self) -> None:
        """Close metrics.jsonl (every line is already flushed, so a failure to flush again
        after a write error changes nothing)."""
        if self._metrics is not None:
            try:
                self._metrics.close()
            except OSError:
                pass
            self._metrics = None


def _silence(stream: IO[str]) -> None:
    """Point the file descriptor of ``stream`` at /dev/null, so that no later write or the
    flush at exit fails again on the broken pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def open_run_output(out: str | None, *, comm: MPI.Comm, overwrite: bool, resume: bool,
                    quiet: bool, continues: bool = False,
                    checkpoint_every: int = 0) -> RunOutput:
    """Collective: check ``out`` on rank 0 and prepare it; every rank gets a RunOutput.

    ``continues``: the run resumes from a checkpoint inside ``out``, so ``--overwrite``
    (which lets it continue a finished run) keeps the run's files instead of deleting
    them. Without ``out``, rank 0 says once that nothing will be saved (a warning when
    ``checkpoint_every`` asked for checkpoints; a note, which ``quiet`` silences,
    otherwise).
    """
    rank0 = comm.Get_rank() == 0
    directory = Path(out) if (out is not None and rank0) else None

    def prepare() -> None:
        if directory is not None:
            _prepare_directory(directory, overwrite=overwrite, resume=resume,
                               keep=continues)

    checked(comm, prepare)
    if out is None and rank0:
        if checkpoint_every > 0:
            print(f"mpitrain: warning: --checkpoint-every {checkpoint_every} has no effect "
                  "without --out: no checkpoints, model or metrics will be saved",
                  file=sys.stderr, flush=True)
        elif not quiet:
            print("mpitrain: note: no --out given, so the model, metrics and checkpoints "
                  "are not saved", file=sys.stderr, flush=True)
    return RunOutput(directory=directory, quiet=quiet, printing=rank0)


def written(comm: MPI.Comm, what: str, write: Callable[..., object], *args: Any) -> None:
    """Collective: ``write(*args)`` (rank 0 writes, the others pass through); an OSError
    becomes one UserError on every rank naming ``what`` and the cause (``No space left on
    device``, ``Read-only file system``, ...)."""

    def attempt() -> None:
        try:
            write(*args)
        except OSError as exc:
            raise UserError(f"cannot write {what}: {_cause(exc)}; training stopped, the last "
                            "good checkpoint is kept") from None

    checked(comm, attempt)


def _cause(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror} ({name})" if exc.strerror and name else str(exc)


def run_status(directory: Path) -> str | None:
    """'running', 'finished', 'stopped', ... from summary.json, or None for a fresh dir."""
    summary = directory / "summary.json"
    if not summary.exists():
        return None
    try:
        return str(json.loads(summary.read_text(encoding="utf-8")).get("status", "unknown"))
    except (OSError, ValueError, AttributeError):
        return "unknown"


def _prepare_directory(directory: Path, *, overwrite: bool, resume: bool,
                       keep: bool = False) -> None:
    if directory.exists() and not directory.is_dir():
        raise UserError(f"--out: {str(directory)!r} exists and is not a directory")
    status = run_status(directory) if directory.exists() else None
    if status is not None and not overwrite:
        if status == "finished" and resume:
            raise UserError(f"--out: {str(directory)!r} holds a finished run; pass "
                            "--overwrite too to continue it (e.g. with more --epochs), or "
                            "choose another directory")
        if status == "finished":
            raise UserError(f"--out: {str(directory)!r} holds a finished run; pass "
                            "--overwrite to replace it or choose another directory")
        if not resume:
            raise UserError(f"--out: {str(directory)!r} holds an unfinished run "
                            f"(status {status!r}); pass --resume to continue it or "
                            "--overwrite to start over")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _probe(directory)
        if overwrite and not keep:
            for name in OWNED:
                path = directory / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    except OSError as exc:
        raise UserError(f"--out: cannot write to {str(directory)!r}: {_cause(exc)}") from None


def _probe(directory: Path) -> None:
    """Create, write, sync and remove a small file: a read-only, full or foreign directory
    fails here, before any training, not at the first checkpoint."""
    probe = directory / f".mpitrain-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as file:
            file.write(b"mpitrain")
            file.flush()
            os.fsync(file.fileno())
    finally:
        with contextlib.suppress(OSError):  # e.g. EROFS even for a file never created
            probe.unlink(missing_ok=True)
