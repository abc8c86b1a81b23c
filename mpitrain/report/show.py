"""``mpitrain show RUN``: one screen about a run directory — status, data, model, the options
that differ from the defaults, final and best metrics, throughput and checkpoints."""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from mpi4py import MPI

from mpitrain.config import FIELDS, flag
from mpitrain.errors import checked
from mpitrain.report.record import RunRecord, read_run
from mpitrain.runtime.progress import progress_line

# run-time options shown elsewhere or not worth a line
_HIDDEN = {"out", "overwrite", "quiet", "resume"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run directory (--out of mpitrain train)")


def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """Print the summary of ``args.run`` (rank 0)."""
    def show() -> None:
        if comm.Get_rank() == 0:
            sys.stdout.write(render(read_run(args.run, command="show")))
            sys.stdout.flush()

    checked(comm, show)
    return 0


def render(record: RunRecord) -> str:
    """The text ``mpitrain show`` prints."""
    summary, config = record.summary, record.config
    lines = [f"run         {record.path}"]
    status = record.status
    if summary.get("error"):
        status += f": {summary['error']}"
    lines.append(f"status      {status}")
    head = [f"mpitrain {summary['mpitrain_version']}"] if "mpitrain_version" in summary else []
    if "ranks" in summary:
        head.append(f"{summary['ranks']} rank{'s' if summary['ranks'] != 1 else ''}")
    if summary.get("mpi_library"):
        head.append(" ".join(str(summary["mpi_library"]).split()))
    if head:
        lines.append(f"launched    {', '.join(head)}")
    data = summary.get("data")
    if data:
        classes = f", {data['classes']} classes" if data.get("classes") else ", regression"
        lines.append(f"data        {data.get('name')}: {data.get('train_rows'):,} train rows, "
                     f"{data.get('test_rows'):,} test rows, {data.get('features')} features"
                     f"{classes}")
    model = summary.get("model")
    if model:
        dims = "-".join(map(str, model.get("dims", [])))
        lines.append(f"model       {model.get('name')}{' ' + dims if dims else ''} "
                     f"({model.get('parameters', 0):,} parameters)")
    if config:
        lines.append(f"options     {_options(config)}")
    lines.extend(_progress(record))
    lines.extend(_checkpoints(record))
    return "\n".join(lines) + "\n"


def _options(config: dict[str, Any]) -> str:
    """Options that differ from the defaults, as flags (the mode always)."""
    parts = [f"--mode {config.get('mode', 'sync')}"]
    for name, value in config.items():
        if name in _HIDDEN or name == "mode" or name not in FIELDS:
            continue
        default = FIELDS[name].default
        default = list(default) if isinstance(default, tuple) else default
        if value == default:
            continue
        if isinstance(value, bool):
            parts.append(f"--{flag(name)}" if value else f"--no-{flag(name)}")
        else:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            parts.append(f"--{flag(name)} {shown}")
    return " ".join(parts)


def _progress(record: RunRecord) -> list[str]:
    metrics, unit = record.metrics, record.period
    if not metrics:
        return [f"progress    no {unit} recorded yet"]
    last = metrics[-1]
    total = record.config.get("epochs" if unit == "epoch" else "rounds")
    seconds = record.elapsed()[-1]
    out = [f"progress    {unit} {last.get(unit, len(metrics))}"
           f"{f'/{total}' if total else ''} in {duration(seconds)} of training"
           + (f" ({duration(record.summary['seconds'])} in all)"
              if "seconds" in record.summary else "")]
    if unit in last:
        out.append(f"last        {progress_line(last, unit=unit, total=total or last[unit])}")
    score = "test_accuracy" if "test_accuracy" in last else "test_r2" if "test_r2" in last else None
    if score is not None:
        best = max((m for m in metrics if score in m), key=lambda m: m[score])
        out.append(f"best        {score.replace('_', ' ')} {best[score]:.4f} at {unit} "
                   f"{best.get(unit)}")
    rates = [m["samples_per_second"] for m in metrics if m.get("samples_per_second")]
    if rates:
        text = f"throughput  {statistics.median(rates):,.0f} samples/s (median over {unit}s)"
        compute = sum(m.get("compute_seconds", 0.0) for m in metrics)
        comm = sum(m.get("comm_seconds", 0.0) for m in metrics)
        if compute + comm > 0:
            text += (f"; compute {100 * compute / (compute + comm):.0f}%, communication "
                     f"{100 * comm / (compute + comm):.0f}% of step time")
        out.append(text)
    return out


def duration(seconds: float) -> str:
    """``0.0284 s``, ``12.3 s``, ``4 min 12 s``, ``2 h 05 min``."""
    if seconds < 10:
        return f"{seconds:.3g} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _checkpoints(record: RunRecord) -> list[str]:
    directory = record.path / "checkpoints"
    files = sorted(directory.glob("ckpt-*.npz")) if directory.is_dir() else []
    out = []
    if files:
        out.append(f"checkpoints {len(files)} in {directory} (newest {files[-1].name})")
    model = record.path / "model.npz"
    if model.exists():
        out.append(f"saved       {model}")
    return out
