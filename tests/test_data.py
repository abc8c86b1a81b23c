"""mpitrain.data on one rank: formats, holdout, synthetic rows, standardisation, errors.

The helpers here (file writers, error cases) are shared with ``test_data_mpi.py``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from mpitrain.bench.data import memory_kb, reset_peak
from mpitrain.data import SyntheticSpec, block_range, load_dataset
from mpitrain.data.binary import NpyDirSource
from mpitrain.data.holdout import make_holdout
from mpitrain.data.sources import ReadOptions
from mpitrain.data.synthetic import CHUNK_ROWS, SyntheticSource
from mpitrain.errors import UserError
from mpitrain.training import train

pytestmark = pytest.mark.timeout(120)

COMM = MPI.COMM_WORLD
FORMATS = ["npz", "npz-compressed", "npy-dir", "csv", "csv-header", "libsvm", "libsvm-0",
           "hdf5", "parquet", "parquet-dir"]


# ---------------------------------------------------------------- helpers (shared with MPI tests)


def example(n: int = 97, d: int = 5, *, seed: int = 0, sparse: bool = False):
    """Features with a row-index column (to see which rows came back) and labels 0..2."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).round(3)
    X[:, 0] = np.arange(n)
    if sparse:
        X[rng.random((n, d)) < 0.5] = 0.0
        X[:, 0] = np.arange(n)
        X[-1, -1] = 1.5  # the widest row is the last one (read by the last rank)
    y = rng.integers(0, 3, size=n).astype(np.int64)
    return X, y


def write(fmt: str, directory: Path, X: np.ndarray, y: np.ndarray, name: str = "data") -> str:
    """Write X, y in one of FORMATS; return the path to pass as ``source``."""
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "npz":
        path = directory / f"{name}.npz"
        np.savez(path, X=X, y=y)
    elif fmt == "npz-compressed":
        path = directory / f"{name}.npz"
        np.savez_compressed(path, X=X, y=y)
    elif fmt == "npy-dir":
        path = directory / name
        path.mkdir(exist_ok=True)
        np.save(path / "X.npy", X)
        np.save(path / "y.npy", y)
    elif fmt in ("csv", "csv-header"):
        path = directory / f"{name}.csv"
        header = ",".join([f"f{j}" for j in range(X.shape[1])] + ["label"])
        lines = [",".join(repr(float(v)) for v in row) + f",{label!r}" for row, label in zip(
            X, y.tolist(), strict=True)]
        path.write_text((header + "\n" if fmt == "csv-header" else "") + "\n".join(lines) + "\n")
    elif fmt == "libsvm":
        path = directory / f"{name}.svm"
        path.write_text(svm_text(X, y))
    elif fmt == "libsvm-0":  # scikit-learn's dump_svmlight_file default: 0-based indices
        path = directory / f"{name}.svm"
        path.write_text(svm_text(X, y, base=0))
    elif fmt == "hdf5":
        h5py = pytest.importorskip("h5py")
        path = directory / f"{name}.h5"
        with h5py.File(path, "w") as file:
            file["X"] = X
            file["y"] = y
    elif fmt in ("parquet", "parquet-dir"):
        pq = pytest.importorskip("pyarrow.parquet")
        path = directory / (f"{name}.parquet" if fmt == "parquet" else name)
        if fmt == "parquet":
            pq.write_table(parquet_table(X, y), path, row_group_size=16)
        else:  # three parts, sorted by name; row groups of 10 rows
            path.mkdir(exist_ok=True)
            for i, rows in enumerate(np.array_split(np.arange(len(y)), 3)):
                pq.write_table(parquet_table(X[rows], y[rows]), path / f"part-{i}.parquet",
                               row_group_size=10)
    else:
        raise ValueError(fmt)
    return str(path)


def parquet_table(X: np.ndarray, y: np.ndarray):
    """A pyarrow table: feature columns f0, f1, ... then the label column."""
    import pyarrow as pa

    columns = {f"f{j}": X[:, j] for j in range(X.shape[1])}
    return pa.table({**columns, "label": y})


