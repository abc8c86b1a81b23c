"""Benchmarks shipped with mpitrain: ``python -m mpitrain bench allreduce|train``.

They drive the public API (``mpitrain.train``, :mod:`mpitrain.collectives`) the way users
do and may import anything in the package; nothing in the package imports them.
"""

from __future__ import annotations

from pathlib import Path


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
