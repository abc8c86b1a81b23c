"""A real single-node Slurm for the tests in this directory, and helpers to run batch jobs.

The session fixture ``slurm`` starts munged, slurmctld and slurmd with ``start-slurm.sh``
(idempotent) and stops them at the end if it started them. It skips, saying why, when this
machine cannot run Slurm (not root, packages missing: see ``.ci/slurm-setup``, or the
daemons do not come up). Set ``MPITRAIN_REQUIRE_SLURM=1`` to turn those skips into failures,
``MPITRAIN_KEEP_SLURM=1`` to leave the daemons running after the session.

Tests get a :class:`SlurmCluster`: ``slurm.submit_and_wait(script, env=..., timeout=...)``
returns ``(state, exit_code, stdout)`` of a batch job; ``slurm.release_requeued(job_id)``
starts a requeued job without Slurm's two-minute hold.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
START_SCRIPT = HERE / "start-slurm.sh"
NEEDED = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo", "scancel")
FINAL_STATES = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}
# Variables that would change what sbatch does (input variables) or leak an outer job.
_SCRUB = ("SBATCH_", "SLURM_", "SALLOC_", "SRUN_", "PMI_", "PMIX_")


class JobResult(NamedTuple):
    """How a batch job ended. ``exit_code`` is 128 + N when a signal N ended it."""

    state: str
    exit_code: int
    stdout: str


class SlurmCluster:
    """Submit batch scripts to the local Slurm and wait for them."""

    def __init__(self, partition: str) -> None:
        self.partition = partition
        scripts = Path(sysconfig.get_path("scripts"))
        #: the interpreter running the tests (the venv's), for jobs to run
        self.python = sys.executable
        #: MPICH's hydra launcher from the same venv as mpi4py
        self.mpirun = str(scripts / "mpirun")

    def job_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The submitting environment: ours without Slurm/PMI variables, plus ``env``.

        Jobs also get ``PYTHON`` and ``MPIRUN`` (the venv's) and run from the repository.
        """
        base = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
        base.update(PYTHON=self.python, MPIRUN=self.mpirun, PYTHONUNBUFFERED="1")
        base.update(env or {})
        return base

    def submit(
        self,
        script: str | os.PathLike[str],
        *,
        output: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        options: Sequence[str] = (),
        args: Sequence[str] = (),
        cwd: str | os.PathLike[str] = REPO,
    ) -> int:
        """``sbatch`` a script; return the job id. Command-line ``options`` override the
        script's ``#SBATCH`` lines; ``output`` gets the job's stdout and stderr."""
        command = [
            "sbatch",
            "--parsable",
            f"--partition={self.partition}",
            f"--output={output}",
            *options,
            str(script),
            *args,
        ]
        proc = subprocess.run(
            command, cwd=cwd, env=self.job_env(env), capture_output=True, text=True, timeout=60
        )
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
        return int(proc.stdout.strip().split(";")[0])

    def job_info(self, job_id: int) -> dict[str, str]:
        """``scontrol show job`` as a dict (empty when slurmctld has forgotten the job)."""
        proc = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", str(job_id)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", proc.stdout))

    def wait_for(
        self,
        job_id: int,
        *,
        timeout: float,
        until: frozenset[str] | set[str] = FINAL_STATES,
        output: str | os.PathLike[str] | None = None,
    ) -> tuple[str, int]:
        """Poll until the job's state is in ``until``; ``(state, exit_code)``.

        On timeout the job is cancelled and TimeoutError raised (with the job's output so
        far when ``output`` is given).
        """
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job_info(job_id)
            state = info.get("JobState", "")
            if state in until:
                return state, _exit_code(info.get("ExitCode", "0:0"))
            time.sleep(0.5)
        subprocess.run(["scancel", str(job_id)], timeout=30, check=False)
        text = Path(output).read_text(errors="replace") if output and Path(output).exists() else ""
        raise TimeoutError(
            f"job {job_id} still {info.get('JobState', '?')} "
            f"(reason {info.get('Reason', '?')}) after {timeout:g}s; cancelled it. "
            f"Output so far:\n{text}"
        )

    def wait_for_output(
        self, output: str | os.PathLike[str], pattern: str, *, count: int = 1, timeout: float
    ) -> str:
        """Wait until ``pattern`` (a regex) occurs ``count`` times in a job's output file."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            path = Path(output)
            text = path.read_text(errors="replace") if path.exists() else ""
            if len(re.findall(pattern, text)) >= count:
                return text
            time.sleep(0.2)
        raise TimeoutError(f"{pattern!r} not {count}x in {output} after {timeout:g}s:\n{text}")

    def release_requeued(self, job_id: int, *, restarts: int = 1, timeout: float = 120) -> None:
        """Wait until a requeued job is pending again (its ``restarts``-th time) and let it
        start now: Slurm holds requeued jobs back for about two minutes."""
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job_info(job_id)
            if info.get("JobState") == "PENDING" and info.get("Restarts") == str(restarts):
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"job {job_id} not pending after restart {restarts}: {info}")
        # The previous run's step daemons must be gone: the next run reuses their step ids
        # (JOBID.0, ...), and a slurmstepd still cleaning up (e.g. after srun
        # --kill-on-bad-exit terminated its step) removes the new step's sockets, so its
        # srun fails ("mpi/pmi2: failed to send temp kvs") and hangs. Slurm's own hold
        # makes this impossible outside tests.
        pattern = rf"^slurmstepd: \[{job_id}\."
        while time.monotonic() < deadline and subprocess.run(
                ["pgrep", "-f", pattern], capture_output=True, timeout=30).returncode == 0:
            time.sleep(0.2)
        # not within the second of the requeue: slurmd refuses to launch a job whose
        # credential is no newer than its revocation ("Job credential revoked")
        time.sleep(2)
        subprocess.run(
            ["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, timeout=30
        )

    def submit_and_wait(
        self,
        script: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float,
        options: Sequence[str] = (),
        args: Sequence[str] = (),
        output: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] = REPO,
    ) -> JobResult:
        """Submit ``script``, wait until it ends; ``(state, exit_code, stdout)``.

        ``output`` defaults to a file in a fresh temporary directory.
        """
        if output is None:
            output = Path(tempfile.mkdtemp(prefix="mpitrain-job-")) / "job.out"
        job_id = self.submit(script, output=output, env=env, options=options, args=args, cwd=cwd)
        state, exit_code = self.wait_for(job_id, timeout=timeout, output=output)
        return JobResult(state, exit_code, _read_settled(Path(output), job_id))


def _exit_code(text: str) -> int:
    """Slurm's ``ExitCode=RC:SIG`` as one number, shell style."""
    code, _, sig = text.partition(":")
    try:
        return 128 + int(sig) if sig and int(sig) else int(code)
    except ValueError:
        return -1


