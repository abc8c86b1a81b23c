"""Smoke tests against a real single-node Slurm: which launchers wire up the MPICH wheel,
and the example batch scripts' launch and requeue logic (with a stand-in trainer).

Serial tests (not pytest-mpi); each job uses 2 tasks, which fits a 2-core machine.
"""

from __future__ import annotations

import re
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXAMPLES = REPO / "examples" / "slurm"
HELLO = HERE / "mpi_hello.py"
FAKE_TRAIN = HERE / "fake_train.py"

LAUNCH_LINES = {
    "srun-pmi2": 'srun --mpi=pmi2 "$PYTHON" {script}',
    "mpirun": '"$MPIRUN" -n "$SLURM_NTASKS" "$PYTHON" {script}',
}


def batch_script(tmp_path: Path, body: str, *, tasks: int = 2) -> Path:
    script = tmp_path / "job.sbatch"
    script.write_text(
        f"#!/bin/bash\n#SBATCH --ntasks={tasks}\n#SBATCH --time=5\nset -euo pipefail\n{body}\n"
    )
    return script


def fake_python(tmp_path: Path, real_python: str) -> Path:
    """An executable that takes `-m mpitrain train ...` like python, runs fake_train.py."""
    wrapper = tmp_path / "fake-python"
    wrapper.write_text(f'#!/bin/sh\nexec "{real_python}" "{FAKE_TRAIN}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper


@pytest.mark.parametrize("launcher", sorted(LAUNCH_LINES))
def test_two_rank_hello(slurm, tmp_path: Path, launcher: str) -> None:
    script = batch_script(tmp_path, LAUNCH_LINES[launcher].format(script=HELLO))
    state, exit_code, stdout = slurm.submit_and_wait(
        script, timeout=180, output=tmp_path / "job.out"
    )
    assert (state, exit_code) == ("COMPLETED", 0), stdout
    lines = sorted(re.findall(r"hello: rank \d of \d sum \d+", stdout))
    assert lines == ["hello: rank 0 of 2 sum 3", "hello: rank 1 of 2 sum 3"], stdout


def test_bare_srun_is_refused_by_check_mpi_wiring(slurm, tmp_path: Path) -> None:
    """MpiDefault=none: plain srun starts 2 unconnected singletons; each says so."""
    script = batch_script(tmp_path, f'srun "$PYTHON" {HELLO}')
    state, exit_code, stdout = slurm.submit_and_wait(
        script, timeout=180, output=tmp_path / "job.out"
    )
    assert (state, exit_code) == ("FAILED", 2), stdout
    message = (
        "launched by srun with 2 tasks but MPI sees a world of 1 rank: srun did not wire up "
        "MPI; use 'srun --mpi=pmi2 ...' or 'mpirun -n 2 ...' inside the allocation"
    )
    assert stdout.count(message) == 2, stdout
    assert "wiring error (task 0)" in stdout and "wiring error (task 1)" in stdout
    assert "hello:" not in stdout


@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
@pytest.mark.parametrize("example", ["single-node", "multi-node"])
def test_example_scripts_launch_two_ranks(slurm, tmp_path: Path, example: str, launcher: str):
    env = {
        "PYTHON": str(fake_python(tmp_path, slurm.python)),
        "LAUNCHER": launcher,
        "OUT": str(tmp_path / "out"),
    }
    # one node here: shrink the request, keep --cpus-per-task=1 from the script
    options = ["--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--time=5"]
    state, exit_code, stdout = slurm.submit_and_wait(
        EXAMPLES / f"{example}.sbatch",
        env=env,
        options=options,
        timeout=180,
        output=tmp_path / "job.out",
    )
    assert (state, exit_code) == ("COMPLETED", 0), stdout
    lines = sorted(re.findall(r"fake-train: rank \d of \d restart 0 threads \d+", stdout))
    assert lines == [
        "fake-train: rank 0 of 2 restart 0 threads 1",
        "fake-train: rank 1 of 2 restart 0 threads 1",
    ], stdout


def check_resumed(slurm, job_id: int, output: Path, out: Path) -> None:
    state, exit_code = slurm.wait_for(job_id, timeout=180, output=output)
    text = output.read_text()
    assert (state, exit_code) == ("COMPLETED", 0), text
    assert slurm.job_info(job_id).get("Restarts") == "1", text
    assert text.count("got USR1, checkpointed, stopping") == 2, text
    assert "training exited with status 75" in text, text
    assert text.count("resumed from checkpoint of run 0") == 2, text
    assert "run 0 of job" in text and "run 1 of job" in text, text
    assert (out / "checkpoint-marker").exists()


@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
@pytest.mark.parametrize("target", ["batch", "steps"])
def test_preemptible_checkpoints_requeues_and_resumes(
    slurm, tmp_path: Path, launcher: str, target: str
) -> None:
    """USR1 to the batch shell (what --signal=B:USR1@120 does near the time limit) reaches
    every rank through the launcher; or USR1 to the ranks only (--signal=USR1@120): the
    ranks checkpoint and exit 75, the script requeues the job and the next run resumes.
    """
    out = tmp_path / "out"
    output = tmp_path / "job.out"
    env = {"PYTHON": str(fake_python(tmp_path, slurm.python)), "LAUNCHER": launcher}
    env["OUT"] = str(out)
    job_id = slurm.submit(
        EXAMPLES / "preemptible.sbatch",
        output=output,
        env=env,
        options=["--ntasks=2", "--time=10"],
    )
    slurm.wait_for_output(output, r"fake-train: rank \d ready", count=2, timeout=120)
    scope = ["--batch"] if target == "batch" else []
    subprocess.run(
        ["scancel", *scope, "--signal=USR1", str(job_id)], check=True, timeout=30
    )
    slurm.wait_for_output(output, r"requeueing job", timeout=120)
    slurm.release_requeued(job_id)
    check_resumed(slurm, job_id, output, tmp_path / "out")
    text = output.read_text()
    asked = "time limit near: asking the ranks to checkpoint and stop"
    assert (asked in text) == (target == "batch"), text


def test_helper_reports_a_failing_job(slurm, tmp_path: Path) -> None:
    script = batch_script(tmp_path, textwrap.dedent("""\
        echo "about to fail"
        exit 7"""), tasks=1)
    state, exit_code, stdout = slurm.submit_and_wait(
        script, timeout=120, output=tmp_path / "job.out"
    )
    assert (state, exit_code) == ("FAILED", 7)
    assert "about to fail" in stdout


@pytest.mark.slow
def test_preemptible_real_time_limit_signal(slurm, tmp_path: Path) -> None:
    """The real thing: Slurm itself sends USR1 (--signal=B:USR1@90 on a 2-minute job, so
    about 30 s in), the script requeues, the next run resumes."""
    out = tmp_path / "out"
    output = tmp_path / "job.out"
    env = {"PYTHON": str(fake_python(tmp_path, slurm.python)), "OUT": str(out)}
    job_id = slurm.submit(
        EXAMPLES / "preemptible.sbatch",
        output=output,
        env=env,
        options=["--ntasks=2", "--time=2", "--signal=B:USR1@90"],
    )
    slurm.wait_for_output(output, r"requeueing job", timeout=150)
    slurm.release_requeued(job_id)
    check_resumed(slurm, job_id, output, out)
