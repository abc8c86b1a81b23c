"""The parallel libsvm reader under MPI: the same rows and line numbers for any number of
ranks (each scanning its byte range), memory per rank bounded by its share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI
from test_data import load, memory_kb, reset_peak
from test_data_mpi import assert_same_as_one_rank, on_rank0

from mpitrain.bench.data import read_share, write_libsvm
from mpitrain.data.libsvm import LibsvmSource, share_scans
from mpitrain.errors import UserError

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()


def odd_file(directory: Path) -> str:
    """Comments, blank lines, a BOM, CRLF, a line far longer than any rank's byte range."""
    lines = ["\ufeff# made for the tests", ""]
    for i in range(400):
        if i == 7:
            lines.append(f"{i % 3} " + " ".join(f"{j + 1}:{j}.25" for j in range(3000)))
        elif i % 50 == 0:
            lines += ["   ", "# a comment line", f"{i % 3} 2:{i} 9:1 # tail\r"]
        else:
            lines.append(f"{i % 3} {i % 11 + 1}:{i}.5 12:-{i}e-3")
    path = directory / "odd.svm"
    path.write_bytes("\n".join(lines).encode())
    return str(path)


def test_rows_and_line_numbers_do_not_depend_on_the_rank_count(mpi_tmp_path):
    path = on_rank0(lambda: odd_file(mpi_tmp_path))
    parallel = LibsvmSource(Path(path), option="--data", part=(RANK, SIZE))
    share_scans(COMM, [parallel, None])
    serial = LibsvmSource(Path(path), option="--data")
    assert parallel.n_rows == serial.n_rows == 400
    rows = np.arange(0, 400, 3)
    a, b = parallel.read(rows), serial.read(rows)
    np.testing.assert_array_equal(a.lines, b.lines)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.X.dense(3000, np.float64), b.X.dense(3000, np.float64))
    for option in ({"test_fraction": 0.3}, {"test_fraction": 0.0}):
        assert_same_as_one_rank(load(path, **option), load(path, MPI.COMM_SELF, **option),
                                exact=False)


def test_a_bad_token_on_one_rank_is_one_error_on_all(mpi_tmp_path):
    text = "".join(f"{i % 2} 1:{i}\n" for i in range(60)) + "1 1:oops\n"
    path = on_rank0(lambda: (mpi_tmp_path / "bad.svm").write_text(text) and
                    str(mpi_tmp_path / "bad.svm"))
    with pytest.raises(UserError, match="line 61 has a non-numeric value 'oops'"):
        load(path, test_fraction=0.0)


def test_ranks_that_see_files_of_different_sizes_stop_with_one_error(mpi_tmp_path):
    def make():
        paths = []
        for i in range(2):
            path = mpi_tmp_path / f"node{i}" / "a.svm"
            path.parent.mkdir()
            path.write_text("".join(f"{k % 2} 1:{k}\n" for k in range(20 + i)))
            paths.append(str(path))
        return paths

    paths = on_rank0(make)
    mine = paths[1] if RANK == SIZE - 1 else paths[0]
    with pytest.raises(UserError, match="the ranks see different data"):
        load(mine)


def test_memory_per_rank_stays_within_twice_its_csr_share(mpi_tmp_path):
    path = on_rank0(lambda: write_libsvm(mpi_tmp_path / "big.svm", rows=120_000,
                                         features=1000, nnz=16, seed=1)
                    or str(mpi_tmp_path / "big.svm"))
    read_share(Path(path), COMM)  # kernels compiled or loaded, modules imported
    COMM.Barrier()
    peak = reset_peak()
    before = memory_kb()
    _, block = read_share(Path(path), COMM)
    after = memory_kb()
    share_kb = (block.X.nbytes + block.y.nbytes) / 1024
    assert len(block.y) in (120_000 // SIZE, 120_000 // SIZE + 1)
    assert after["VmRSS"] - before["VmRSS"] < 1.5 * share_kb + 8_000
    if peak:
        # the CSR share, its row-pointer/line bookkeeping, one 4 MB read buffer
        assert after["VmHWM"] - before["VmRSS"] < 2 * share_kb + 12_000


def test_a_gzip_file_gives_every_rank_the_rows_of_the_plain_file(mpi_tmp_path):
    import gzip

    def make():
        plain = odd_file(mpi_tmp_path)
        Path(plain + ".gz").write_bytes(gzip.compress(Path(plain).read_bytes()))
        return plain

    plain = on_rank0(make)
    packed, flat = load(plain + ".gz"), load(plain)
    np.testing.assert_array_equal(packed.train.X, flat.train.X)
    np.testing.assert_array_equal(packed.test.y, flat.test.y)