def svm_text(X: np.ndarray, y: np.ndarray, base: int = 1) -> str:
    """libsvm lines with only the non-zero features (1-based indices, or ``base``)."""
    lines = []
    for row, label in zip(X, y.tolist(), strict=True):
        pairs = " ".join(f"{j + base}:{float(v)!r}" for j, v in enumerate(row) if v != 0)
        lines.append(f"{label} {pairs}".strip())
    return "\n".join(lines) + "\n"


def load(source: str, comm: MPI.Comm = COMM, **options):
    """load_dataset with test-friendly defaults: all rows in train, raw float64 features."""
    options.setdefault("task", "classification")
    options.setdefault("dtype", np.float64)
    options.setdefault("seed", 0)
    options.setdefault("test_fraction", 0.0)
    options.setdefault("standardize", False)
    return load_dataset(source, comm=comm, **options)


def write_text(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# Each case writes its files into a directory and returns (load options, expected message).
# In MPI tests the bad row is the last one, so only the last rank sees the problem.
ErrorCase = Callable[[Path], tuple[dict, str]]


def _npz(d: Path, **arrays) -> str:
    path = d / "a.npz"
    np.savez(path, **arrays)
    return str(path)


def _npy_dir(d: Path, **arrays) -> str:
    (d / "arrays").mkdir()
    for name, array in arrays.items():
        np.save(d / "arrays" / f"{name}.npy", array)
    return str(d / "arrays")


def _bad_row_csv(d: Path, last: str) -> str:
    return write_text(d / "a.csv", "".join(f"{i},{i + 1},0\n" for i in range(11)) + last)


ERROR_CASES: dict[str, ErrorCase] = {
    "missing file": lambda d: (
        {"source": str(d / "missing.csv")},
        f"--data: file '{d / 'missing.csv'}' does not exist",
    ),
    "unknown format": lambda d: (
        {"source": write_text(d / "foo.txt", "1,2\n")},
        f"--data: '{d / 'foo.txt'}' has an unknown format (expected .npz, .csv, .svm, .libsvm, "
        ".h5, .hdf5, .parquet, a directory with X.npy and y.npy or .parquet parts, "
        "'synthetic', 'digits' or 'iris')",
    ),
    "missing path without a suffix": lambda d: (
        {"source": str(d / "train")},
        f"--data: '{d / 'train'}' does not exist (no such file or directory; expected .npz",
    ),
    "missing ./digits": lambda d: (
        {"source": str(d / "digits")},
        f"--data: '{d / 'digits'}' does not exist (no such file or directory; the built-in "
        "data set is 'digits', without a path)",
    ),
    "builtin name typo": lambda d: (
        {"source": "synthetc"},
        "--data: 'synthetc' does not exist (no such file or directory; did you mean the "
        "built-in 'synthetic'?)",
    ),
    "not an npz": lambda d: (
        {"source": write_text(d / "a.npz", "garbage")},
        f"--data: '{d / 'a.npz'}' is not a valid .npz file (File is not a zip file)",
    ),
    "npz without y": lambda d: (
        {"source": _npz(d, X=np.zeros((4, 2)))},
        f"--data: '{d / 'a.npz'}' has no array 'y' (expected arrays X and y)",
    ),
    "X not 2-D": lambda d: (
        {"source": _npz(d, X=np.zeros(4), y=np.zeros(4))},
        f"--data: X in '{d / 'a.npz'}' has shape (4,) (expected 2-D: rows, features)",
    ),
    "y length": lambda d: (
        {"source": _npz(d, X=np.zeros((4, 2)), y=np.zeros(3))},
        f"--data: y in '{d / 'a.npz'}' has 3 rows but X has 4",
    ),
    "directory without y.npy": lambda d: (
        {"source": _npy_dir(d, X=np.zeros((4, 2)))},
        f"--data: directory '{d / 'arrays'}' has no y.npy (expected X.npy and y.npy)",
    ),
    "test feature count": lambda d: (
        {
            "source": _npz(d, X=np.zeros((12, 4)), y=np.zeros(12)),
            "test_source": write_text(d / "t.csv", "1,2,3,0\n"),
        },
        "--test-data has 3 features but the training data has 4",
    ),
    "libsvm test wider": lambda d: (
        {
            "source": write_text(d / "a.svm", "".join(f"{i % 2} 1:{i} 2:1\n" for i in range(12))),
            "test_source": write_text(d / "t.svm", "0 1:1\n1 5:2\n"),
        },
        "--test-data has 5 features but the training data has 2",
    ),
    "csv columns": lambda d: (
        {"source": _bad_row_csv(d, "11,12,13,1\n")},
        f"--data: '{d / 'a.csv'}' line 12 has 4 columns but line 1 has 3",
    ),
    "csv non-numeric": lambda d: (
        {"source": _bad_row_csv(d, "11,abc,1\n")},
        f"--data: '{d / 'a.csv'}' line 12 has a non-numeric value 'abc'",
    ),
    "csv non-finite": lambda d: (
        {"source": _bad_row_csv(d, "11,nan,1\n")},
        f"--data: '{d / 'a.csv'}' has a non-finite value in line 12",
    ),
    "npz non-finite": lambda d: (
        {"source": _npz(d, X=np.r_[np.zeros((11, 2)), [[0, np.inf]]], y=np.zeros(12))},
        f"--data: '{d / 'a.npz'}' has a non-finite value in row 11",
    ),
    "float32 overflow": lambda d: (
        {
            "source": _npz(d, X=np.r_[np.zeros((11, 2)), [[0, 1e300]]], y=np.zeros(12)),
            "dtype": np.float32,
        },
        f"--data: '{d / 'a.npz'}' has a non-finite value in row 11",
    ),
    "regression non-finite target": lambda d: (
        {"source": _bad_row_csv(d, "11,12,inf\n"), "task": "regression"},
        f"--data: '{d / 'a.csv'}' has a non-finite target in line 12",
    ),
    "label not integer": lambda d: (
        {"source": _bad_row_csv(d, "11,12,0.5\n")},
        f"--data: '{d / 'a.csv'}' has label 0.5 in line 12 "
        "(expected non-negative integer class labels)",
    ),
    "label negative": lambda d: (
        {"source": _npz(d, X=np.zeros((12, 2)), y=np.r_[np.zeros(11), -2])},
        f"--data: '{d / 'a.npz'}' has label -2 in row 11 "
        "(expected non-negative integer class labels)",
    ),
    "libsvm index 0 when 1-based": lambda d: (
        {"source": write_text(d / "a.svm", "".join("1 1:1\n" for _ in range(11)) + "0 0:1\n"),
         "read": ReadOptions(zero_based="false")},
        f"--data: '{d / 'a.svm'}' line 12 has feature index '0' "
        "(expected an integer from 1 to 2147483647)",
    ),
    "libsvm negative index": lambda d: (
        {"source": write_text(d / "a.svm", "".join("1 1:1\n" for _ in range(11)) + "0 -3:1\n")},
        f"--data: '{d / 'a.svm'}' line 12 has feature index '-3' "
        "(expected an integer from 1 to 2147483647)",
    ),
    "libsvm option for csv": lambda d: (
        {"source": _bad_row_csv(d, "11,12,1\n"), "read": ReadOptions(zero_based="true")},
        "--zero-based applies to libsvm data (.svm, .libsvm) only",
    ),
    "parquet option for npz": lambda d: (
        {"source": _npz(d, X=np.zeros((4, 2)), y=np.zeros(4)),
         "read": ReadOptions(feature_columns=("a",))},
        "--feature-columns applies to Parquet data and CSV with a header only",
    ),
    "hdf5 option for synthetic": lambda d: (
        {"source": "synthetic", "read": ReadOptions(h5_y="labels")},
        "--h5-y applies to HDF5 data (.h5, .hdf5) only",
    ),
    "csv text target in regression": lambda d: (
        {"source": _bad_row_csv(d, "11,12,cat\n"), "task": "regression"},
        f"--data: '{d / 'a.csv'}' has a non-numeric target 'cat' in line 12",
    ),
    "csv infinite label among names": lambda d: (
        {"source": write_text(d / "a.csv", "".join(f"{i},{i + 1},cat\n" for i in range(11))
                              + "11,12,inf\n")},
        f"--data: '{d / 'a.csv'}' has label inf in line 12 (expected a class name or a finite "
        "number)",
    ),
    "empty csv": lambda d: (
        {"source": write_text(d / "a.csv", "\n\n")},
        f"--data: '{d / 'a.csv'}' has no data rows",
    ),
    "header only csv": lambda d: (
        {"source": write_text(d / "a.csv", "a,b,label\n")},
        f"--data: '{d / 'a.csv'}' has a header line but no data rows",
    ),
    "npz without rows": lambda d: (
        {"source": _npz(d, X=np.zeros((0, 3)), y=np.zeros(0))},
        f"--data: '{d / 'a.npz'}' has no data rows",
    ),
    "synthetic samples": lambda d: (
        {"source": "synthetic", "synthetic": SyntheticSpec(samples=1)},
        "--data synthetic: samples must be an integer >= 2 (got 1)",
    ),
    "synthetic features": lambda d: (
        {"source": "synthetic", "synthetic": SyntheticSpec(features=0)},
        "--data synthetic: features must be an integer >= 1 (got 0)",
    ),
    "synthetic classes": lambda d: (
        {"source": "synthetic", "synthetic": SyntheticSpec(classes=1)},
        "--data synthetic: classes must be an integer >= 2 (got 1)",
    ),
    "synthetic noise": lambda d: (
        {"source": "synthetic", "synthetic": SyntheticSpec(noise=-0.5)},
        "--data synthetic: noise must be a number >= 0 (got -0.5)",
    ),
    "synthetic clusters": lambda d: (
        {"source": "synthetic", "synthetic": SyntheticSpec(clusters=0)},
        "--data synthetic: clusters must be an integer >= 1 (got 0)",
    ),
    "test fraction": lambda d: (
        {"source": "synthetic", "test_fraction": 1.0},
        "--test-fraction must be in [0, 1) (got 1.0)",
    ),
    "dtype": lambda d: (
        {"source": "synthetic", "dtype": np.int32},
        "--dtype must be float32 or float64",
    ),
}


def expect_error(directory: Path, case: str, comm: MPI.Comm = COMM) -> None:
    """Build an error case (files on rank 0 only) and check every rank raises its message."""
    made = ERROR_CASES[case](directory) if comm.Get_rank() == 0 else None
    options, message = comm.bcast(made)
    comm.Barrier()
    source = options.pop("source")
    with pytest.raises(UserError, match=re.escape(message)) as info:
        load(source, comm, **options)
    assert info.value.agreed


# ---------------------------------------------------------------- block_range


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_block_range_covers_rows_in_order_with_balanced_blocks(size):
    for n in [0, 1, 2, 5, 6, 7, 100, 101]:
        blocks = [block_range(n, size, rank) for rank in range(size)]
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
        sizes = [stop - start for start, stop in blocks]
        q, r = divmod(n, size)
        assert sizes == [q + 1] * r + [q] * (size - r)


def test_block_range_rejects_bad_arguments():
    for args in [(5, 0, 0), (5, 2, 2), (-1, 2, 0), (5, 2, -1)]:
        with pytest.raises(ValueError):
            block_range(*args)


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips(tmp_path, fmt):
    X, y = example(sparse=fmt.startswith("libsvm"))
    data = load(write(fmt, tmp_path, X, y))
    assert data.train.X.flags.c_contiguous and data.train.X.dtype == np.float64
    np.testing.assert_array_equal(data.train.X, X)
    np.testing.assert_array_equal(data.train.y, y)
    assert data.train.y.dtype == np.int64
    assert (data.n_features, data.n_classes) == (X.shape[1], 3)
    assert (data.train.start, data.train.n_total, data.test.n_total) == (0, len(y), 0)
    assert data.test.X.shape == (0, X.shape[1])


@pytest.mark.parametrize("fmt", FORMATS)
def test_regression_targets_and_float32(tmp_path, fmt):
    X, _ = example(sparse=fmt.startswith("libsvm"))
    y = np.linspace(-2, 3, len(X))
    data = load(write(fmt, tmp_path, X, y), task="regression", dtype=np.float32)
    assert data.train.X.dtype == data.train.y.dtype == np.float32
    np.testing.assert_array_equal(data.train.X, X.astype(np.float32))
    np.testing.assert_array_equal(data.train.y, y.astype(np.float32))
    assert data.n_classes == 0


@pytest.mark.parametrize("fmt", ["npz", "npy-dir", "csv"])
def test_fortran_and_integer_arrays_and_column_labels(tmp_path, fmt):
    X = np.asfortranarray(np.arange(40, dtype=np.int32).reshape(10, 4))
    y = np.arange(10).reshape(10, 1) % 2
    data = load(write(fmt, tmp_path, X, y.ravel() if fmt == "csv" else y))
    np.testing.assert_array_equal(data.train.X, X)
    np.testing.assert_array_equal(data.train.y, y.ravel())


def test_csv_header_blank_lines_and_spaces(tmp_path):
    path = write_text(tmp_path / "a.csv", "x, y ,label\n\n1, 2,0\r\n\n3 ,4, 1\n  \n")
    data = load(path)
    np.testing.assert_array_equal(data.train.X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(data.train.y, [0, 1])


def test_csv_byte_order_mark_is_not_a_header(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("\ufeff1,2,0\n3,4,1\n".encode())
    np.testing.assert_array_equal(load(str(path)).train.X, [[1, 2], [3, 4]])


def test_libsvm_signed_labels_comments_and_test_padding(tmp_path):
    train = write_text(tmp_path / "a.libsvm", "# comment\n-1 1:0.5 3:2 # tail\n+1 qid:3 2:1\n\n")
    test = write_text(tmp_path / "t.svm", "1 1:4\n-1\n")
    data = load(train, test_source=test)
    np.testing.assert_array_equal(data.train.X, [[0.5, 0, 2], [0, 1, 0]])
    np.testing.assert_array_equal(data.train.y, [0, 1])
    np.testing.assert_array_equal(data.test.X, [[4, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(data.test.y, [1, 0])
    assert (data.n_features, data.n_classes) == (3, 2)
    regression = load(train, task="regression")
    np.testing.assert_array_equal(regression.train.y, [-1, 1])


def test_libsvm_fast_and_line_by_line_parsers_agree(tmp_path):
    X, y = example(300, 8, sparse=True)
    text = svm_text(X, y)
    plain = load(write_text(tmp_path / "a.svm", text))
    with_qid = text.replace("\n", " qid:1\n")  # qid tokens take the line-by-line parser
    slow = load(write_text(tmp_path / "b.svm", with_qid))
    np.testing.assert_array_equal(plain.train.X, X)
    np.testing.assert_array_equal(slow.train.X, X)
    np.testing.assert_array_equal(slow.train.y, plain.train.y)


def test_running_out_of_memory_is_a_user_error(monkeypatch):
    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("mpitrain.data.values.features", exhausted)
    with pytest.raises(UserError, match="rank 0 ran out of memory holding its rows"):
        load("synthetic")


def test_libsvm_labels_other_than_signed_are_kept(tmp_path):
    data = load(write_text(tmp_path / "a.svm", "0 1:1\n1 1:2\n2 2:1\n"))
    np.testing.assert_array_equal(data.train.y, [0, 1, 2])


def test_test_source_gives_the_test_set_and_no_holdout(tmp_path):
    X, y = example(40)
    Xt, yt = example(9, seed=5)
    data = load(write("npz", tmp_path, X, y), test_source=write("csv", tmp_path, Xt, yt),
                test_fraction=0.5)
    np.testing.assert_array_equal(data.train.X, X)
    np.testing.assert_array_equal(data.test.X, Xt)
    np.testing.assert_array_equal(data.test.y, yt)
    assert (data.train.n_total, data.test.n_total) == (40, 9)


def test_unreadable_file(tmp_path, monkeypatch):
    path = write_text(tmp_path / "a.csv", "1,2\n")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(UserError, match=re.escape(f"--data: cannot read '{path}' (Permission")):
        load(path)


def test_digits():
    pytest.importorskip("sklearn")
    data = load("digits", test_fraction=0.2)
    assert (data.n_features, data.n_classes, data.name) == (64, 10, "digits")
    assert (data.train.n_total, data.test.n_total) == (1797 - 359, 359)


def test_digits_without_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(UserError, match=re.escape("pip install mpitrain[datasets]")):
        load("digits")


# ---------------------------------------------------------------- holdout


def test_holdout_size_order_and_determinism(tmp_path):
    X, y = example(1001)
    source = write("npz", tmp_path, X, y)
    data = load(source, test_fraction=0.2, seed=4)
    train_rows, test_rows = data.train.X[:, 0], data.test.X[:, 0]
    assert len(test_rows) == data.test.n_total == round(0.2 * 1001)
    assert np.all(np.diff(train_rows) > 0) and np.all(np.diff(test_rows) > 0)
    assert np.array_equal(np.sort(np.r_[train_rows, test_rows]), np.arange(1001))
    again = load(source, test_fraction=0.2, seed=4)
    np.testing.assert_array_equal(again.test.X, data.test.X)
    other = load(source, test_fraction=0.2, seed=5)
    assert not np.array_equal(other.test.X, data.test.X)


@pytest.mark.parametrize("n,fraction", [(1, 0.0), (10, 0.35), (1000, 0.2), (20000, 0.9)])
def test_holdout_train_positions_map_to_the_complement(n, fraction):
    split = make_holdout(n, fraction, seed=1)
    complement = np.setdiff1d(np.arange(n), split.test)
    assert split.n_test == round(fraction * n) and split.n_train == len(complement)
    np.testing.assert_array_equal(split.train_rows(0, split.n_train), complement)
    for start, stop in [(0, 1), (split.n_train // 3, split.n_train // 2)]:
        np.testing.assert_array_equal(split.train_rows(start, stop), complement[start:stop])


def test_holdout_leaving_no_training_rows(tmp_path):
    with pytest.raises(UserError, match=re.escape("--test-fraction 0.9 leaves no training rows")):
        load("synthetic", synthetic=SyntheticSpec(samples=2), test_fraction=0.9)


# ---------------------------------------------------------------- synthetic


@pytest.mark.parametrize("task,clusters", [("classification", 1), ("classification", 3),
                                           ("regression", 1)])
def test_synthetic_rows_depend_only_on_seed_and_row(task, clusters):
    spec = SyntheticSpec(samples=3 * CHUNK_ROWS + 5, features=4, classes=3, clusters=clusters)
    small = load("synthetic", task=task, synthetic=SyntheticSpec(samples=1500, features=4,
                                                                 classes=3, clusters=clusters))
    big = load("synthetic", task=task, synthetic=spec)
    np.testing.assert_array_equal(big.train.X[:1500], small.train.X)
    np.testing.assert_array_equal(big.train.y[:1500], small.train.y)
    source = SyntheticSource(spec, task=task, seed=0, option="--data")
    rows = np.array([0, 5, CHUNK_ROWS - 1, CHUNK_ROWS, 2 * CHUNK_ROWS + 7, spec.samples - 1])
    block = source.read(rows)
    np.testing.assert_array_equal(block.X, big.train.X[rows])
    other = load("synthetic", task=task, seed=1, synthetic=spec)
    assert not np.array_equal(other.train.X, big.train.X)


@pytest.mark.parametrize("task,digest", [
    ("classification", "8580dddcec4081feb103a6e21f149c299ea7c4990d915bf13083dcbdd7cb190d"),
    ("regression", "736f2aa46abdfe4f7c65209d151a8d8bc3cdb0f585f2d19ded528b77049ead2c"),
])
def test_synthetic_default_rows_are_unchanged(task, digest):
    """One cluster per class (the default) generates the rows it always did: the checksum
    was taken before --clusters existed."""
    spec = SyntheticSpec(samples=3000, features=5, classes=3, noise=0.7)
    block = SyntheticSource(spec, task=task, seed=3, option="--data").read(np.arange(3000))
    assert hashlib.sha256(block.X.tobytes() + block.y.tobytes()).hexdigest() == digest
    clustered = SyntheticSource(SyntheticSpec(samples=3000, features=5, classes=3, noise=0.7,
                                              clusters=2), task=task, seed=3, option="--data")
    changed = not np.array_equal(clustered.read(np.arange(3000)).X, block.X)
    assert changed == (task == "classification")  # regression ignores clusters


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_synthetic_rows_made_in_float32_are_the_float64_rows_rounded(task):
    """A float32 source writes its rows rounded as it draws them: the same values as the
    float64 rows converted afterwards (no float64 copy of the whole block)."""
    spec = SyntheticSpec(samples=3 * CHUNK_ROWS + 5, features=4, classes=3, clusters=2)
    rows = np.array([0, 5, CHUNK_ROWS, 2 * CHUNK_ROWS + 7, spec.samples - 1])
    wide = SyntheticSource(spec, task=task, seed=1, option="--data").read(rows)
    narrow = SyntheticSource(spec, task=task, seed=1, option="--data",
                             dtype=np.float32).read(rows)
    assert narrow.X.dtype == np.float32
    np.testing.assert_array_equal(narrow.X, wide.X.astype(np.float32))
    np.testing.assert_array_equal(narrow.y, wide.y)
    loaded = load("synthetic", task=task, dtype=np.float32, synthetic=spec)
    np.testing.assert_array_equal(loaded.train.X, load("synthetic", task=task,
                                                       synthetic=spec).train.X.astype(np.float32))


def test_synthetic_clusters_belong_to_class_k_mod_classes():
    spec = SyntheticSpec(samples=6000, features=6, classes=3, clusters=4, noise=0.0)
    source = SyntheticSource(spec, task="classification", seed=2, option="--data")
    block = source.read(np.arange(spec.samples))
    assert source.centres.shape == (12, 6)
    centre = np.argmin(((block.X[:, None] - source.centres[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(block.y, centre % 3)
    assert len(np.unique(centre)) == 12
    np.testing.assert_allclose(np.bincount(block.y.astype(int)) / spec.samples, 1 / 3, atol=0.02)


def test_synthetic_clusters_need_a_nonlinear_model():
    """With several clusters per class a softmax model stays far below an MLP."""
    data = dict(data="synthetic", samples=4000, features=4, classes=3, clusters_per_class=4,
                noise=0.2,
                epochs=30, batch_size=32, lr=0.1, quiet=True, comm=MPI.COMM_SELF)
    linear = train(model="softmax", **data).history[-1]["test_accuracy"]
    mlp = train(model="mlp", hidden=(32,), **data).history[-1]["test_accuracy"]
    assert mlp > 0.9 and linear < 0.75, (linear, mlp)  # measured: 0.61, 0.97


def test_synthetic_classes_are_learnable_but_overlap():
    spec = SyntheticSpec(samples=4000, features=10, classes=2, noise=1.0)
    data = load("synthetic", synthetic=spec, standardize=True)
    assert data.n_classes == 2 and set(np.unique(data.train.y)) == {0, 1}
    means = [data.train.X[data.train.y == k].mean(axis=0) for k in (0, 1)]
    direction = (means[1] - means[0]) / np.linalg.norm(means[1] - means[0])
    score = data.train.X @ direction
    threshold = (means[0] + means[1]) @ direction / 2
    accuracy = np.mean((score > threshold) == (data.train.y == 1))
    assert 0.75 < accuracy < 0.995
    noiseless = load("synthetic", synthetic=SyntheticSpec(samples=200, noise=0.0))
    assert len(np.unique(noiseless.train.X, axis=0)) == 2


def test_synthetic_name():
    data = load("synthetic", synthetic=SyntheticSpec(samples=100, features=3, classes=4))
    assert data.name == "synthetic(100x3, 4 classes, noise 1)"
    data = load("synthetic", synthetic=SyntheticSpec(samples=100, features=3, classes=4,
                                                     clusters=5, noise=0.3))
    assert data.name == "synthetic(100x3, 4 classes x 5 clusters, noise 0.3)"


# ---------------------------------------------------------------- standardisation


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_standardisation_matches_numpy(tmp_path, dtype):
    X, y = example(300, 6)
    X[:, 1] = 7.25  # constant feature: std 1, becomes 0
    X[:, 2] = X[:, 2] * 1e3 + 5e4
    data = load(write("npz", tmp_path, X, y), test_fraction=0.25, standardize=None, dtype=dtype)
    raw = load(write("npz", tmp_path, X, y), test_fraction=0.25, dtype=dtype)
    train, test = raw.train.X.astype(np.float64), raw.test.X.astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[1] = 1.0
    np.testing.assert_allclose(data.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(data.std, std, rtol=1e-12)
    tolerance = {"rtol": 1e-6, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-10}
    np.testing.assert_allclose(data.train.X, (train - mean) / std, **tolerance)
    np.testing.assert_allclose(data.test.X, (test - mean) / std, **tolerance)
    assert np.all(data.train.X[:, 1] == 0) and np.all(data.test.X[:, 1] == 0)
    assert data.train.X.dtype == dtype and data.train.X.flags.c_contiguous


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors(tmp_path, case):
    expect_error(tmp_path, case)


# ---------------------------------------------------------------- memory


def write_big_npy(path: Path, n: int, d: int) -> None:
    """X.npy with X[i, j] = i * d + j, written in chunks (never held, never mapped)."""
    with path.open("wb") as fp:
        np.lib.format.write_array_header_1_0(
            fp, {"descr": "<f8", "fortran_order": False, "shape": (n, d)})
        for start in range(0, n, 20000):
            stop = min(start + 20000, n)
            fp.write(np.arange(start * d, stop * d, dtype=np.float64).tobytes())


def test_memmap_reads_touch_only_the_wanted_rows(tmp_path):
    n, d = 500_000, 50  # 200 MB
    directory = tmp_path / "big"
    directory.mkdir()
    write_big_npy(directory / "X.npy", n, d)
    np.save(directory / "y.npy", np.zeros(n, dtype=np.int8))
    file_kb = (directory / "X.npy").stat().st_size // 1024
    source = NpyDirSource(directory, option="--data")
    rows = np.arange(*block_range(n, 16, 9), dtype=np.int64)
    peak = reset_peak()
    before = memory_kb()
    try:
        block = source.read(rows)
        after = memory_kb()
    finally:
        (directory / "X.npy").unlink()
    assert block.X[0, 0] == rows[0] * d and block.X[-1, -1] == rows[-1] * d + d - 1
    assert after["VmRSS"] - before["VmRSS"] < file_kb / 8
    if peak:
        assert after["VmHWM"] - before["VmRSS"] < file_kb / 4
