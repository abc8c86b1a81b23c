"""mpitrain.bench.allreduce on tiny sizes: the JSON has the documented fields and sane values."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from mpi4py import MPI

from mpitrain import __version__
from mpitrain.bench import allreduce as bench
from mpitrain.collectives import context
from mpitrain.errors import UserError

pytestmark = pytest.mark.timeout(120)

FIELDS = {"algorithm", "dtype", "bytes", "elements", "iterations", "latency_us",
          "algbw_GBps", "busbw_GBps", "memcpy_GBps", "resolved", "cross_node_bytes",
          "cross_node_bytes_mean"}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def run_and_load(comm: MPI.Comm, directory: str, *extra: str) -> dict:
    path = str(Path(directory) / "allreduce.json")
    args = parse("--min-bytes", "4", "--max-bytes", "4K", "--iterations", "3",
                 "--warmup", "1", "--json", path, *extra)
    assert bench.run(args, comm) == 0
    comm.Barrier()
    return json.loads(Path(path).read_text())


def check_document(document: dict, ranks: int, buffer: str = "private",
                   algorithms: frozenset[str] = frozenset(bench.ALGORITHMS)) -> None:
    assert document["ranks"] == ranks
    assert document["buffer"] == buffer
    assert document["mpitrain_version"] == __version__
    assert document["mpi_library"].strip()
    sizes = document["ranks_per_node"]
    assert sum(sizes) == ranks and document["layout"] in (f"{len(sizes)}x{sizes[0]}",
                                                          "+".join(map(str, sizes)))
    nodes, slices = len(sizes), min(sizes)
    results = document["results"]
    expected_rows = len(algorithms) * (11 + 10)  # 4..4K for float32, 8..4K for float64
    assert len(results) == expected_rows
    for row in results:
        assert set(row) == FIELDS
        assert row["algorithm"] in algorithms
        itemsize = {"float32": 4, "float64": 8}[row["dtype"]]
        assert row["elements"] * itemsize == row["bytes"]
        assert row["bytes"] & (row["bytes"] - 1) == 0 and 4 <= row["bytes"] <= 4096
        assert row["iterations"] == 3
        assert 0 < row["latency_us"] < 1e6
        assert row["algbw_GBps"] == pytest.approx(row["bytes"] / row["latency_us"] / 1e3)
        factor = 2 * (ranks - 1) / ranks
        assert row["busbw_GBps"] == pytest.approx(row["algbw_GBps"] * factor)
        assert row["memcpy_GBps"] > 0
        assert row["resolved"] in bench.ALGORITHMS and row["resolved"] != "auto"
        assert (row["algorithm"] == "auto") or row["resolved"] == row["algorithm"]
        across, mean = row["cross_node_bytes"], row["cross_node_bytes_mean"]
        if row["resolved"] in ("mpi", "root"):
            assert across is None and mean is None
        elif nodes == 1 or row["resolved"] == "shm":
            assert across == mean == 0
        elif row["resolved"] == "hierarchical":  # 2(N-1)/N * bytes/S from each rail rank
            expected = 2 * (nodes - 1) / nodes * row["bytes"] / slices
            assert across == pytest.approx(expected, abs=2 * nodes * itemsize)
        else:  # the flat ring: 2(P-1)/P * bytes from the last rank of a node
            expected = 2 * (ranks - 1) / ranks * row["bytes"]
            assert across == pytest.approx(expected, abs=2 * ranks * itemsize)


@pytest.mark.mpi
@pytest.mark.parametrize("buffer", bench.BUFFERS)
def test_bench_json_many_ranks(buffer):
    comm = MPI.COMM_WORLD
    directory = tempfile.mkdtemp() if comm.Get_rank() == 0 else None
    directory = comm.bcast(directory, root=0)
    document = run_and_load(comm, directory, "--buffer", buffer)
    comm.Barrier()
    if comm.Get_rank() == 0:
        shutil.rmtree(directory)
    every = frozenset(bench.ALGORITHMS)  # shm only on one node (tests/test_multinode.py)
    check_document(document, comm.Get_size(), buffer,
                   every if context.state_of(comm).one_node() else every - {"shm"})


@pytest.mark.mpi
def test_bench_leaves_shm_out_across_nodes(monkeypatch):
    """Ranks on several nodes (faked): the default skips shm, asking for it is an error."""
    monkeypatch.setattr(context, "single_node", lambda comm: comm.Barrier() or False)
    comm = MPI.COMM_WORLD.Dup()
    directory = tempfile.mkdtemp() if comm.Get_rank() == 0 else None
    directory = comm.bcast(directory, root=0)
    try:
        if comm.Get_size() > 1:
            document = run_and_load(comm, directory)
            check_document(document, comm.Get_size(),
                           algorithms=frozenset(bench.ALGORITHMS) - {"shm"})
            with pytest.raises(UserError, match="--algorithms shm cannot run here"):
                bench.run(parse("--algorithms", "shm,mpi"), comm)
    finally:
        comm.Barrier()
        if comm.Get_rank() == 0:
            shutil.rmtree(directory)
        comm.Free()


def test_bench_json_one_rank(tmp_path, capsys):
    document = run_and_load(MPI.COMM_SELF, str(tmp_path))
    check_document(document, 1)
    out = capsys.readouterr().out
    assert "memcpy" in out and "wrote" in out
    assert "# auto vs the fastest, float32: worst" in out


def test_auto_gaps():
    def row(algorithm, nbytes, latency):
        return bench.Result(algorithm, "float32", nbytes, nbytes // 4, 1, latency, 0, 0, 0)
    results = [row("shm", 4, 4.0), row("auto", 4, 4.2), row("mpi", 4, 5.0),
               row("ring", 64, 10.0), row("auto", 64, 11.5), row("ring", 128, 9.0)]
    gap, nbytes, best = bench.auto_gaps(results)["float32"]
    assert (nbytes, best) == (64, "ring") and gap == pytest.approx(0.15)


def test_bench_subset_and_plot(tmp_path, capsys):
    """Also: --json and --plot may name directories that do not exist yet."""
    plot = tmp_path / "new" / "busbw.png"
    path = tmp_path / "bench-results" / "r.json"
    args = parse("--min-bytes", "1K", "--max-bytes", "2K", "--iterations", "2",
                 "--algorithms", "ring,mpi", "--dtypes", "float64", "--op", "mean",
                 "--json", str(path), "--plot", str(plot))
    assert bench.run(args, MPI.COMM_SELF) == 0
    document = json.loads(path.read_text())
    assert [(r["algorithm"], r["bytes"]) for r in document["results"]] == [
        ("ring", 1024), ("mpi", 1024), ("ring", 2048), ("mpi", 2048)]
    if importlib.util.find_spec("matplotlib") is not None:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "--plot skipped" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (("--min-bytes", "0"), "--min-bytes must be a positive size"),
    (("--max-bytes", "lots"), "--max-bytes must be a positive size"),
    (("--min-bytes", "1M", "--max-bytes", "1K"), "--max-bytes must be >= --min-bytes"),
    (("--algorithms", "ring,fast"), "--algorithms must be a comma-separated subset"),
    (("--dtypes", "float16"), "--dtypes must be a comma-separated subset"),
    (("--iterations", "0"), "--iterations must be >= 1"),
])
def test_bench_bad_options(argv, message):
    with pytest.raises(UserError, match=message) as info:
        bench.run(parse(*argv), MPI.COMM_SELF)
    assert info.value.agreed


def test_bench_json_that_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("")
    args = parse("--max-bytes", "8", "--iterations", "1", "--json",
                 str(tmp_path / "file" / "r.json"))
    with pytest.raises(UserError, match="--json could not write"):
        bench.run(args, MPI.COMM_SELF)


def test_sizes_and_counts():
    assert bench.sizes(4, 64) == [4, 8, 16, 32, 64]
    assert bench.parse_size("64K", "--x") == 65536
    assert bench.parse_size("1MiB", "--x") == 1 << 20
    small, large = bench.default_counts(4), bench.default_counts(64 << 20)
    assert small[1] > large[1] >= 20 and small[0] > large[0] >= 2
