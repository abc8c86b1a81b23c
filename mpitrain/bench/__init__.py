"""Benchmarks shipped with mpitrain: ``python -m mpitrain bench allreduce|train``.

They drive the public API (``mpitrain.train``, :mod:`mpitrain.collectives`) the way users
do and may import anything in the package; nothing in the package imports them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def output_file(path: str) -> Path:
    """``path`` as a Path, its directory created first (``--json``/``--plot`` may name a
    new directory, as ``--out`` may); OSError when that is impossible."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def save_figure(fig: object, path: str) -> None:
    """Write a matplotlib figure to ``path`` (``--plot``) and close it; UserError when the
    file cannot be written."""
    import matplotlib.pyplot as plt

    from mpitrain.errors import UserError

    try:
        fig.savefig(output_file(path), dpi=110, bbox_inches="tight")
    except OSError as exc:
        raise UserError(f"--plot could not write {path!r} ({exc.strerror})") from exc
    finally:
        plt.close(fig)


def save_outputs(doc: dict[str, Any], *, json_path: str | None, plot_path: str | None,
                 plot: Callable[[str, dict[str, Any]], bool]) -> None:
    """Rank 0 of a benchmark: ``--json`` (the document) and ``--plot`` (``plot(path, doc)``,
    False when matplotlib is not installed), each followed by a line saying so."""
    from mpitrain.errors import UserError

    if json_path:
        try:
            output_file(json_path).write_text(json.dumps(doc, indent=1) + "\n")
        except OSError as exc:
            raise UserError(f"--json could not write {json_path!r} ({exc.strerror})") from exc
        print(f"wrote {json_path}", flush=True)
    if plot_path:
        if plot(plot_path, doc):
            print(f"wrote {plot_path}", flush=True)
        else:
            print("--plot skipped: matplotlib is not installed (pip install "
                  "'mpitrain[plot]')", flush=True)
