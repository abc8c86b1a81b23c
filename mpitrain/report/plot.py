"""``mpitrain plot RUN [RUN ...] --out curves.png``: learning curves of runs, overlaid.

One column per x axis (epoch or round, and wall-clock seconds of training), one row per
quantity: loss, then accuracy (classification) or R² (regression), then the privacy budget
ε when a run reports one (DP-FedAvg). Train curves dashed, test curves solid, one colour and
label per run. matplotlib comes with the ``[plot]`` extra and is imported only here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mpi4py import MPI

from mpitrain.errors import UserError, checked
from mpitrain.report.record import RunRecord, read_run

MISSING_MATPLOTLIB = ("plot needs matplotlib, which is not installed: pip install "
                      "'mpitrain[plot]' (or, from a checkout, pip install '.[plot]')")
FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUN", nargs="+",
                        help="run directories (--out of mpitrain train)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help=f"image to write ({', '.join(FORMATS)})")
    parser.add_argument("--labels", metavar="NAME[,NAME...]",
                        help="legend labels, one per run (default: the directory names)")
    parser.add_argument("--title", help="figure title")


def run(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """Rank 0 reads the runs and writes the image."""
    checked(comm, lambda: _plot(args) if comm.Get_rank() == 0 else None)
    return 0


def _plot(args: argparse.Namespace) -> None:
    records = [read_run(path, command="plot") for path in args.runs]
    labels = _labels(args.labels, records)
    out = Path(args.out)
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"plot --out {args.out}: unknown image type (expected a name ending "
                        f"in {', '.join(FORMATS)})")
    empty = [str(r.path) for r in records if not r.metrics]
    if len(empty) == len(records):
        raise UserError(f"plot: no metrics recorded yet in {', '.join(empty)}")
    plot_runs(records, labels, out, title=args.title)
    print(f"mpitrain: wrote {out}", file=sys.stderr, flush=True)


def _labels(text: str | None, records: list[RunRecord]) -> list[str]:
    if text is None:
        return [r.path.resolve().name or str(r.path) for r in records]
    labels = [part.strip() for part in text.split(",")]
    if len(labels) != len(records):
        raise UserError(f"plot --labels: {len(labels)} labels for {len(records)} runs")
    return labels


def _rows(records: list[RunRecord]) -> list[tuple[str, str]]:
    """(metric suffix, axis label) of each row of the figure."""
    keys = {key for record in records for line in record.metrics for key in line}
    rows = [("loss", "loss")]
    if {"train_accuracy", "test_accuracy"} & keys:
        rows.append(("accuracy", "accuracy"))
    if {"train_r2", "test_r2"} & keys:
        rows.append(("r2", "R²"))
    if "epsilon" in keys:
        rows.append(("epsilon", "privacy budget ε"))
    return rows


def plot_runs(records: list[RunRecord], labels: list[str], out: Path, *,
              title: str | None = None) -> None:
    """Draw and save the figure (see the module docstring)."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(MISSING_MATPLOTLIB) from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = _rows(records)
    units = sorted({r.period for r in records})
    figure, axes = plt.subplots(len(rows), 2, figsize=(11, 3.2 * len(rows)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (record, label) in enumerate(zip(records, labels, strict=True)):
        colour = colours[index % len(colours)]
        xs = {"period": [line.get(record.period, n + 1)
                         for n, line in enumerate(record.metrics)],
              "time": record.elapsed()}
        for row, (suffix, _) in enumerate(rows):
            for column, x in enumerate(("period", "time")):
                _draw(axes[row][column], record.metrics, xs[x], suffix, label, colour)
    for row, (_, name) in enumerate(rows):
        for column, xlabel in enumerate(("/".join(units), "wall-clock seconds of training")):
            ax = axes[row][column]
            ax.set_ylabel(name)
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            if column == 0:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, names, loc="upper center", ncol=min(4, len(names)),
                      bbox_to_anchor=(0.5, 1.0), frameon=False)
    if title:
        figure.suptitle(title, y=1.04)
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=110, bbox_inches="tight")
    except OSError as exc:
        raise UserError(f"plot --out {out}: cannot write: {exc.strerror}") from None
    finally:
        plt.close(figure)


def _draw(ax: Any, metrics: list[dict[str, Any]], x: list[float], suffix: str, label: str,
          colour: str) -> None:
    """The train (dashed) and test (solid) curves of one quantity, or ε alone."""
    splits = [("", "-")] if suffix == "epsilon" else [("train_", "--"), ("test_", "-")]
    for prefix, style in splits:
        key = f"{prefix}{suffix}"
        points = [(xi, line[key]) for xi, line in zip(x, metrics, strict=True)
                  if isinstance(line.get(key), int | float)]
        if not points:
            continue
        name = label if not prefix else f"{label} {prefix.rstrip('_')}"
        ax.plot(*zip(*points, strict=True), style, color=colour, label=name,
                marker="." if len(points) < 30 else None)
