"""``mpitrain bench train`` on tiny sizes (JSON fields and sane values), the peer scripts'
clean skip, and the --overlap / --compress / shared-memory paths against the plain path."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_runner import ROOT, run_mpi
from mpi4py import MPI

from mpitrain import __version__
from mpitrain.cli import build_parser

pytestmark = pytest.mark.timeout(240)

TOP = {"ranks", "mpi_library", "mpitrain_version", "workload", "throughput", "step",
       "accuracy", "kernels", "startup", "memory"}
FIELDS = {
    "workload": {"model", "dims", "samples", "train_rows", "features", "classes",
                 "rows_per_rank", "global_batch", "epochs", "lr", "dtype", "shuffle", "reduce",
                 "compress", "overlap", "shared_memory", "optimizer", "shard",
                 "tensor_parallel", "repeats"},
    "throughput": {"samples_per_second", "samples_per_second_per_rank",
                   "reference_samples_per_second", "speedup", "weak_scaling_efficiency",
                   "runs", "reference_runs"},
    "step": {"steps", "step_seconds", "compute_seconds", "comm_seconds", "comm_fraction",
             "kernel_seconds", "loop_overhead_seconds"},
    "accuracy": {"test_accuracy", "reference_test_accuracy", "train_loss"},
    "startup": {"launch_to_first_step_s", "process_start_to_first_step_s", "launcher",
                "kernels_compiled"},
    "memory": {"rss_mb_per_epoch", "rss_growth_after_first_epoch_mb", "window_steps",
               "traced_peak_bytes", "traced_net_bytes", "kernel_allocations",
               "allocation_free", "shard", "parameter_bytes", "optimizer_state_bytes_per_rank",
               "optimizer_state_bytes_unsharded", "optimizer_state_fraction",
               "gradient_message_bytes", "reduced_gradient_bytes_per_rank"},
}
TINY = ["--samples", "3000", "--features", "8", "--classes", "3", "--hidden", "16",
        "--rows-per-rank", "32", "--epochs", "2", "--repeats", "2", "--kernel-steps", "20"]


def assert_rounded_ratio(ratio: float, numerator: int, denominator: int,
                         factor: int = 1) -> None:
    """``ratio`` is round(n / (factor * d), 3) of the n and d that the JSON shows rounded to
    integers: equal within those roundings, however fast the machine. (A relative
    tolerance fails for small ratios: on a loaded machine a speedup of 0.089 gave a weak-
    scaling efficiency of round(0.0445, 3) = 0.045, 1.1% off.)"""
    low = (numerator - 0.5) / (factor * (denominator + 0.5))
    high = (numerator + 0.5) / (factor * (denominator - 0.5))
    assert low - 5e-4 - 1e-12 <= ratio <= high + 5e-4 + 1e-12, (ratio, numerator, denominator)


def run_bench(tmp_path, *extra: str, ranks: int = 2) -> dict:
    """The JSON of one bench run, plus ``seconds``: the wall time of the whole job."""
    out = tmp_path / "bench-results" / "train.json"  # a directory that does not exist yet
    started = time.monotonic()  # before mpiexec starts
    done = run_mpi(["-m", "mpitrain", "bench", "train", *TINY, *extra, "--json", str(out)],
                   ranks=ranks, timeout=180)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "weak-scaling efficiency" in done.stdout or ranks == 1
    return {**json.loads(out.read_text()), "seconds": seconds}


def test_bench_train_json_has_the_documented_fields(tmp_path):
    doc = run_bench(tmp_path)
    seconds = doc.pop("seconds")
    assert set(doc) == TOP
    for section, names in FIELDS.items():
        assert set(doc[section]) == names, section
    assert doc["ranks"] == 2 and doc["mpitrain_version"] == __version__
    assert doc["mpi_library"].strip()
    w, t, s = doc["workload"], doc["throughput"], doc["step"]
    assert w["dims"] == [8, 16, 3] and w["global_batch"] == 64 and w["train_rows"] == 2400
    assert len(t["runs"]) == len(t["reference_runs"]) == 2
    assert t["samples_per_second"] > 0 and t["reference_samples_per_second"] > 0
    sps, ref = t["samples_per_second"], t["reference_samples_per_second"]
    assert_rounded_ratio(t["speedup"], sps, ref)
    assert_rounded_ratio(t["weak_scaling_efficiency"], sps, ref, factor=2)
    assert s["steps"] == 2 * math.ceil(2400 / 64)
    # two ranks: every step spends time computing and in the collective
    assert s["compute_seconds"] > 0 and s["comm_seconds"] > 0 and s["kernel_seconds"] > 0
    assert s["step_seconds"] > 0
    assert s["comm_fraction"] == round(s["comm_seconds"] / s["step_seconds"], 4)
    assert s["loop_overhead_seconds"] == pytest.approx(
        s["compute_seconds"] - s["kernel_seconds"], rel=1e-12, abs=1e-15)
    assert 0.3 < doc["accuracy"]["test_accuracy"] <= 1
    assert [k["model"] for k in doc["kernels"]] == ["softmax", "mlp"]
    for k in doc["kernels"]:
        assert_rounded_ratio(k["speedup"], k["numba_samples_per_second"],
                             k["numpy_samples_per_second"])
    start = doc["startup"]
    # within the job: the launcher starts after `started` in run_bench, the first step
    # comes before the job's end
    assert (0 < start["process_start_to_first_step_s"] <= start["launch_to_first_step_s"]
            < seconds)
    assert type(start["kernels_compiled"]) is int  # a count (see the warm-cache test)
    m = doc["memory"]
    assert len(m["rss_mb_per_epoch"]) == 2 and min(m["rss_mb_per_epoch"]) > 10
    assert m["window_steps"] > 0 and m["kernel_allocations"] == 0
    assert m["allocation_free"] is True, m


def test_bench_train_counts_no_compilation_on_a_warm_cache(tmp_path):
    """``kernels_compiled`` is 0 when numba's cache holds every kernel: the second of two
    identical runs (the first fills the cache if need be)."""
    run_bench(tmp_path / "first", ranks=1)
    assert run_bench(tmp_path / "second", ranks=1)["startup"]["kernels_compiled"] == 0


def test_bench_train_one_rank_with_options(tmp_path):
    doc = run_bench(tmp_path, "--model", "softmax", "--compress", "bf16", "--no-shared-memory",
                    ranks=1)
    assert doc["ranks"] == 1 and doc["workload"]["compress"] == "bf16"
    assert doc["workload"]["dims"] == [8, 3]
    assert doc["throughput"]["weak_scaling_efficiency"] == pytest.approx(1.0)


def test_bench_train_reports_the_sharded_optimizer_state(tmp_path):
    """--shard optimizer with Adam on 2 ranks: the state of the larger slice, ~1/2 of the
    unsharded 2 x parameters (dims 8-16-3: 195 parameters, slices of 98 and 97)."""
    doc = run_bench(tmp_path, "--optimizer", "adam", "--lr", "0.01", "--shard", "optimizer")
    m = doc["memory"]
    assert doc["workload"]["shard"] == "optimizer" and m["shard"] == "optimizer"
    assert m["parameter_bytes"] == 195 * 4
    assert m["optimizer_state_bytes_unsharded"] == 2 * 195 * 4
    assert m["optimizer_state_bytes_per_rank"] == 2 * 98 * 4
    assert m["optimizer_state_fraction"] == pytest.approx(98 / 195)


def test_bench_train_rejects_bad_options(tmp_path):
    done = run_mpi(["-m", "mpitrain", "bench", "train", "--repeats", "0"], ranks=2, timeout=60)
    assert done.returncode == 2
    assert "--repeats must be >= 1 (got 0)" in done.stderr


@pytest.mark.parametrize("argv,message", [
    (["--samples", "1"], "--samples must be >= 2 (got 1)"),
    (["--lr", "0"], "--lr must be a positive number (got 0.0)"),
    (["--compress", "fp16", "--dtype", "float64"],
     "--compress fp16 needs --dtype float32 (got float64)"),
])
def test_bench_train_checks_config_options_as_train_does(argv, message):
    """The options shared with `mpitrain train` fail with the config's own messages."""
    done = run_mpi(["-m", "mpitrain", "bench", "train", *argv], ranks=2, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("error:") == 1


def options(*command: str) -> dict[str, argparse.Action]:
    """The flags of an mpitrain (sub)command, by destination."""
    parser: argparse.ArgumentParser = build_parser()
    for name in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return {action.dest: action for action in parser._actions if action.option_strings}


def test_bench_train_defaults_are_the_standard_workload():
    args = build_parser().parse_args(["bench", "train"])
    assert (args.samples, args.features, args.classes, args.epochs, args.shuffle) == (
        200_000, 64, 10, 2, "local")
    assert (args.model, args.hidden, args.optimizer, args.lr, args.dtype, args.reduce,
            args.compress, args.overlap, args.shared_memory, args.seed) == (
        "mlp", (128,), "sgd", 0.1, "float32", "auto", "none", False, True, 0)
    assert (args.rows_per_rank, args.repeats, args.kernel_steps, args.json) == (
        256, 3, 300, None)
    assert build_parser().parse_args(["bench", "train", "--hidden", "64,32"]).hidden == (64, 32)


def test_bench_train_reports_the_tensor_parallel_parameters(tmp_path):
    """--tensor-parallel 2 on 2 ranks: each rank holds 8 of the 16 hidden units (W0, b0,
    W1) and the output bias; the 1-rank reference runs the whole model."""
    doc = run_bench(tmp_path, "--tensor-parallel", "2")
    m = doc["memory"]
    assert doc["workload"]["tensor_parallel"] == m["tensor_parallel"] == 2
    assert m["split_layer_bytes"] == m["parameter_bytes"] == 195 * 4
    assert m["parameter_bytes_per_rank"] == (8 * 8 + 8 + 8 * 3 + 3) * 4
    assert len(doc["throughput"]["reference_runs"]) == 2
    assert m["allocation_free"] is True, m


def test_bench_train_flags_are_the_train_flags():
    """Same spelling, choices and metavar as `mpitrain train`: a choice added to the config
    appears in both."""
    train_flags, bench_flags = options("train"), options("bench", "train")
    shared = set(train_flags) & set(bench_flags) - {"help"}
    assert shared == {"samples", "features", "classes", "dtype", "model", "hidden", "seed",
                      "epochs", "lr", "optimizer", "shuffle", "reduce", "compress",
                      "overlap", "shard", "tensor_parallel", "shared_memory"}
    for dest in shared:
        ours, theirs = bench_flags[dest], train_flags[dest]
        assert ours.option_strings == theirs.option_strings, dest
        assert ours.choices == theirs.choices and ours.metavar == theirs.metavar, dest


@pytest.mark.parametrize("script", ["torch_ddp.py", "horovod_mlp.py"])
def test_peer_scripts_skip_cleanly_without_their_framework(script):
    """The test environment has no torch/Horovod: exit 0 with one 'skipped' line."""
    pytest.importorskip("numpy")
    try:
        import torch  # noqa: F401
        pytest.skip("torch is installed here: the skip path cannot be exercised")
    except ImportError:
        pass
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peers" / script),
                           "--epochs", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "skipped:" in done.stdout and "not installed" in done.stdout


def test_peer_compare_runs_a_model_size_with_every_framework_getting_the_same_options():
    """compare.py on a tiny two-layer point: mpitrain trains it under the launcher, the peers
    (no torch here) print why they were skipped, the table names the workload (no timing)."""
    try:
        import torch  # noqa: F401
        pytest.skip("torch is installed here: the peers would run, not skip")
    except ImportError:
        pass
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peers" / "compare.py"),
                           "--ranks", "2", "--repeats", "1", "--epochs", "1",
                           "--samples", "400", "--features", "12", "--hidden", "16,8",
                           "--classes", "3", "--rows-per-rank", "8", "--dtype", "float64",
                           "--peer-python", sys.executable, "--timeout", "240"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "torch_ddp: skipped: PyTorch is not installed" in done.stdout
    assert "horovod: skipped: PyTorch is not installed" in done.stdout
    assert ("# MLP 12-16-8-3 float64, 8 rows/rank/step, 400 samples, momentum 0.9 lr 0.1, "
            "2 ranks, 1 epochs") in done.stdout
    row = next(line.split() for line in done.stdout.splitlines()
               if line.startswith("mpitrain "))
    assert float(row[1].replace(",", "")) > 0 and 0.0 <= float(row[3]) <= 1.0


def test_peer_workload_options_round_trip_to_the_peer_scripts():
    """What compare.py passes to a peer script parses back to the same workload."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))
    try:
        import common
    finally:
        sys.path.remove(str(ROOT / "benchmarks" / "peers"))
    p = common.parser("peer", "test")
    default = p.parse_args([])
    assert (default.features, default.hidden, default.rows_per_rank, default.dtype,
            default.optimizer, default.momentum) == (64, (128,), 256, "float32",
                                                    "momentum", 0.9)
    large = p.parse_args(["--features", "784", "--hidden", "1024,512", "--rows-per-rank",
                          "128", "--optimizer", "sgd"])
    again = p.parse_args(common.workload_argv(large))
    assert vars(again) == vars(large)
    assert common.describe(large).startswith("MLP 784-1024-512-10 float32, 128 rows/rank/step")
    with pytest.raises(SystemExit):
        p.parse_args(["--hidden", "0,4"])


def test_peer_setup_script_needs_a_directory():
    """The Horovod build script stops before doing anything without its argument."""
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "peers" / "setup-peers.sh")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "usage: setup-peers.sh VENV_DIR" in done.stderr


# ------------------------------------------------------------------------------------------
# MPI (in-process, `make test` under 2, 3 and 4 ranks): same results as the plain path.

from mpitrain import train  # noqa: E402

BASE = dict(data="synthetic", samples=700, features=6, classes=3, noise=2.0, model="mlp",
            hidden=(12, 8), shuffle="global", epochs=2, batch_size=48, lr=0.2,
            optimizer="sgd", quiet=True)  # the transports' tolerances are SGD's


def same_on_every_rank(flat: np.ndarray) -> None:
    comm = MPI.COMM_WORLD
    gathered = np.empty((comm.Get_size(), flat.size), dtype=flat.dtype)
    comm.Allgather(flat, gathered)
    assert (gathered == gathered[0]).all()


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("algorithm", ["ring", "mpi", "root", "auto"])
def test_overlap_gives_the_plain_result(algorithm):
    plain = train(reduce=algorithm, dtype="float64", **BASE)
    overlapped = train(reduce=algorithm, dtype="float64", overlap=True, **BASE)
    # Buckets change only which elements a ring step sums together: rounding-level.
    np.testing.assert_allclose(overlapped.flat, plain.flat, rtol=1e-10, atol=1e-13)
    same_on_every_rank(overlapped.flat)
    assert overlapped.history[-1]["train_loss"] == pytest.approx(
        plain.history[-1]["train_loss"], rel=1e-10)


@pytest.mark.mpi(min_size=2)
def test_shared_memory_reduction_gives_the_allreduce_result():
    shm = train(reduce="auto", shared_memory=True, dtype="float64", **BASE)
    mpi = train(reduce="mpi", dtype="float64", **BASE)
    np.testing.assert_allclose(shm.flat, mpi.flat, rtol=1e-10, atol=1e-13)
    same_on_every_rank(shm.flat)
    if MPI.COMM_WORLD.Get_size() == 2:  # a + b either way round: bitwise
        assert np.array_equal(shm.flat, mpi.flat)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("codec,tolerance", [("fp16", 2e-3), ("bf16", 2e-2)])
def test_compressed_training_stays_close_to_the_plain_path(codec, tolerance):
    plain = train(dtype="float32", **BASE)
    packed = train(dtype="float32", compress=codec, **BASE)
    same_on_every_rank(packed.flat)
    difference = np.linalg.norm(packed.flat - plain.flat) / np.linalg.norm(plain.flat)
    assert difference < tolerance
    # counts travel exactly: the same number of samples per epoch
    assert [h["samples_per_second"] * h["seconds"] for h in packed.history] == pytest.approx(
        [h["samples_per_second"] * h["seconds"] for h in plain.history])
    assert abs(packed.history[-1]["test_accuracy"] - plain.history[-1]["test_accuracy"]) <= 0.02
