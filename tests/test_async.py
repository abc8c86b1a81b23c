"""Asynchronous modes (issue 14): their parts (straggler option, seeded schedules,
staleness), option errors, and end to end under mpiexec like users: stop and resume of
every mode (exact where the mode is), a failing worker or server ending the job with its
rank named, and ``bench async``.

The exact special cases and the accuracy floor run under ``--with-mpi`` in
tests/test_async_mpi.py.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_train
from test_reliability import BASE, chaos, error_lines, model_arrays

from mpitrain.asynchronous import straggler as straggler_module
from mpitrain.asynchronous.schedule import PushOrder, gossip_partners
from mpitrain.asynchronous.staleness import Staleness
from mpitrain.asynchronous.straggler import Straggler, StragglerSpec, parse_stragglers
from mpitrain.checkpoint.store import list_checkpoints, load_checkpoint
from mpitrain.config import resolve
from mpitrain.errors import UserError

pytestmark = pytest.mark.timeout(300)

# 480 training rows / 64 = 8 steps per epoch; Adam and a cosine schedule, so a resume that
# lost optimizer state, the step count or a pending gradient would not be bit-identical.
# (BASE and the helpers are the reliability tests'.)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


# ---------------------------------------------------------------- parts


def test_parse_stragglers():
    assert parse_stragglers("") == ()
    assert parse_stragglers("1:3") == (StragglerSpec(1, 3.0, 0.0),)
    assert parse_stragglers("1:3:0.5, 0:2") == (StragglerSpec(1, 3.0, 0.5),
                                                StragglerSpec(0, 2.0, 0.0))
    for bad in ("1", "1:x", "-1:3", "1:0.5", "1:3:2", "1:3:0.1:4", "a:3"):
        with pytest.raises(UserError, match=r"--straggler expects RANK:FACTOR or "
                           r"RANK:FACTOR:JITTER .* \(got '" + bad.split(",")[0]):
            parse_stragglers(bad)
    with pytest.raises(UserError, match="names rank 1 twice"):
        parse_stragglers("1:2,1:3")


def test_straggler_sleeps_factor_minus_one_times_its_compute(monkeypatch):
    slept: list[float] = []
    clock = iter([10.0, 10.5, 20.0, 20.25])
    monkeypatch.setattr(straggler_module.time, "sleep", slept.append)
    monkeypatch.setattr(straggler_module.time, "perf_counter", lambda: next(clock))
    slow = Straggler.for_rank("1:3", rank=1, seed=0)
    slow.slow_down(next(clock))  # 0.5 s of compute → 1.0 s of sleep
    slow.slow_down(next(clock))
    assert slept == [1.0, 0.5] and slow.slept == 1.5
    fast = Straggler.for_rank("1:3", rank=0, seed=0)
    assert not fast.active
    fast.slow_down(0.0)
    assert slept == [1.0, 0.5]


def test_straggler_jitter_is_seeded_and_bounded(monkeypatch):
    def pauses(seed: int) -> list[float]:
        slept: list[float] = []
        monkeypatch.setattr(straggler_module.time, "sleep", slept.append)
        monkeypatch.setattr(straggler_module.time, "perf_counter", lambda: 1.0)
        slow = Straggler.for_rank("0:3:0.5", rank=0, seed=seed)
        for _ in range(200):
            slow.slow_down(0.0)  # 1 s of compute each time
        return slept

    first = pauses(7)
    assert first == pauses(7) and first != pauses(8)
    assert 1.0 <= min(first) and max(first) <= 3.0  # 2 s +- 50 %
    assert abs(np.mean(first) - 2.0) < 0.1


@pytest.mark.parametrize("ranks", [2, 3, 4, 7])
def test_gossip_partners_are_a_seeded_matching(ranks):
    partner = gossip_partners(seed=3, epoch=1, step=5, ranks=ranks)
    assert (partner >= 0).sum() == ranks - ranks % 2
    for rank, other in enumerate(partner):
        if other >= 0:
            assert other != rank and partner[other] == rank
    np.testing.assert_array_equal(partner, gossip_partners(seed=3, epoch=1, step=5,
                                                           ranks=ranks))
    differs = [not np.array_equal(partner, gossip_partners(seed=3, epoch=1, step=s,
                                                           ranks=ranks))
               for s in range(6, 20)]
    assert any(differs) or ranks == 2


def test_push_order_is_seeded_and_follows_speeds():
    order = PushOrder(seed=1, epoch=0, speeds=[1.0, 1.0, 1 / 3])
    drawn = [next(order) for _ in range(7000)]
    again = PushOrder(seed=1, epoch=0, speeds=[1.0, 1.0, 1 / 3])
    assert drawn == [next(again) for _ in range(7000)]
    counts = np.bincount(drawn, minlength=3) / 7000
    np.testing.assert_allclose(counts, [3 / 7, 3 / 7, 1 / 7], atol=0.02)


def test_staleness_sums():
    stale = Staleness()
    for value in (0, 1, 2, 5):
        stale.add(value)
    stale.merge(10.0, 2.0, 7.0)
    assert stale.take() == {"staleness_mean": 18 / 6, "staleness_max": 7}
    assert stale.take() == {"staleness_mean": 0.0, "staleness_max": 0}


@pytest.mark.parametrize("options,message", [
    ({"mode": "async-ps", "servers": 0}, "--servers must be >= 1 (got 0)"),
    ({"mode": "ssp", "staleness": -1}, "--staleness must be >= 0 (got -1)"),
    ({"mode": "local-sgd", "sync_every": 0}, "--sync-every must be >= 1 (got 0)"),
    ({"mode": "local-sgd", "local_after": -2}, "--local-after must be >= 0 (got -2)"),
    ({"mode": "sync", "servers": 2}, "--servers 2 applies to --mode async-ps (got --mode "
     "sync)"),
    ({"mode": "gossip", "staleness": 3}, "--staleness 3 applies to --mode ssp (got --mode "
     "gossip)"),
    ({"mode": "ssp", "sync_every": 2}, "--sync-every 2 applies to --mode local-sgd (got "
     "--mode ssp)"),
    ({"mode": "fedavg", "straggler": "1:3"}, "--straggler 1:3 applies to --mode sync, ssp, "
     "local-sgd, gossip, async-ps (got --mode fedavg)"),
    ({"mode": "sync", "simulate_schedule": True}, "--simulate-schedule applies to --mode "
     "async-ps (got --mode sync)"),
    ({"mode": "ssp", "staleness": 2, "reduce": "hierarchical"}, "--mode ssp --staleness 2 "
     "starts nonblocking reductions, which --reduce hierarchical does not have"),
])
def test_option_errors(options, message):
    with pytest.raises(UserError) as info:
        resolve({}, options)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("args,ranks,message", [
    (["--mode", "async-ps", "--servers", "2"], 2,
     "--servers 2 leaves no worker: the job has 2 ranks (use --servers <= 1 or more ranks)"),
    (["--mode", "ssp", "--straggler", "2:3"], 2,
     "--straggler names rank 2 but the job has 2 ranks (0..1)"),
    (["--mode", "async"], 2,
     "argument --mode: invalid choice: 'async' (choose from 'sync', "
     "'fedavg', 'ssp', 'local-sgd', 'gossip', 'async-ps')"),
])
def test_errors_end_the_job_with_one_message(args, ranks, message):
    done = run_train([*BASE, *args], ranks=ranks)
    assert done.returncode == 2, done.stderr
    assert error_lines(done) == [f"mpitrain: error: {message}"]


# ---------------------------------------------------------------- stop and resume


@pytest.mark.parametrize("mode", [
    ["--mode", "ssp", "--staleness", "2"],
    ["--mode", "local-sgd", "--sync-every", "3"],
    ["--mode", "local-sgd", "--sync-every", "2", "--local-after", "2"],
])
def test_exact_modes_stop_and_resume_bit_identical(tmp_path, mode):
    """SIGTERM at step 20 (epoch 3): every rank stops at the same step, a checkpoint holds
    the state (ssp: the reduced gradients not applied yet), --resume finishes with exactly
    the uninterrupted model."""
    args = [*BASE, *mode]
    whole = tmp_path / "whole"
    done = run_train([*args, "--out", str(whole)], ranks=2)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "run"
    stopped = chaos([*args, "--out", str(out)], env={"CHAOS_SIGNAL": "1:20:TERM"})
    assert stopped.returncode == 75, stopped.stderr
    assert summary(out)["status"] == "stopped"
    stopped_at = list_checkpoints(out / "checkpoints")[-1][0]
    assert 20 < stopped_at < 48
    resumed = run_train([*args, "--out", str(out), "--resume"], ranks=2)
    assert resumed.returncode == 0, resumed.stderr
    assert summary(out)["status"] == "finished"
    assert [m["epoch"] for m in metrics(out)] == [1, 2, 3, 4, 5, 6]
    assert metrics(out) and all("staleness_mean" in m for m in metrics(out))
    got, want = model_arrays(out), model_arrays(whole)
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name


@pytest.mark.parametrize("mode,ranks,signal", [
    (["--mode", "gossip"], 3, "2:20:USR1"),
    (["--mode", "async-ps", "--servers", "1"], 3, "2:2:TERM"),  # a worker, epoch 3
    (["--mode", "async-ps", "--servers", "2", "--simulate-schedule"], 4, "0:1:TERM"),
])
def test_async_modes_stop_resume_and_converge(tmp_path, mode, ranks, signal):
    """Not bit-reproducible (a stop averages the gossip models / ends the servers' epoch
    early): the stopped run checkpoints, resumes on the same and on another number of ranks,
    and reaches the accuracy of an uninterrupted run."""
    import shutil

    args = [*BASE, "--epochs", "8", *mode]
    whole = tmp_path / "whole"
    done = run_train([*args, "--out", str(whole)], ranks=ranks)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "run"
    stopped = chaos([*args, "--out", str(out)], ranks=ranks,
                    env={"CHAOS_SIGNAL": signal})
    assert stopped.returncode == 75, stopped.stderr
    assert summary(out)["status"] == "stopped"
    checkpoint = load_checkpoint(list_checkpoints(out / "checkpoints")[-1][1])
    assert {"params", "optimizer.m", "optimizer.v"} <= set(checkpoint.arrays)
    elastic = tmp_path / "elastic"
    shutil.copytree(out, elastic)
    want = metrics(whole)[-1]["test_accuracy"]
    for directory, count in ((out, ranks), (elastic, ranks + 1)):
        resumed = run_train([*args, "--out", str(directory), "--resume"], ranks=count)
        assert resumed.returncode == 0, resumed.stderr
        assert summary(directory)["status"] == "finished"
        assert [m["epoch"] for m in metrics(directory)] == list(range(1, 9))
        assert metrics(directory)[-1]["test_accuracy"] >= want - 0.05


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("mode,rank", [
    (["--mode", "async-ps"], 2),  # a worker
    (["--mode", "async-ps"], 0),  # the server
    (["--mode", "gossip"], 1),
    (["--mode", "ssp", "--staleness", "3"], 1),
])
def test_a_rank_that_raises_ends_the_job_with_its_rank_named(tmp_path, mode, rank):
    started = time.monotonic()
    done = chaos([*BASE, "--epochs", "1000", *mode], ranks=3, timeout=90,
                 env={"CHAOS_RAISE": f"{rank}:3"})
    assert time.monotonic() - started < 60
    assert done.returncode != 0
    assert (f"mpitrain: rank {rank} of 3: unexpected error:" in done.stderr), done.stderr
    assert f"RuntimeError: chaos: rank {rank} fails in unit 3" in done.stderr


@pytest.mark.parametrize("mode", [["--mode", "async-ps"], ["--mode", "gossip"],
                                  ["--mode", "local-sgd"]])
def test_stall_timeout_names_the_stalled_rank(tmp_path, mode):
    """Rank 2 sleeps 600 s after its work of unit 3: the others report it after
    --stall-timeout and abort the job (exit 124), as with sync. (Gossip ranks only wait
    for their partner and the stop vote of a few steps back, so they may stall a few
    units later.)"""
    pids = tmp_path / "pids"
    done = chaos([*BASE, "--epochs", "1000", "--stall-timeout", "3", *mode], ranks=3,
                 timeout=90, env={"CHAOS_PIDS": str(pids), "CHAOS_STALL": "2:3:600"})
    ended = time.time()
    stalled_at = float((pids / "stall-2.time").read_text())
    assert done.returncode == 124, done.stderr
    assert 3 <= ended - stalled_at < 30, ended - stalled_at
    assert re.search(r"mpitrain: stall: rank\(s\) 2 did not reach the collective of unit "
                     r"(\d+) \(period \d+\) within 3 s", done.stderr), done.stderr
    assert done.stderr.count("mpitrain: stall:") == 1, done.stderr


def test_progress_line_shows_staleness():
    from mpitrain.runtime.progress import progress_line

    line = progress_line({"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.9,
                          "staleness_mean": 1.5, "staleness_max": 3, "seconds": 0.25},
                         unit="epoch", total=4)
    assert line == ("epoch 2/4  train loss 0.5000 acc 0.9000  staleness mean 1.50 max 3  "
                    "0.25s")
