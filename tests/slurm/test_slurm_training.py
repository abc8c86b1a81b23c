"""The example batch scripts running the real ``python -m mpitrain train`` on a real Slurm:
an uninterrupted job (single-node.sbatch), and a preemptible job (preemptible.sbatch) that
is signalled with USR1 mid-training, requeues itself, resumes from its checkpoint and must
end with exactly the same model.

Serial tests (not pytest-mpi); each job uses 2 tasks, which fits a 2-core machine.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "slurm"
CHAOS = REPO / "tests" / "chaos.py"
EPOCHS = 120
# 6400 training rows / 16 = 400 steps per epoch: 5-30 s of training on 2 ranks, long
# enough to be signalled mid-run
TRAIN = ["--data", "synthetic", "--samples", "8000", "--features", "20", "--classes", "4",
         "--model", "mlp", "--hidden", "32", "--batch-size", "16", "--optimizer", "momentum",
         "--lr", "0.02", "--epochs", str(EPOCHS)]
JOB_OPTIONS = ["--ntasks=2", "--time=10"]  # one node here: shrink the scripts' requests


def model_arrays(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "model.npz", allow_pickle=False) as model:
        return {name: model[name] for name in model.files if not name.startswith("meta_")}


def metrics_epochs(out: Path) -> list[int]:
    text = (out / "metrics.jsonl").read_text() if (out / "metrics.jsonl").exists() else ""
    return [json.loads(line)["epoch"] for line in text.splitlines()]


def epochs_written(out: Path) -> int:
    """Complete lines of metrics.jsonl so far (safe while rank 0 appends to it)."""
    path = out / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def check_finished(out: Path, ranks: int = 2) -> None:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["ranks"] == ranks, summary
    assert metrics_epochs(out) == list(range(1, EPOCHS + 1))  # none twice, none missing


@pytest.fixture(scope="module")
def uninterrupted(slurm, tmp_path_factory) -> Path:
    """OUT of examples/slurm/single-node.sbatch (srun --mpi=pmi2, 2 tasks) running TRAIN."""
    tmp = tmp_path_factory.mktemp("single-node")
    out = tmp / "out"
    state, exit_code, stdout = slurm.submit_and_wait(
        EXAMPLES / "single-node.sbatch", env={"OUT": str(out)}, options=JOB_OPTIONS,
        args=TRAIN, timeout=300, output=tmp / "job.out")
    assert (state, exit_code) == ("COMPLETED", 0), stdout
    return out


def test_single_node_example_trains(uninterrupted: Path) -> None:
    out = uninterrupted
    check_finished(out)
    final = json.loads((out / "summary.json").read_text())["final"]
    assert final["test_accuracy"] > 0.5  # 4 classes: well above chance
    assert model_arrays(out)["W0"].shape == (20, 32)
    assert (out / "checkpoints" / f"ckpt-{EPOCHS * 400:09d}.npz").exists()  # at the end


def test_preemptible_example_requeues_resumes_and_ends_with_the_same_model(
        slurm, tmp_path: Path, uninterrupted: Path) -> None:
    """USR1 to the batch shell mid-training (what `--signal=B:USR1@120` does before the
    time limit): the ranks checkpoint and exit 75, the script requeues the job, the next
    run resumes by itself, and the final model is bit-identical to the uninterrupted job's.
    """
    out, output = tmp_path / "out", tmp_path / "job.out"
    job_id = slurm.submit(EXAMPLES / "preemptible.sbatch", output=output,
                          env={"OUT": str(out), "CHECKPOINT_EVERY": "1000"},
                          options=JOB_OPTIONS, args=TRAIN)
    deadline = time.monotonic() + 180
    while epochs_written(out) < 3:  # mid-training: a few epochs done, most to come
        assert time.monotonic() < deadline, output.read_text() if output.exists() else ""
        time.sleep(0.1)
    subprocess.run(["scancel", "--batch", "--signal=USR1", str(job_id)], check=True,
                   timeout=30)
    text = slurm.wait_for_output(output, r"requeueing job", timeout=120)
    assert "training exited with status 75" in text, text
    assert "mpitrain: stopped on SIGTERM/SIGUSR1: wrote a checkpoint" in text, text
    stopped = json.loads((out / "summary.json").read_text())
    assert stopped["status"] == "stopped", stopped
    done_before = len(metrics_epochs(out))
    assert 3 <= done_before < EPOCHS, text

    slurm.release_requeued(job_id)
    state, exit_code = slurm.wait_for(job_id, timeout=300, output=output)
    text = output.read_text()
    assert (state, exit_code) == ("COMPLETED", 0), text
    assert slurm.job_info(job_id).get("Restarts") == "1", text
    assert "run 0 of job" in text and "run 1 of job" in text, text
    resumed = re.findall(r"resuming from (\S+/ckpt-(\d+)\.npz) at unit (\d+)", text)
    assert len(resumed) == 1, text
    assert resumed[0][1].lstrip("0") == resumed[0][2]
    assert int(resumed[0][2]) >= done_before * 400, text  # no epoch redone from scratch
    assert text.count("training exited with status 75") == 1, text
    assert "training exited with status 0" in text, text

    check_finished(out)
    got, want = model_arrays(out), model_arrays(uninterrupted)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name


def chaos_python(tmp_path: Path, real_python: str) -> Path:
    """A stand-in for python that runs `-m mpitrain ...` through tests/chaos.py."""
    wrapper = tmp_path / "chaos-python"
    wrapper.write_text(f'#!/bin/sh\nexec "{real_python}" "{CHAOS}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper


@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_a_rank_killed_mid_run_ends_the_job(slurm, tmp_path: Path, launcher: str) -> None:
    """Rank 1 is SIGKILLed at step 30 of a long run under single-node.sbatch: the job fails
    well within 30 s (srun --kill-on-bad-exit SIGTERMs rank 0, which is stuck waiting for
    rank 1 and gives up after MPITRAIN_STOP_GRACE; mpirun kills it itself)."""
    pids, output = tmp_path / "pids", tmp_path / "job.out"
    env = {"OUT": str(tmp_path / "out"), "LAUNCHER": launcher,
           "PYTHON": str(chaos_python(tmp_path, slurm.python)), "CHAOS_PIDS": str(pids),
           "CHAOS_SIGNAL": "1:30:KILL", "MPITRAIN_STOP_GRACE": "3"}
    job_id = slurm.submit(EXAMPLES / "single-node.sbatch", output=output, env=env,
                          options=JOB_OPTIONS, args=[*TRAIN, "--epochs", "100000"])
    deadline = time.monotonic() + 180
    while not (pids / "signal-1.time").exists():
        assert time.monotonic() < deadline, output.read_text() if output.exists() else ""
        time.sleep(0.1)
    killed = float((pids / "signal-1.time").read_text())
    state, exit_code = slurm.wait_for(job_id, timeout=60, output=output)
    ended = time.time()
    text = output.read_text()
    assert state == "FAILED" and exit_code != 0, text
    assert ended - killed < 30, (ended - killed, text)
    if launcher == "srun":
        assert "task 1: Killed" in text, text  # srun names the rank (= task) that died
        assert "mpitrain: rank 0: got SIGTERM 3 s ago" in text, text
    else:  # hydra: "BAD TERMINATION ... PID N ..." names one of the processes it ended
        assert "Killed (signal 9)" in text, text
