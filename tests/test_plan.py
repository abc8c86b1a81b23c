"""The scaling model (mpitrain.collectives.cost), the cross-node byte counts
(mpitrain.collectives.traffic) and ``python -m mpitrain plan``: formulas against hand
computations, and the command's output well formed."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
from cli_runner import run_mpi

from mpitrain.collectives import cost
from mpitrain.collectives.traffic import cross_node_bytes, node_major

pytestmark = pytest.mark.timeout(300)

LINKS = cost.Links.from_network(gbps=100, latency_us=2, node_latency_us=1,
                                node_gbytes_per_s=20)


def test_links_units():
    assert LINKS.beta_net == 12.5e9 and LINKS.alpha_net == pytest.approx(2e-6)
    assert LINKS.beta_node == 20e9 and LINKS.alpha_node == pytest.approx(1e-6)


def test_ring_and_hierarchical_by_hand():
    n = 1 << 20
    # 4 nodes x 8 ranks: 62 steps of n/32 bytes, each over the network
    assert cost.ring(n, 4, 8, LINKS) == pytest.approx(62 * (2e-6 + n / 32 / 12.5e9))
    # one node: the same ring over the node-local link
    assert cost.ring(n, 1, 8, LINKS) == pytest.approx(14 * (1e-6 + n / 8 / 20e9))
    # 2 barriers + 3n copied, and 2(N-1) steps of n/N bytes over the whole link
    assert cost.hierarchical(n, 4, 8, LINKS) == pytest.approx(
        2e-6 + 3 * n / 20e9 + 6 * (2e-6 + n / 4 / 12.5e9))
    for algorithm in cost.MODELLED:
        assert cost.allreduce_seconds(algorithm, n, 1, 1, LINKS) == 0
    assert math.isinf(cost.shm(n, 2, 4, LINKS))


def test_hierarchical_saves_the_latency_of_the_flat_ring_at_scale():
    """Small messages on many nodes: 2(N-1) latencies instead of 2(P-1)."""
    small = 40_000
    for nodes in (2, 16, 156):
        assert cost.hierarchical(small, nodes, 64, LINKS) < cost.ring(small, nodes, 64, LINKS)
    name, seconds = cost.fastest(small, 16, 64, LINKS)
    assert seconds == min(cost.allreduce_seconds(a, small, 16, 64, LINKS)
                          for a in cost.MODELLED)
    assert name != "ring" and name != "shm"


def test_cross_node_bytes_follow_the_issue_formula():
    """Hierarchical: 2(N-1)/N * n/L from every rank; the flat ring: 2(P-1)/P * n from the
    last rank of each node, nothing from the others."""
    n, itemsize = 1 << 16, 4
    for sizes in ([2, 2], [4, 4, 4], [8] * 4):
        nodes, per_node, size = len(sizes), sizes[0], sum(sizes)
        hier = cross_node_bytes("hierarchical", node_major(sizes), n, itemsize)
        slack = 2 * size * itemsize  # chunks of n/P elements differ by one element
        assert hier == pytest.approx([2 * (nodes - 1) * n * itemsize / (nodes * per_node)]
                                     * size, abs=slack)
        flat = cross_node_bytes("ring", node_major(sizes), n, itemsize)
        for rank, sent in enumerate(flat):
            last = rank % per_node == per_node - 1
            assert sent == pytest.approx(2 * (size - 1) * n * itemsize / size if last else 0,
                                         abs=slack)
    assert cross_node_bytes("hierarchical", [0, 0, 1], 10, 8)[2] == \
        cross_node_bytes("hierarchical", [0, 0, 1], 10, 8)[0] > 0
    assert cross_node_bytes("hierarchical", [0, 0, 1], 10, 8)[1] == 0  # no rail
    assert cross_node_bytes("shm", [0, 0], 10, 8) == [0, 0]
    assert cross_node_bytes("mpi", [0, 1], 10, 8) is None


def plan(tmp_path, *extra: str, ranks: int = 1):
    path = tmp_path / "plan.json"
    done = run_mpi(["-m", "mpitrain", "plan", "--json", str(path), *extra], ranks=ranks,
                   timeout=240)
    return done, path


def test_plan_prints_and_writes_the_documented_json(tmp_path):
    done, path = plan(tmp_path, "--nodes", "8", "--ranks-per-node", "32", "--max-ranks",
                      "1000", "--hidden", "64,32", "--batch", "128", "--link-gbps", "25",
                      "--link-latency-us", "5", "--node-gbytes", "10",
                      "--plot", str(tmp_path / "plan.png"))
    assert done.returncode == 0, done.stderr
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(path.read_text())
    assert set(doc) == {"workload", "compute_seconds", "links", "scenario", "scaling",
                        "communication_dominates_from", "measured"}
    assert doc["workload"]["dims"] == [64, 64, 32, 10]
    assert doc["workload"]["message_bytes"] == 4 * (64 * 64 + 64 + 64 * 32 + 32 + 32 * 10
                                                    + 10 + 4)
    assert doc["compute_seconds"] > 0 and doc["measured"] is None
    assert doc["links"]["beta_net"] == 25e9 / 8
    scenario = doc["scenario"]
    assert (scenario["nodes"], scenario["ranks_per_node"], scenario["ranks"]) == (8, 32, 256)
    assert set(scenario["algorithms"]) == {"ring", "hierarchical", "mpi", "root"}
    for row in scenario["algorithms"].values():
        assert row["step_seconds"] == pytest.approx(doc["compute_seconds"]
                                                    + row["comm_seconds"])
        assert 0 < row["efficiency"] <= 1
    ranks = [row["ranks"] for row in doc["scaling"]]
    assert ranks == [32, 64, 128, 256, 512, 992]
    for row in doc["scaling"]:
        assert row["fastest"] == min(row["seconds"], key=row["seconds"].get)
        assert row["auto"] in ("ring", "hierarchical", "mpi", "root", "shm")
    assert "## scaling, 32 ranks per node" in done.stdout
    assert "fastest by the model" in done.stdout


def test_plan_user_errors(tmp_path):
    for args, message in ((("--nodes", "0"), "--nodes must be >= 1 (got 0)"),
                          (("--link-gbps", "-1"), "--link-gbps must be a positive number"),
                          (("--hidden", "a,b"), "--hidden must be positive integers")):
        done, _ = plan(tmp_path, "--compute-us", "100", *args)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("mpitrain: error:") == 1 and message in done.stderr


def check_validation(measured: dict, sizes: list[int], repeats: int) -> None:
    """The documented ``measured`` block of plan's JSON for a launch on ``sizes``: the
    calibration (host share, compute, links) and, per algorithm, finite predicted and
    measured times and their error (their agreement is for benchmarks, not tests)."""
    assert measured["ranks_per_node"] == sizes
    host = measured["host"]
    assert set(host) == {"hosts", "ranks_on_host", "cores", "oversubscription",
                         "load_average", "modelled_time_sharing"}
    assert host["ranks_on_host"] == sum(sizes) and host["hosts"] == 1  # one machine
    assert host["oversubscription"] == pytest.approx(sum(sizes) / host["cores"])
    assert host["modelled_time_sharing"] == max(1.0, host["oversubscription"])
    for calibration in [measured, *measured["calibrations"]]:  # medians, each round
        compute = calibration["compute"]
        assert compute["alone_seconds"] > 0 and compute["together_seconds"] > 0
        assert all(math.isfinite(v) and v > 0 for v in calibration["links"].values())
    for calibration in measured["calibrations"]:
        compute = calibration["compute"]
        assert compute["time_sharing"] == pytest.approx(compute["together_seconds"]
                                                        / compute["alone_seconds"])
    expected = ({"ring", "hierarchical", "mpi", "root"} if sum(sizes) > 1 else {"auto"}) | (
        {"shm"} if len(sizes) == 1 and sum(sizes) > 1 else set())
    assert set(measured["algorithms"]) == expected
    for row in measured["algorithms"].values():
        for key in ("predicted_step_seconds", "measured_step_seconds", "ratio"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert row["error"] == pytest.approx(row["ratio"] - 1)
        runs = row["measured_step_runs"]
        assert len(runs) == repeats and row["measured_step_seconds"] in runs
        assert row["spread"] == pytest.approx(max(runs) / min(runs) - 1)
        assert len(row["predicted_step_runs"]) == repeats
        if sum(sizes) > 1:
            assert row["measured_allreduce_seconds"] > 0 and row["comm_ratio"] > 0
    assert len(measured["calibrations"]) == repeats


@pytest.mark.parametrize("ranks", [1, 2])
def test_plan_measure_on_this_launch(tmp_path, ranks):
    """--measure under mpiexec (one node): calibrated, predicted and measured for every
    algorithm that runs there, the documented JSON and the table."""
    done, path = plan(tmp_path, "--nodes", "2", "--ranks-per-node", "2", "--max-ranks", "8",
                      "--hidden", "16", "--batch", "32", "--measure", "--measure-steps",
                      "5", "--measure-repeats", "3", "--compute-us", "200",
                      "--plot", str(tmp_path / "check.png"), ranks=ranks)
    assert done.returncode == 0, done.stderr
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_validation(json.loads(path.read_text())["measured"], [ranks], 3)
    assert f"## validation on this launch (1x{ranks})" in done.stdout
    assert "# calibrated: compute" in done.stdout
