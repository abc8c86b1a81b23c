"""mpitrain.data on several ranks: shards are P-independent, errors reach every rank.

Run with ``mpiexec -n 2|3|4 python -m pytest --with-mpi -m mpi tests/test_data_mpi.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI
from test_data import (
    ERROR_CASES,
    FORMATS,
    example,
    expect_error,
    load,
    memory_kb,
    reset_peak,
    write,
    write_big_npy,
    write_text,
)

from mpitrain.data import Dataset, Shard, SyntheticSpec, block_range
from mpitrain.data.sources import open_source
from mpitrain.errors import UserError

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()


def on_rank0(make):
    """Run ``make()`` (which writes files) on rank 0 only; every rank gets its result."""
    result = COMM.bcast(make() if RANK == 0 else None)
    COMM.Barrier()
    return result


def gather(shard: Shard) -> tuple[np.ndarray, np.ndarray]:
    """All ranks' rows of a split, in rank order, with buffer collectives."""
    counts = np.empty(SIZE, dtype=np.int64)
    COMM.Allgather(np.array([len(shard.y)], dtype=np.int64), counts)
    d = shard.X.shape[1]
    X = np.empty((counts.sum(), d), dtype=shard.X.dtype)
    y = np.empty(counts.sum(), dtype=shard.y.dtype)
    COMM.Allgatherv(shard.X, [X, counts * d])
    COMM.Allgatherv(shard.y, [y, counts])
    return X, y


def assert_same_as_one_rank(parallel: Dataset, serial: Dataset, exact: bool = True) -> None:
    """The union of the shards equals the one-rank data set, and blocks follow block_range."""
    assert (parallel.n_features, parallel.n_classes) == (serial.n_features, serial.n_classes)
    for part, whole in ((parallel.train, serial.train), (parallel.test, serial.test)):
        assert part.n_total == whole.n_total
        start, stop = block_range(whole.n_total, SIZE, RANK)
        assert (part.start, len(part.y)) == (start, stop - start)
        assert part.X.flags.c_contiguous and part.X.dtype == whole.X.dtype
        X, y = gather(part)
        np.testing.assert_array_equal(y, whole.y)
        if exact:
            np.testing.assert_array_equal(X, whole.X)
        else:
            # sums reduced in another order: the statistics differ in their last bits
            tol = 1e-5 if X.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(X, whole.X, rtol=tol, atol=tol)


@pytest.mark.parametrize("fraction", [0.0, 0.3])
@pytest.mark.parametrize("fmt", FORMATS)
def test_file_shards_do_not_depend_on_the_number_of_ranks(mpi_tmp_path, fmt, fraction):
    X, y = example(103, sparse=fmt.startswith("libsvm"))
    path = on_rank0(lambda: write(fmt, mpi_tmp_path, X, y))
    options = {"test_fraction": fraction, "seed": 3}
    assert_same_as_one_rank(load(path, **options), load(path, MPI.COMM_SELF, **options))


@pytest.mark.parametrize("task,clusters", [("classification", 1), ("classification", 3),
                                           ("regression", 1)])
def test_synthetic_shards_do_not_depend_on_the_number_of_ranks(task, clusters):
    options = {"task": task, "test_fraction": 0.2, "seed": 7, "dtype": np.float32,
               "synthetic": SyntheticSpec(samples=3001, features=6, classes=4,
                                          clusters=clusters)}
    assert_same_as_one_rank(load("synthetic", **options),
                            load("synthetic", MPI.COMM_SELF, **options))


def test_digits_shards_do_not_depend_on_the_number_of_ranks():
    pytest.importorskip("sklearn")
    options = {"test_fraction": 0.2}
    assert_same_as_one_rank(load("digits", **options), load("digits", MPI.COMM_SELF, **options))


