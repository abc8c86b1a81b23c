"""Run the CLI the way users do, under mpiexec, with a hard timeout (shared test helpers).

A plain module, not conftest.py: tests/slurm has its own conftest, and `from conftest import`
would be ambiguous.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cluster import MPIEXEC, launcher

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["MPIEXEC", "ROOT", "run_mpi", "run_train"]


def run_mpi(args: list[str], *, ranks: int, cwd: Path | None = None, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``mpiexec -n ranks python ARGS`` with output captured; fails the test on timeout.
    On the emulated cluster of tests/cluster.py when ``MPITRAIN_TEST_RANKS_PER_NODE`` is
    set."""
    command = [*launcher(ranks), sys.executable, *args]
    full_env = {**os.environ, **(env or {})}
    try:
        return subprocess.run(command, cwd=cwd or ROOT, env=full_env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out after {timeout}s (a hang?): {' '.join(command)}\n"
                    f"{exc.stdout}\n{exc.stderr}")


def run_train(args: list[str], *, ranks: int = 2, **kwargs) -> subprocess.CompletedProcess[str]:
    """``mpiexec -n ranks python -m mpitrain train ARGS``."""
    return run_mpi(["-m", "mpitrain", "train", *args], ranks=ranks, **kwargs)


def same_model_on(ranks: tuple[int, ...], args: list[str], directory: Path):
    """Train with ``args`` on each rank count (into ``directory/run{P}``), assert the models
    are equal (float64, 1e-10) and return the first one's SavedModel."""
    from mpitrain.models import load_model

    models = []
    for count in ranks:
        out = directory / f"run{count}"
        done = run_train([*args, "--out", str(out)], ranks=count)
        assert done.returncode == 0, done.stderr
        models.append(load_model(out / "model.npz"))
    for other in models[1:]:
        for name, value in models[0].params.items():
            np.testing.assert_allclose(other.params[name], value, rtol=1e-10, atol=1e-12)
    return models[0]


def model_of(run: Path) -> dict[str, np.ndarray]:
    """The trained tensors (W0, b0, ...) of a run directory's model.npz."""
    with np.load(run / "model.npz") as saved:
        return {k: saved[k] for k in saved.files if k.startswith(("W", "b"))}
