"""Launcher checks: srun without MPI wiring, foreign mpiexec, thread counts from Slurm."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mpi4py import MPI

from mpitrain.errors import UserError
from mpitrain.runtime.launch import (
    THREAD_VARIABLES,
    MPIWiringError,
    check_mpi_wiring,
    configure_threads,
    mpi_wiring_problem,
)

pytestmark = pytest.mark.timeout(60)

# What a task of `srun -n 2` (MpiDefault=none) sees, as recorded under Slurm 22.05.
SRUN_NO_MPI = {
    "SLURM_NPROCS": "2",
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": "1",
    "SLURM_STEPID": "0",
    "SLURM_STEP_ID": "0",
    "SLURM_STEP_NUM_TASKS": "2",
}
# ... and a task of `srun --mpi=pmi2 -n 2`.
SRUN_PMI2 = {**SRUN_NO_MPI, "PMI_FD": "11", "PMI_RANK": "1", "PMI_SIZE": "2", "PMI_JOBID": "5"}
# A rank of `mpirun -n 2` inside `sbatch -n 2`: hydra's proxy is a 1-task srun step.
MPIRUN_IN_SBATCH = {
    "SLURM_NPROCS": "1",
    "SLURM_NTASKS": "1",
    "SLURM_PROCID": "0",
    "SLURM_STEP_ID": "0",
    "SLURM_STEP_NUM_TASKS": "1",
    "PMI_FD": "5",
    "PMI_RANK": "1",
    "PMI_SIZE": "2",
}
# The batch script itself of `sbatch -n 2` (no step).
BATCH_SCRIPT = {"SLURM_NPROCS": "2", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"}


class FakeComm:
    def __init__(self, size: int) -> None:
        self.size = size

    def Get_size(self) -> int:
        return self.size


def test_srun_without_mpi_is_an_error() -> None:
    with pytest.raises(MPIWiringError) as info:
        check_mpi_wiring(FakeComm(1), SRUN_NO_MPI)
    assert str(info.value) == (
        "launched by srun with 2 tasks but MPI sees a world of 1 rank: srun did not wire up "
        "MPI; use 'srun --mpi=pmi2 ...' or 'mpirun -n 2 ...' inside the allocation"
    )
    assert isinstance(info.value, UserError)
    assert info.value.task == 1


def test_srun_falls_back_to_slurm_ntasks() -> None:
    env = {k: v for k, v in SRUN_NO_MPI.items() if k != "SLURM_STEP_NUM_TASKS"}
    env["SLURM_NTASKS"] = "8"
    problem = mpi_wiring_problem(1, env)
    assert problem is not None and "srun with 8 tasks" in problem[0]


@pytest.mark.parametrize(
    ("size", "env"),
    [
        (2, SRUN_NO_MPI),  # wired fine
        (1, SRUN_PMI2 | {"PMI_SIZE": "1", "SLURM_STEP_NUM_TASKS": "1"}),
        (2, SRUN_PMI2),
        (2, MPIRUN_IN_SBATCH),
        (1, BATCH_SCRIPT),  # python run directly in the batch script: a legal 1-rank run
        (1, {**SRUN_NO_MPI, "SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "1"}),
        (1, {}),
        (1, {"PMI_SIZE": "1", "PMI_RANK": "0"}),
        (1, {"OMPI_COMM_WORLD_SIZE": "1"}),
    ],
)
def test_fine_launches_pass(size: int, env: dict[str, str]) -> None:
    check_mpi_wiring(FakeComm(size), env)


def test_foreign_open_mpi_launcher() -> None:
    env = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "0"}
    with pytest.raises(MPIWiringError, match="Open MPI's mpirun with 4 processes") as info:
        check_mpi_wiring(FakeComm(1), env)
    assert info.value.task == 0


def test_foreign_pmi_launcher() -> None:
    with pytest.raises(MPIWiringError, match="PMI launcher with 3 processes"):
        check_mpi_wiring(FakeComm(1), {"PMI_SIZE": "3", "PMI_RANK": "2"})


def test_pmi2_size_mismatch_under_srun() -> None:
    # srun --mpi=pmi2 wired it, yet MPI saw 1 rank: an MPI that ignores PMI-2
    with pytest.raises(MPIWiringError, match="PMI launcher with 2 processes"):
        check_mpi_wiring(FakeComm(1), SRUN_PMI2)


def test_garbage_values_are_ignored() -> None:
    check_mpi_wiring(FakeComm(1), {"SLURM_STEP_ID": "0", "SLURM_NTASKS": "lots"})


def test_real_comm_uses_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*SRUN_PMI2, "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMIX_NAMESPACE"]:
        monkeypatch.delenv(name, raising=False)
    check_mpi_wiring(MPI.COMM_SELF)
    for name, value in SRUN_NO_MPI.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(MPIWiringError, match="srun with 2 tasks"):
        check_mpi_wiring(MPI.COMM_SELF)


def test_threads_from_slurm() -> None:
    env = {"SLURM_CPUS_PER_TASK": "4", "OMP_NUM_THREADS": "2"}
    assert configure_threads(env) == {
        "NUMBA_NUM_THREADS": "4",
        "OPENBLAS_NUM_THREADS": "4",
    }
    assert env["OMP_NUM_THREADS"] == "2"  # the user's choice wins
    assert env["NUMBA_NUM_THREADS"] == "4"


@pytest.mark.parametrize("value", [None, "", "0", "x"])
def test_one_thread_per_rank_without_usable_slurm_value(value: str | None) -> None:
    env = {} if value is None else {"SLURM_CPUS_PER_TASK": value}
    assert configure_threads(env) == dict.fromkeys(THREAD_VARIABLES, "1")


def test_threads_reach_numba_when_set_before_import() -> None:
    """Importing mpitrain.runtime.launch must not import numpy or numba, or the call is too late."""
    code = (
        "import os\n"
        "os.environ['SLURM_CPUS_PER_TASK'] = '1'\n"
        "for name in ('NUMBA_NUM_THREADS', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):\n"
        "    os.environ.pop(name, None)\n"
        "import sys\n"
        "from mpitrain.runtime.launch import configure_threads\n"
        "assert 'numpy' not in sys.modules and 'numba' not in sys.modules, 'imported too early'\n"
        "configure_threads()\n"
        "import numba\n"
        "print(numba.config.NUMBA_NUM_THREADS)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "1"
