"""``mpitrain bench async`` on a tiny workload: it runs every mode with and without a
straggler and writes well-formed JSON (and the PNG), and its own options are checked."""

from __future__ import annotations

import json

import pytest
from cli_runner import run_mpi

from mpitrain.bench.asynchronous import DEFAULT_MODES, verdicts

pytestmark = pytest.mark.timeout(300)

TINY = ["--data", "synthetic", "--samples", "600", "--features", "8", "--classes", "3",
        "--hidden", "16", "--lr", "0.1", "--epochs", "3", "--target", "0.5"]


def test_bench_async_runs_every_mode_and_writes_json_and_png(tmp_path):
    out, png = tmp_path / "results" / "async.json", tmp_path / "results" / "async.png"
    done = run_mpi(["-m", "mpitrain", "bench", "async", *TINY, "--json", str(out), "--plot",
                    str(png)], ranks=3, timeout=240)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert set(doc) == {"ranks", "mpi_library", "mpitrain_version", "cpus", "load_average",
                        "workload", "runs", "verdicts"}
    assert len(doc["load_average"]) == 2 and doc["cpus"] >= 1
    assert doc["ranks"] == 3 and doc["workload"]["straggler"] == "2:3"
    assert [(r["scenario"], r["mode"]) for r in doc["runs"]] == [
        (scenario, mode) for scenario in ("none", "straggler") for mode in DEFAULT_MODES]
    for run in doc["runs"]:
        assert set(run) == {"mode", "scenario", "time_to_target", "epochs_to_target",
                            "final_accuracy", "seconds", "curves"}
        (curve,) = run["curves"]  # one repeat
        assert len(curve) == 3
        times = [point[0] for point in curve]
        assert times == sorted(times) and times[0] > 0
        assert run["seconds"] == times[-1] and run["final_accuracy"] == curve[-1][1]
        reached = [t for t, accuracy in curve if accuracy >= 0.5]
        assert run["time_to_target"] == (reached[0] if reached else None)
        assert run["epochs_to_target"] == (times.index(reached[0]) + 1 if reached else None)
    assert doc["verdicts"] == verdicts(doc["runs"])
    assert set(doc["verdicts"]["floor"]) == set(DEFAULT_MODES)
    assert "# bench async: 3 ranks" in done.stdout and f"wrote {out}" in done.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verdicts_compare_the_best_async_mode_with_sync():
    def row(scenario, mode, seconds, accuracy=0.96):
        return {"scenario": scenario, "mode": mode, "time_to_target": seconds,
                "final_accuracy": accuracy}

    runs = [row("none", "sync", 10.0), row("none", "ssp", 10.5), row("none", "local-sgd", 9.0),
            row("straggler", "sync", 30.0, 0.97), row("straggler", "ssp", 28.0),
            row("straggler", "async-ps", 12.0, 0.965), row("straggler", "gossip", None)]
    got = verdicts(runs)
    assert got["straggler_best_mode"] == "async-ps"
    assert got["straggler_speedup"] == pytest.approx(2.5)
    assert got["straggler_accuracy_gap"] == pytest.approx(0.005)
    assert got["no_straggler_ratio"] == {"ssp": pytest.approx(1.05),
                                         "local-sgd": pytest.approx(0.9)}


@pytest.mark.parametrize("args,message", [
    (["--modes", "sync,fedavg"], "--modes: 'fedavg' is not a mode to compare; choose from "
     "sync, ssp, local-sgd, gossip, async-ps"),
    (["--target", "1.5"], "--target must be in (0, 1] (got 1.5)"),
    (["--straggler-factor", "0.5"], "--straggler-factor must be >= 1 (got 0.5)"),
    (["--straggler-rank", "5"], "--straggler-rank must be in -2..1 (got 5)"),
])
def test_bad_options_end_with_one_message(args, message):
    done = run_mpi(["-m", "mpitrain", "bench", "async", *TINY, *args], ranks=2, timeout=120)
    assert done.returncode == 2, done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        f"mpitrain: error: {message}"]
