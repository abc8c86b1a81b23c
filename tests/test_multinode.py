"""The suite again across nodes, on the emulated cluster of tests/cluster.py (``make
test-multinode``, part of ``make test``).

Layouts: 2x2 (two nodes of two ranks), 3x1 (three nodes of one rank) and 2+1 (uneven).
Each test starts ``mpiexec -launcher ssh -launcher-exec tests/multinode/fake-ssh -f
HOSTFILE`` and runs, under it, the MPI tests of the collectives (every algorithm, the
hierarchical allreduce among them, against numpy), of sync and federated training
(the same model for any number of ranks), and, through ``MPITRAIN_TEST_RANKS_PER_NODE``,
the end-to-end checkpoint/resume and failure tests of the CLI, the data shards and
``plan --measure``. Skipped, with the reason,
when the node names cannot be made to resolve (they are added to /etc/hosts as root).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cluster import LAYOUT, RANKS_PER_NODE, ROOT, describe, mpiexec_prefix, skip_reason

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(900)]

LAYOUTS = {"2x2": [2, 2], "3x1": [1, 1, 1], "2+1": [2, 1]}
PYTEST_MPI = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--with-mpi", "-m", "mpi",
              "--timeout=240"]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)


def run(command: list[str], *, timeout: float, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """``command`` from the repository root, output captured; a timeout fails the test."""
    full_env = {**os.environ, **(env or {})}
    try:
        return subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out after {timeout}s (a hang?): {' '.join(command)}\n"
                    f"{exc.stdout}\n{exc.stderr}")


def run_on(layout: str, args: list[str], tmp_path, *, timeout: float = 600,
           ) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` on every rank of ``layout``, told which layout to expect."""
    command = [*mpiexec_prefix(LAYOUTS[layout], tmp_path), sys.executable, *args]
    return run(command, timeout=timeout, env={LAYOUT: layout})


def passed(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"


PROBE = r"""
from mpi4py import MPI
from mpitrain.collectives import context
comm = MPI.COMM_WORLD
node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
layout = context.state_of(comm).layout()
rows = comm.gather(f"{comm.Get_rank()} {node.Get_size()} {layout.describe()} {layout.slices}")
if comm.Get_rank() == 0:  # one writer: hydra's proxies may interleave the ranks' output
    print("\n".join(rows), flush=True)
"""


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mpi_sees_the_emulated_nodes(layout, tmp_path):
    """Split_type splits by emulated node, and the layout the collectives build agrees."""
    done = run_on(layout, ["-c", PROBE], tmp_path, timeout=120)
    passed(done)
    sizes = LAYOUTS[layout]
    rows = sorted(tuple(line.split()) for line in done.stdout.splitlines())
    node_of = [node for node, count in enumerate(sizes) for _ in range(count)]
    assert rows == sorted((str(rank), str(sizes[node_of[rank]]), describe(sizes),
                           str(min(sizes))) for rank in range(sum(sizes)))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_collectives(layout, tmp_path):
    passed(run_on(layout, [*PYTEST_MPI, "tests/test_collectives.py",
                           "tests/test_bench_allreduce.py", "tests/test_tune.py"], tmp_path))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_data_sync_and_federated_training(layout, tmp_path):
    """Shards of files every node reads from the same path; every --reduce (hierarchical
    among them) gives the one-rank model; federated too."""
    passed(run_on(layout, [*PYTEST_MPI, "tests/test_data_mpi.py"], tmp_path))
    passed(run_on(layout, [*PYTEST_MPI, "-k", "same_model or identical",
                           "tests/test_train_mpi.py", "tests/test_federated_mpi.py"], tmp_path))
    # --reduce shared-update is refused across nodes, and auto does not take it there
    passed(run_on(layout, [*PYTEST_MPI, "tests/test_shared_update_mpi.py"], tmp_path))


CLI_TESTS = ("resume_on_another_number_of_ranks or federated_stop_and_resume "
             "or rank_killed_with_sigkill or stall_timeout")


@pytest.mark.parametrize("per_node", [2, 1])
def test_checkpoints_resume_and_failures(per_node):
    """The CLI's checkpoint/resume and failure tests with every mpiexec on the cluster:
    ``per_node=2`` puts 2 ranks on 1 node, 3 on 2+1; ``per_node=1`` one rank per node.
    A rank killed on one node ends the job on every node within 30 s."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-m", "not mpi and not slurm", "-k", CLI_TESTS, "tests/test_reliability.py"]
    passed(run(command, timeout=800, env={RANKS_PER_NODE: str(per_node)}))


@pytest.mark.parametrize("layout", ["2x2", "2+1"])
def test_plan_measures_on_the_cluster(layout, tmp_path):
    """``plan --measure`` across emulated nodes: calibrated on the layout (both link
    classes on 2x2, an uneven one on 2+1), every algorithm but shm trained and compared
    (the agreement is a benchmark's business, docs/multinode.md)."""
    from test_plan import check_validation

    path = tmp_path / "plan.json"
    done = run_on(layout, ["-m", "mpitrain", "plan", "--nodes", "2", "--ranks-per-node", "2",
                           "--max-ranks", "8", "--hidden", "16", "--batch", "32",
                           "--measure", "--measure-steps", "5", "--measure-repeats", "1",
                           "--json", str(path)],
                  tmp_path, timeout=300)
    passed(done)
    measured = json.loads(path.read_text())["measured"]
    assert measured["layout"] == layout
    check_validation(measured, LAYOUTS[layout], 1)


def test_multi_node_batch_script_with_mpirun(tmp_path):
    """examples/slurm/multi-node.sbatch (LAUNCHER=mpirun) on 2x2, the allocation given by
    Slurm's variables and hydra's host list by the cluster: it trains, and the model is the
    one-rank model (float64, --shuffle global, --reduce auto)."""
    wrapper = tmp_path / "mpirun"
    prefix = mpiexec_prefix(LAYOUTS["2x2"], tmp_path)[:-2]  # without "-n P"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(prefix) + ' "$@"\n')
    wrapper.chmod(0o755)
    args = ["--data", "digits", "--model", "mlp", "--hidden", "16", "--epochs", "2",
            "--batch-size", "64", "--dtype", "float64", "--quiet"]
    slurm = {"SLURM_JOB_NAME": "mpitrain-multi", "SLURM_JOB_ID": "42", "SLURM_NTASKS": "4",
             "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "mpitrain-node[1-2]",
             "SLURM_CPUS_PER_TASK": "1", "LAUNCHER": "mpirun", "MPIRUN": str(wrapper),
             "PYTHON": sys.executable, "OUT": str(tmp_path / "multi")}
    done = run(["bash", str(ROOT / "examples" / "slurm" / "multi-node.sbatch"), *args],
               timeout=300, env=slurm)
    passed(done)
    assert "4 ranks on 2 nodes" in done.stdout
    summary = json.loads((tmp_path / "multi" / "summary.json").read_text())
    assert (summary["status"], summary["ranks"]) == ("finished", 4)
    alone = run([sys.executable, "-m", "mpitrain", "train", *args, "--out",
                 str(tmp_path / "alone")], timeout=300)
    passed(alone)
    with np.load(tmp_path / "multi" / "model.npz") as got, \
            np.load(tmp_path / "alone" / "model.npz") as want:
        for name in ("W0", "b0", "W1", "b1"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-11)
