"""The node-shared update (``--reduce shared-update``): its kernel, when ``auto`` takes it,
the options it refuses, and end-to-end runs under ``mpiexec`` (the same bits as ``--reduce
shm``; checkpoints that resume on other reductions and rank counts; a failing rank)."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from cli_runner import ROOT, model_of, run_mpi, run_train
from mpi4py import MPI

from mpitrain import train
from mpitrain.checkpoint.store import list_checkpoints
from mpitrain.collectives.select import SHARED_UPDATE_FROM_BYTES, picks_shared_update
from mpitrain.errors import UserError
from mpitrain.kernels.shared import BLOCK, sum_range, sum_slots

CHAOS = str(ROOT / "tests" / "chaos.py")
SMALL = dict(data="synthetic", samples=300, features=6, classes=3, model="mlp", hidden=(8,),
             epochs=2, batch_size=32, quiet=True)
# 24 features, 2 hidden layers, Adam with weight decay and a cosine schedule, float64:
# 450 training rows / 48 = 10 steps per epoch
CLI = ["--data", "synthetic", "--samples", "500", "--features", "24", "--classes", "4",
       "--model", "mlp", "--hidden", "32,16", "--epochs", "4", "--batch-size", "48",
       "--optimizer", "adam", "--lr", "0.01", "--weight-decay", "1e-3",
       "--lr-schedule", "cosine", "--dtype", "float64", "--shuffle", "global", "--quiet"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_sum_range_has_the_bits_of_the_slot_sum(dtype, ranks):
    rng = np.random.default_rng(ranks)
    n = 2 * BLOCK + 77
    slots = rng.standard_normal((ranks, 1, n)).astype(dtype) * 1e3
    whole = np.empty(n, dtype=dtype)
    sum_slots(slots, 0, whole)
    lo, m = 5, BLOCK + 300
    out = np.empty(m, dtype=dtype)
    sum_range(np.ascontiguousarray(slots[:, 0]), lo, out)
    assert out.tobytes() == whole[lo:lo + m].tobytes()
    with pytest.raises(ValueError, match="does not fit"):
        sum_range(np.ascontiguousarray(slots[:, 0]), n - 2, out)


def test_auto_takes_it_from_the_measured_threshold_on_two_or_more_ranks():
    assert SHARED_UPDATE_FROM_BYTES == 128 * 1024
    assert picks_shared_update(SHARED_UPDATE_FROM_BYTES, 2)
    assert not picks_shared_update(SHARED_UPDATE_FROM_BYTES - 1, 2)
    assert not picks_shared_update(10**8, 1)
    assert not picks_shared_update(38_456, 2)  # the standard workload stays on shm
    assert not picks_shared_update(76_912, 2)  # (in float64 too)


@pytest.mark.parametrize("options,message", [
    (dict(shard="optimizer"), "--reduce shared-update keeps one copy of the parameters per "
     "node in shared memory and updates it in place, which --shard optimizer rules out"),
    (dict(shared_memory=False), "which --no-shared-memory rules out"),
    (dict(stall_timeout=30), "which --stall-timeout (its watchdog watches MPI calls) rules"),
    (dict(overlap=True), "--overlap starts nonblocking reductions, which --reduce "
     "shared-update does not have"),
    (dict(compress="bf16"), "takes --reduce auto (got --reduce shared-update)"),
    (dict(mode="ssp"), "--reduce shared-update is a step of --mode sync with a gradient "
     "model (got --mode ssp --model mlp)"),
    (dict(mode="fedavg"), "(got --mode fedavg --model mlp)"),
])
def test_refused_where_it_cannot_run_with_one_message(options, message):
    with pytest.raises(UserError) as caught:
        train(comm=MPI.COMM_SELF, reduce="shared-update", **{**SMALL, **options})
    assert message in str(caught.value)


def test_refused_for_tree_models():
    with pytest.raises(UserError, match="got --mode sync --model gbdt"):
        train(comm=MPI.COMM_SELF, reduce="shared-update", data="synthetic", samples=100,
              features=4, classes=2, model="gbdt", trees=2, quiet=True)


def test_sparse_row_models_on_one_rank_are_the_plain_update(tmp_path):
    data = tmp_path / "rows.svm"
    data.write_text("".join(f"{i % 2} {i % 5 + 1}:1 {i % 7 + 6}:0.5\n" for i in range(60)))
    options = dict(data=str(data), model="logistic", sparse="on", epochs=2, batch_size=8,
                   optimizer="momentum", dtype="float64", quiet=True)
    shared = train(comm=MPI.COMM_SELF, reduce="shared-update", **options)
    assert shared.summary["reduce"]["algorithm"] == "shared-update"
    assert shared.flat.tobytes() == train(comm=MPI.COMM_SELF, reduce="mpi",
                                          **options).flat.tobytes()


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_one_rank_is_the_plain_update_and_returns_private_memory(optimizer):
    options = {**SMALL, "optimizer": optimizer, "weight_decay": 1e-3, "dtype": "float64"}
    plain = train(comm=MPI.COMM_SELF, reduce="mpi", **options)
    shared = train(comm=MPI.COMM_SELF, reduce="shared-update", **options)
    assert shared.flat.tobytes() == plain.flat.tobytes()
    assert shared.flat.flags.owndata and shared.flat.flags.writeable
    for name, value in plain.params.items():
        assert shared.params[name].tobytes() == value.tobytes()
    reduce = shared.summary["reduce"]
    assert (reduce["algorithm"], reduce["source"], reduce["requested"]) == (
        "shared-update", "given", "shared-update")
    memory = shared.summary["memory"]
    assert memory["node_shared"] and memory["optimizer_state_bytes_per_rank"] == 0
    buffers = {"sgd": 0, "momentum": 1, "adam": 2}[optimizer]
    assert memory["optimizer_state_bytes_per_node"] == buffers * plain.flat.nbytes


# -- under mpiexec -------------------------------------------------------------------------


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def assert_same_bits(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name


@pytest.mark.parametrize("ranks", [2, 3])
def test_cli_same_bits_as_the_slot_sum(tmp_path, ranks):
    runs = {}
    for reduce in ("shm", "shared-update", "mpi"):
        out = tmp_path / reduce
        done = run_train([*CLI, "--reduce", reduce, "--out", str(out)], ranks=ranks,
                         timeout=240)
        assert done.returncode == 0, done.stderr
        runs[reduce] = model_of(out)
    assert_same_bits(runs["shared-update"], runs["shm"])
    for name, value in runs["mpi"].items():  # MPI's sum order may differ: rounding only
        np.testing.assert_allclose(runs["shared-update"][name], value, rtol=1e-12,
                                   atol=1e-13)
    summary = summary_of(tmp_path / "shared-update")
    assert summary["reduce"]["algorithm"] == "shared-update"
    assert summary["memory"]["node_shared"] is True
    assert summary["status"] == "finished"


def test_cli_auto_takes_it_for_a_large_step_message_and_says_so(tmp_path):
    # 64 features x 512 hidden x 3 classes: 34,819 float32 parameters, a 139,292-byte message
    args = ["--data", "synthetic", "--samples", "400", "--features", "64", "--classes",
            "3", "--model", "mlp", "--hidden", "512", "--epochs", "1", "--batch-size", "64"]
    out = tmp_path / "auto"
    done = run_train([*args, "--out", str(out)], ranks=2, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "reduce: shared-update (one copy of the parameters and optimizer state on the " \
        "node" in done.stdout
    assert "by --reduce auto" in done.stdout
    reduce = summary_of(out)["reduce"]
    assert (reduce["requested"], reduce["algorithm"], reduce["source"]) == (
        "auto", "shared-update", "rule")
    assert reduce["message_bytes"] == 139_292
    off = tmp_path / "off"
    done = run_train([*args, "--no-shared-memory", "--out", str(off)], ranks=2, timeout=240)
    assert done.returncode == 0, done.stderr
    assert summary_of(off)["reduce"]["algorithm"] != "shared-update"
    small = tmp_path / "small"  # the standard-size messages keep their allreduce
    done = run_train([*args[:-6], "--hidden", "16", "--epochs", "1", "--out", str(small)],
                     ranks=2, timeout=240)
    assert done.returncode == 0, done.stderr
    assert summary_of(small)["reduce"]["algorithm"] != "shared-update"


@pytest.mark.parametrize("first,second", [
    (("shared-update", 2), ("ring", 3)),
    (("ring", 3), ("shared-update", 2)),
])
def test_checkpoints_resume_across_reductions_and_rank_counts(tmp_path, first, second):
    """Stopped by SIGTERM (rank 0, step 22 of 40) on one reduction and rank count, resumed on
    the other: the uninterrupted model up to rounding (float64)."""
    (reduce, ranks), (then, then_ranks) = first, second
    whole = tmp_path / "whole"
    done = run_train([*CLI, "--reduce", "shared-update", "--out", str(whole)], ranks=2,
                     timeout=240)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "run"
    stopped = run_mpi([CHAOS, "train", *CLI, "--reduce", reduce, "--checkpoint-every", "1",
                       "--out", str(out)], ranks=ranks, timeout=240,
                      env={"CHAOS_SIGNAL": "0:22:TERM"})
    assert stopped.returncode == 75, stopped.stderr
    assert [index for index, _ in list_checkpoints(out / "checkpoints")][-1] == 23
    resumed = run_train([*CLI, "--reduce", then, "--out", str(out), "--resume"],
                        ranks=then_ranks, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    summary = summary_of(out)
    assert summary["status"] == "finished" and summary["reduce"]["algorithm"] == then
    got, want = model_of(out), model_of(whole)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12,
                                   err_msg=name)


def test_stop_and_resume_on_it_is_bit_identical(tmp_path):
    whole = tmp_path / "whole"
    done = run_train([*CLI, "--reduce", "shared-update", "--out", str(whole)], ranks=3,
                     timeout=240)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "run"
    stopped = run_mpi([CHAOS, "train", *CLI, "--reduce", "shared-update",
                       "--checkpoint-every", "1", "--out", str(out)], ranks=3, timeout=240,
                      env={"CHAOS_SIGNAL": "2:13:USR1"})
    assert stopped.returncode == 75, stopped.stderr
    resumed = run_train([*CLI, "--reduce", "shared-update", "--out", str(out), "--resume"],
                        ranks=3, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_bits(model_of(out), model_of(whole))


def test_a_rank_that_raises_mid_step_ends_the_job_with_its_rank_named(tmp_path):
    started = time.monotonic()
    done = run_mpi([CHAOS, "train", *CLI, "--epochs", "1000", "--reduce", "shared-update"],
                   ranks=3, timeout=120, env={"CHAOS_RAISE": "1:7"})
    assert time.monotonic() - started < 90
    assert done.returncode != 0
    assert "mpitrain: rank 1 of 3: unexpected error:" in done.stderr, done.stderr
    assert "RuntimeError: chaos: rank 1 fails in unit 7" in done.stderr


def test_stragglers_and_evaluation_keep_working(tmp_path):
    out = tmp_path / "slow"
    done = run_train([*CLI, "--reduce", "shared-update", "--straggler", "1:3",
                      "--out", str(out)], ranks=2, timeout=240)
    assert done.returncode == 0, done.stderr
    plain = tmp_path / "plain"
    done = run_train([*CLI, "--reduce", "shm", "--out", str(plain)], ranks=2, timeout=240)
    assert done.returncode == 0, done.stderr
    assert_same_bits(model_of(out), model_of(plain))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (plain / "metrics.jsonl").read_text().splitlines()]
    keys = ("train_loss", "test_loss", "test_accuracy")
    assert [[m[k] for k in keys] for m in lines] == [[m[k] for k in keys] for m in want]