def _read_settled(path: Path, job_id: int, timeout: float = 60.0) -> str:
    """Read a job's output once the job's step daemons have exited: slurmstepd writes the
    output file and may still flush it after the job's state changed. (Waits for that
    event, not for a pause in the output; ``timeout`` only bounds a daemon that hangs.)"""
    pattern = rf"^slurmstepd: \[{job_id}\."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and subprocess.run(
            ["pgrep", "-f", pattern], capture_output=True, timeout=30).returncode == 0:
        time.sleep(0.2)
    return path.read_text(errors="replace") if path.exists() else ""


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("MPITRAIN_REQUIRE_SLURM") == "1":
        pytest.fail(f"Slurm required (MPITRAIN_REQUIRE_SLURM=1) but: {reason}")
    pytest.skip(reason)


def _node_ready() -> bool:
    try:
        proc = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%t"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.split()[:1] in (["idle"], ["mix"], ["alloc"])


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A running single-node Slurm (started here if need be), or a skip that says why."""
    if sys.platform != "linux":
        _skip_or_fail("the Slurm tests run on Linux only")
    if os.geteuid() != 0:
        _skip_or_fail("the Slurm tests need root (they start munged, slurmctld and slurmd)")
    missing = [name for name in NEEDED if shutil.which(name) is None]
    if missing:
        _skip_or_fail(
            f"Slurm is not installed (missing {', '.join(missing)}); run .ci/slurm-setup "
            "or apt-get install munge slurmctld slurmd slurm-client"
        )
    was_running = _node_ready()
    proc = subprocess.run(
        ["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=180
    )
    if proc.returncode != 0:
        _skip_or_fail(
            f"start-slurm.sh failed (exit {proc.returncode}): "
            + "\n".join(proc.stderr.strip().splitlines()[-20:])
        )
    partition = os.environ.get("MPITRAIN_SLURM_PARTITION", "debug")
    try:
        yield SlurmCluster(partition)
    finally:
        if not was_running and os.environ.get("MPITRAIN_KEEP_SLURM") != "1":
            subprocess.run(
                ["bash", str(START_SCRIPT), "--stop"], capture_output=True, timeout=120
            )
