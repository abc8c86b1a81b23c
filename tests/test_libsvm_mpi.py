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
from mpitrain.data.holdout import make_holdout
from mpitrain.data.libsvm import LibsvmSource, share_scans
from mpitrain.data.sharding import block_range
from mpitrain.data.sources import ReadOptions
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


# ---------------------------------------------------------------- one-pass reads on P ranks
def _varied_file(directory: Path, name: str, *, zero: bool = False,
                 finite: bool = False) -> str:
    """Comments, blank lines, qid, unsorted and repeated indices, the general path's
    numbers, rows of very unequal length (the first few hold most of the bytes, so byte
    ranges and row blocks differ a lot), an index 0 when ``zero``, no inf or nan when ``finite``."""
    from test_libsvm import _odd_line

    rng = np.random.default_rng(len(name))
    lines = ["# header comment", ""]
    lines += [f"{i % 2} " + " ".join(f"{(j * 7) % 900 + 1}:{j}.5" for j in range(900))
              for i in range(6)]
    lines += [_odd_line(rng) for _ in range(700)]
    if finite:  # loadable: no inf or nan
        lines = [line for line in lines if "inf" not in line and "nan" not in line]
    lines += ["1 qid:3 5:1 2:2 5:3 # repeated 5, unsorted", "\t", "0 3:1 1:2"]
    if zero:
        lines[500] = "1 0:2.5 4:1"
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _one_pass_and_serial(path: str, **options) -> tuple[LibsvmSource, LibsvmSource]:
    parallel = LibsvmSource(Path(path), option="--data", part=(RANK, SIZE), **options)
    share_scans(COMM, [parallel])
    return parallel, LibsvmSource(Path(path), option="--data", **options)


def _same_block(a, b) -> None:
    from test_libsvm import _same_blocks

    np.testing.assert_array_equal(a.rows, b.rows)
    _same_blocks(a, b)


@pytest.mark.parametrize("zero_based", ["auto", "true", "false"])
@pytest.mark.parametrize("zero", [False, True])
def test_each_rank_parses_its_bytes_once_and_gets_its_blocks_rows(mpi_tmp_path, zero_based,
                                                                  zero):
    """The rows every rank parsed move to the ranks whose blocks hold them: the blocks of a
    holdout split (train, then test) are the one-rank reader's, with its line numbers."""
    if zero and zero_based == "false":
        pytest.skip("an index 0 in a 1-based file is an error (tested below)")
    path = on_rank0(lambda: _varied_file(mpi_tmp_path, f"v{zero:d}.svm", zero=zero))
    parallel, serial = _one_pass_and_serial(path, zero_based=zero_based)
    assert parallel.collective and parallel._held is not None
    assert (parallel.n_rows, parallel.base, parallel.has_zero) == (
        serial.n_rows, serial.base, serial.has_zero)
    split = make_holdout(serial.n_rows, 0.25, seed=3)
    start, stop = block_range(split.n_train, SIZE, RANK)
    train = split.train_rows(start, stop)
    test = split.test_rows(*block_range(split.n_test, SIZE, RANK))
    for rows in (train, test):
        _same_block(parallel.exchange(COMM, rows), serial.read(rows))
    assert parallel._held is None  # every parsed row went to some rank


def test_a_file_with_fewer_rows_than_ranks_and_ranks_without_a_line_start(mpi_tmp_path):
    """One line longer than every byte range: some ranks parse nothing, some get no row."""
    def make():
        long_line = "1 " + " ".join(f"{j + 1}:{j}" for j in range(4000))
        path = mpi_tmp_path / "few.svm"
        path.write_text(f"# c\n{long_line}\n0 7:1\n")
        return str(path)

    path = on_rank0(make)
    parallel, serial = _one_pass_and_serial(path)
    assert parallel.collective and parallel.n_rows == 2
    starts = COMM.allgather(len(parallel._held.rows) if parallel._held is not None else 0)
    assert sum(starts) == 2 and starts.count(0) >= SIZE - 2
    rows = np.arange(*block_range(2, SIZE, RANK), dtype=np.int64)
    _same_block(parallel.exchange(COMM, rows), serial.read(rows))


