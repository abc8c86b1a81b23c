"""How the job was launched: catch launchers that did not wire MPI up, set thread counts.

Checked under Slurm 22.05 with the MPICH wheel from PyPI (``tests/slurm``):

- ``srun --mpi=pmi2 -n N python ...`` works (MPICH's PMI client speaks Slurm's PMI-2);
- ``mpirun -n N python ...`` inside an ``sbatch``/``salloc`` allocation works (hydra sees
  Slurm and starts its proxies with ``srun``);
- plain ``srun -n N`` with ``MpiDefault=none`` starts N unrelated singletons: every task
  sees a world of 1 and would train the whole data set alone, all writing the same files.
  :func:`check_mpi_wiring` turns that into one clear error;
- ``srun --mpi=pmix`` fails inside ``MPI_Init`` (the wheel has no PMIx support), before
  Python code can say anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING

from mpitrain.errors import UserError

if TYPE_CHECKING:
    from mpi4py import MPI

THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""Thread-count variables set by :func:`configure_threads`."""

# Variables a PMI or PMIx server hands to the processes it wired up.
_PMI_VARIABLES = ("PMI_FD", "PMI_PORT", "PMI_SIZE", "PMI_RANK", "PMIX_NAMESPACE", "PMIX_RANK")


class MPIWiringError(UserError):
    """The launcher started several processes but MPI connected none of them.

    Every process sees a world of 1 and raises this; ``task`` is the launcher's index for
    this process (``SLURM_PROCID``, ``PMI_RANK``, ...) or None, so a caller can print the
    message from task 0 only.
    """

    def __init__(self, message: str, task: int | None) -> None:
        super().__init__(message)
        self.task = task


def _int(env: Mapping[str, str], *names: str) -> int | None:
    """The first of ``names`` set in ``env`` to an integer, else None."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                continue
    return None


def mpi_wiring_problem(size: int, env: Mapping[str, str]) -> tuple[str, int | None] | None:
    """What is wrong with a world of ``size`` ranks given the launcher's ``env``, if anything.

    Returns ``(message, task)`` or None. Pure function of its arguments, for tests.
    """
    if size != 1:
        return None
    has_pmi = any(name in env for name in _PMI_VARIABLES)

    step_tasks = _int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS")
    if "SLURM_STEP_ID" in env and step_tasks is not None and step_tasks > 1 and not has_pmi:
        return (
            f"launched by srun with {step_tasks} tasks but MPI sees a world of 1 rank: "
            "srun did not wire up MPI; use 'srun --mpi=pmi2 ...' or "
            f"'mpirun -n {step_tasks} ...' inside the allocation",
            _int(env, "SLURM_PROCID"),
        )

    ompi_size = _int(env, "OMPI_COMM_WORLD_SIZE")
    if ompi_size is not None and ompi_size > 1:
        return (
            f"launched by Open MPI's mpirun with {ompi_size} processes but MPI sees a world "
            "of 1 rank: that mpirun belongs to another MPI than the one mpi4py uses; use "
            "the mpiexec installed with mpi4py's MPI (e.g. .venv/bin/mpiexec)",
            _int(env, "OMPI_COMM_WORLD_RANK"),
        )

    pmi_size = _int(env, "PMI_SIZE")
    if pmi_size is not None and pmi_size > 1:
        return (
            f"launched by a PMI launcher with {pmi_size} processes but MPI sees a world of "
            "1 rank: the launcher does not match the MPI library mpi4py uses; use the "
            "mpiexec installed with it (e.g. .venv/bin/mpiexec) or 'srun --mpi=pmi2'",
            _int(env, "PMI_RANK"),
        )
    return None


def check_mpi_wiring(comm: MPI.Comm, env: Mapping[str, str] | None = None) -> None:
    """Raise :class:`MPIWiringError` if the launcher started N > 1 processes that MPI did
    not connect (each sees a world of 1).

    Not collective: with a world of 1 there is nobody to agree with, and every launched
    process raises on its own. ``env`` defaults to ``os.environ``.
    """
    problem = mpi_wiring_problem(comm.Get_size(), os.environ if env is None else env)
    if problem is not None:
        message, task = problem
        raise MPIWiringError(message, task)


def configure_threads(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set NUMBA/OMP/OPENBLAS thread counts per rank where unset: ``SLURM_CPUS_PER_TASK``
    under Slurm, else 1.

    One rank per core is the data-parallel layout, so each rank's BLAS and numba pools must
    not spawn a thread per core of the node (N ranks x all cores oversubscribes it, and
    spinning BLAS threads slow a step by orders of magnitude). torchrun makes the same
    choice. Variables already set (by the user or the batch script) win. Returns what was
    set.

    Must run before numpy and numba are imported to matter for them (``python -m mpitrain``
    calls it first thing); :func:`limit_loaded_blas` covers libraries already loaded.
    """
    env = os.environ if env is None else env
    cpus = _int(env, "SLURM_CPUS_PER_TASK")
    threads = str(cpus if cpus is not None and cpus >= 1 else 1)
    changed = {}
    for name in THREAD_VARIABLES:
        if not env.get(name, "").strip():
            env[name] = threads
            changed[name] = threads
    return changed


def limit_loaded_blas() -> None:
    """Apply ``OPENBLAS_NUM_THREADS`` (after :func:`configure_threads`) to BLAS libraries
    that are already loaded, e.g. when mpitrain is imported after numpy in a script."""
    from threadpoolctl import threadpool_limits

    configure_threads()
    threads = _int(os.environ, "OPENBLAS_NUM_THREADS")
    if threads is not None and threads >= 1:
        threadpool_limits(limits=threads, user_api="blas")
