"""The CSV reader's pyarrow path on several ranks: the same shards as one rank and as the
numpy.loadtxt path, and a rank's memory bounded by its share.

Run with ``mpiexec -n 2|3 python -m pytest --with-mpi -m mpi tests/test_csv_arrow_mpi.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from test_data import load, memory_kb, reset_peak, write_text
from test_data_mpi import assert_same_as_one_rank, on_rank0

from mpitrain.data.text import CsvSource

pytest.importorskip("pyarrow")
pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()


def write_csv(path, n: int, d: int, *, names: bool) -> str:
    """``n`` rows of ``d`` 17-digit values and a label (names or numbers), a header."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((n, d)) * 10.0 ** rng.integers(-20, 20, (n, d))
    labels = [["cat", "dog", "7"][i % 3] if names else str(i % 3) for i in range(n)]
    header = ",".join(f"f{j}" for j in range(d)) + ",label\n"
    body = "".join(",".join(map(repr, row)) + f",{label}\n"
                   for row, label in zip(X.tolist(), labels, strict=True))
    return write_text(path, header + body.replace("\n", "\n\n", 7))  # a few blank lines


@pytest.mark.parametrize("names", [False, True])
def test_shards_equal_one_rank_and_the_loadtxt_path(mpi_tmp_path, monkeypatch, names):
    path = on_rank0(lambda: write_csv(mpi_tmp_path / "a.csv", 701, 5, names=names))
    options = {"test_fraction": 0.3, "seed": 3}
    fast = load(path, **options)
    monkeypatch.setattr(CsvSource, "fast", False)
    assert_same_as_one_rank(fast, load(path, MPI.COMM_SELF, **options))
    assert_same_as_one_rank(load(path, **options), load(path, MPI.COMM_SELF, **options))
    monkeypatch.setattr(CsvSource, "fast", True)
    assert_same_as_one_rank(fast, load(path, MPI.COMM_SELF, **options))


def test_peak_memory_per_rank_follows_its_share(mpi_tmp_path):
    n, d = 40_000, 32
    path = on_rank0(lambda: write_csv(mpi_tmp_path / "big.csv", n, d, names=False))
    load(path)  # pyarrow imported, the file in the page cache
    text_kb = (mpi_tmp_path / "big.csv").stat().st_size / 1024 / SIZE
    array_kb = n * d * 8 / 1024 / SIZE
    peak = reset_peak()
    before = memory_kb()
    data = load(path)
    after = memory_kb()
    assert len(data.train.y) in (n // SIZE, n // SIZE + 1)
    if peak:
        assert after["VmHWM"] - before["VmRSS"] < 2.2 * text_kb + 3 * array_kb + 32_000