def test_asking_again_for_rows_already_read_fails_on_every_rank(mpi_tmp_path):
    """A misuse (rows moved once are gone) is one error on every rank, not a rank raising
    while the others wait in the exchange."""
    path = on_rank0(lambda: _varied_file(mpi_tmp_path, "again.svm"))
    parallel, _ = _one_pass_and_serial(path)
    rows = np.arange(*block_range(parallel.n_rows, SIZE, RANK), dtype=np.int64)
    parallel.exchange(COMM, rows)
    again = rows[:1] if RANK == 0 else rows[:0]  # (only rank 0 asks: rank 0's check fails)
    with pytest.raises(RuntimeError, match="rows asked for were read already"):
        parallel.exchange(COMM, again)


def test_loading_reads_the_same_rows_for_any_rank_count(mpi_tmp_path):
    path = on_rank0(lambda: _varied_file(mpi_tmp_path, "load.svm", finite=True))
    for option in ({"test_fraction": 0.3, "sparse": "on", "task": "regression"},
                   {"test_fraction": 0.0, "task": "regression"}):
        parallel, serial = load(path, **option), load(path, MPI.COMM_SELF, **option)
        for part, whole in ((parallel.train, serial.train), (parallel.test, serial.test)):
            start, stop = block_range(whole.n_total, SIZE, RANK)
            assert (part.start, part.n_local) == (start, stop - start)
            mine = whole.X[start:stop] if not option.get("sparse") else None
            if mine is not None:
                np.testing.assert_array_equal(part.X, mine)
            else:
                lo, hi = whole.X.indptr[start], whole.X.indptr[stop]
                np.testing.assert_array_equal(part.X.data, whole.X.data[lo:hi])
                np.testing.assert_array_equal(part.X.indices, whole.X.indices[lo:hi])
            np.testing.assert_array_equal(part.y, whole.y[start:stop])


@pytest.mark.parametrize("bad, message", [
    ("1 3:1 7:x2", "line {} has a non-numeric value 'x2'"),
    ("1 0:1", "line {} has feature index '0' (expected an integer from 1 to 2147483647)"),
])
def test_a_bad_line_in_the_second_half_names_its_global_line_on_every_rank(
        mpi_tmp_path, bad, message):
    lines = ["# comment", ""] + [f"{i % 2} {i % 9 + 1}:{i}" for i in range(300)]
    lines[240] = bad  # far past the first rank's bytes; line 241
    path = on_rank0(lambda: write_text_file(mpi_tmp_path / "bad2.svm", "\n".join(lines)))
    with pytest.raises(UserError) as caught:
        load(path, read=ReadOptions(zero_based="false"))
    assert message.format(241) in str(caught.value)
    assert len(set(COMM.allgather(str(caught.value)))) == 1


def write_text_file(path: Path, text: str) -> str:
    path.write_text(text + "\n")
    return str(path)


def test_ranks_read_from_the_file_when_one_rank_could_not_parse_its_range(mpi_tmp_path,
                                                                          monkeypatch):
    """A rank that scans instead (out of memory while parsing) makes every rank read its
    rows as before, the others from the rows they kept or the file."""
    path = on_rank0(lambda: _varied_file(mpi_tmp_path, "mixed.svm", finite=True))
    if RANK == SIZE - 1:
        monkeypatch.setattr(LibsvmSource, "_parse_range", lambda self, rank, size: False)
    parallel, serial = _one_pass_and_serial(path)
    assert not parallel.collective
    for rows in (np.arange(*block_range(serial.n_rows, SIZE, RANK)), np.arange(0, 300, 7)):
        _same_block(parallel.read(rows), serial.read(rows))
    options = {"test_fraction": 0.3, "task": "regression"}
    with monkeypatch.context() as patched:
        if RANK == 0:
            patched.setattr(LibsvmSource, "_parse_range", lambda self, rank, size: False)
        mixed = load(path, **options)
    whole = load(path, MPI.COMM_SELF, **options)
    start, stop = block_range(whole.train.n_total, SIZE, RANK)
    np.testing.assert_array_equal(mixed.train.X, whole.train.X[start:stop])
    np.testing.assert_array_equal(mixed.train.y, whole.train.y[start:stop])