def test_test_source_shards(mpi_tmp_path):
    def make():
        return (write("csv", mpi_tmp_path, *example(50)),
                write("libsvm", mpi_tmp_path, *example(7, seed=2, sparse=True), name="test"))

    train, test = on_rank0(make)
    assert_same_as_one_rank(load(train, test_source=test),
                            load(train, MPI.COMM_SELF, test_source=test))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_standardisation_matches_numpy_on_the_full_data(mpi_tmp_path, dtype):
    X, y = example(211, 6)
    X[:, 1] = -3.5
    X[:, 2] = X[:, 2] * 100 + 1e4
    path = on_rank0(lambda: write("npz", mpi_tmp_path, X, y))
    data = load(path, test_fraction=0.25, standardize=True, dtype=dtype)
    raw = load(path, MPI.COMM_SELF, test_fraction=0.25, dtype=dtype)
    train, test = raw.train.X.astype(np.float64), raw.test.X.astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[1] = 1.0
    np.testing.assert_allclose(data.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(data.std, std, rtol=1e-12)
    tolerance = {"rtol": 1e-6, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-10}
    np.testing.assert_allclose(gather(data.train)[0], (train - mean) / std, **tolerance)
    np.testing.assert_allclose(gather(data.test)[0], (test - mean) / std, **tolerance)
    serial = load(path, MPI.COMM_SELF, test_fraction=0.25, standardize=True, dtype=dtype)
    # exact sums (mpitrain.exact): the statistics, hence the rows, are the same bits
    np.testing.assert_array_equal(data.mean, serial.mean)
    np.testing.assert_array_equal(data.std, serial.std)
    assert_same_as_one_rank(data, serial)


def test_libsvm_feature_count_comes_from_every_rank(mpi_tmp_path):
    text = "".join(f"{i % 2} 1:{i}\n" for i in range(20)) + "1 7:2.5\n"
    path = on_rank0(lambda: write_text(mpi_tmp_path / "a.svm", text))
    data = load(path)
    assert data.n_features == 7 and data.train.X.shape[1] == 7
    X, _ = gather(data.train)
    assert X[-1, 6] == 2.5 and np.all(X[:-1, 1:] == 0)


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_reach_every_rank(mpi_tmp_path, case):
    expect_error(mpi_tmp_path, case)


def test_a_problem_on_one_rank_is_reported_by_all(mpi_tmp_path):
    good = on_rank0(lambda: write("csv", mpi_tmp_path, *example(20)))
    missing = str(mpi_tmp_path / "only-rank-1-looks-here.csv")
    with pytest.raises(UserError, match=re.escape(f"--data: file '{missing}' does not exist")):
        load(missing if RANK == SIZE - 1 else good)


def test_ranks_that_see_different_files_stop_with_one_error(mpi_tmp_path):
    def make():
        return [write("csv", mpi_tmp_path / f"node{i}", *example(20 + i)) for i in range(2)]

    paths = on_rank0(make)
    mine = paths[1] if RANK == SIZE - 1 else paths[0]
    message = (f"--data: the ranks see different data (rank 0: data.csv, 20 rows x 5 "
               f"features; rank {SIZE - 1}: data.csv, 21 rows x 5 features); is the file the "
               "same on every node?")
    with pytest.raises(UserError, match=re.escape(message)):
        load(mine)


def test_more_ranks_than_training_rows(mpi_tmp_path):
    path = on_rank0(lambda: write("csv", mpi_tmp_path, *example(SIZE - 1)))
    n = SIZE - 1
    message = f"{SIZE} ranks but only {n} training rows: use at most {n} ranks"
    with pytest.raises(UserError, match=re.escape(message)):
        load(path)
    message = f"{SIZE} ranks but only {SIZE - round(0.5 * SIZE)} training rows"
    with pytest.raises(UserError, match=re.escape(message)):
        load("synthetic", synthetic=SyntheticSpec(samples=SIZE), test_fraction=0.5)


def test_memmap_keeps_each_rank_to_its_rows(mpi_tmp_path):
    n, d = 500_000, 50  # 200 MB

    def make() -> str:
        directory = mpi_tmp_path / "big"
        directory.mkdir()
        write_big_npy(directory / "X.npy", n, d)
        np.save(directory / "y.npy", np.arange(n) % 2)
        return str(directory)

    path = on_rank0(make)
    file_kb = Path(path, "X.npy").stat().st_size // 1024
    peak = reset_peak()
    before = memory_kb()
    data = load(path, test_fraction=0.2)
    after = memory_kb()
    COMM.Barrier()
    if RANK == 0:
        Path(path, "X.npy").unlink()
    X, start = data.train.X, data.train.start
    assert X[0, 0] % d == 0 and X[-1, -1] % d == d - 1 and X[0, 0] // d >= start
    share = file_kb / SIZE  # this rank's rows: about 1/SIZE of the file
    assert after["VmRSS"] - before["VmRSS"] < 1.2 * share + 16_000
    if peak:
        assert after["VmHWM"] - before["VmRSS"] < 2.4 * share + 32_000


def test_class_names_seen_by_one_rank_are_agreed_by_all(mpi_tmp_path):
    """Only the last rank's rows hold names: every rank still maps labels the same way."""
    def make() -> str:
        rows = "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)) + "40,1,zebra\n41,2,ant\n"
        return write_text(mpi_tmp_path / "a.csv", "a,b,label\n" + rows)

    path = on_rank0(make)
    options = {"test_fraction": 0.25, "seed": 2}
    parallel, serial = load(path, **options), load(path, MPI.COMM_SELF, **options)
    assert parallel.classes.tolist() == serial.classes.tolist() == ["0", "1", "ant", "zebra"]
    assert_same_as_one_rank(parallel, serial)


def test_libsvm_index_base_is_decided_by_every_rank(mpi_tmp_path):
    text = "".join(f"{i % 2} 1:{i} 2:1\n" for i in range(30)) + "1 0:7\n"
    path = on_rank0(lambda: write_text(mpi_tmp_path / "a.svm", text))
    parallel, serial = load(path), load(path, MPI.COMM_SELF)
    assert parallel.n_features == 3
    assert_same_as_one_rank(parallel, serial)


def write_big(fmt: str, directory: Path, n: int, d: int) -> str:
    """X[i, j] = i * d + j and y = i % 2 as HDF5 or Parquet, written in pieces."""
    if fmt == "hdf5":
        import h5py

        path = directory / "big.h5"
        with h5py.File(path, "w") as file:
            X = file.create_dataset("X", (n, d), dtype="f8")
            for start in range(0, n, 20000):
                stop = min(start + 20000, n)
                X[start:stop] = np.arange(start * d, stop * d, dtype=np.float64).reshape(-1, d)
            file["y"] = np.arange(n) % 2
        return str(path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = directory / "big.parquet"
    names = [f"f{j}" for j in range(d)]
    schema = pa.schema([(name, pa.float64()) for name in names] + [("label", pa.int64())])
    with pq.ParquetWriter(path, schema, compression="none") as writer:
        for start in range(0, n, 20000):
            stop = min(start + 20000, n)
            block = np.arange(start * d, stop * d, dtype=np.float64).reshape(-1, d)
            columns = [pa.array(block[:, j]) for j in range(d)]
            writer.write_table(pa.Table.from_arrays(
                [*columns, pa.array(np.arange(start, stop) % 2)], schema=schema))
    return str(path)


@pytest.mark.parametrize("fmt,module", [("hdf5", "h5py"), ("parquet", "pyarrow.parquet")])
def test_hdf5_and_parquet_keep_each_rank_to_its_rows(mpi_tmp_path, fmt, module):
    pytest.importorskip(module)
    n, d = 500_000, 50  # 200 MB of features
    path = on_rank0(lambda: write_big(fmt, mpi_tmp_path, n, d))
    file_kb = n * d * 8 // 1024
    source = open_source(path, option="--data", task="classification", seed=0,
                         synthetic=SyntheticSpec())
    source.read(np.arange(10))  # libraries loaded and initialised before measuring
    COMM.Barrier()
    peak = reset_peak()
    before = memory_kb()
    data = load(path, test_fraction=0.2)
    after = memory_kb()
    X, start = data.train.X, data.train.start
    assert X[0, 0] % d == 0 and X[-1, -1] % d == d - 1 and X[0, 0] // d >= start
    share = file_kb / SIZE
    assert after["VmRSS"] - before["VmRSS"] < 1.2 * share + 16_000
    if peak:
        assert after["VmHWM"] - before["VmRSS"] < 2.4 * share + 32_000
