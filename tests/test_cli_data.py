"""End-to-end: data formats through the CLI under mpiexec — HDF5, Parquet and CSV with
class names give the model of the .npz holding the same rows, on another number of ranks;
data errors are one line and exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runner import run_train
from test_data import example, write

from mpitrain.models import load_model

pytestmark = pytest.mark.timeout(300)

TRAIN = ["--model", "mlp", "--hidden", "8", "--epochs", "2", "--batch-size", "16",
         "--dtype", "float64", "--test-fraction", "0.2", "--seed", "5", "--quiet"]
NAMES = np.array(["ant", "bee", "cat"])


def write_named_csv(path, X, y) -> str:
    lines = [",".join(repr(float(v)) for v in row) + f",{NAMES[k]}" for row, k in zip(
        X, y, strict=True)]
    path.write_text("\n".join([",".join(f"x{j}" for j in range(X.shape[1])) + ",animal",
                               *lines]) + "\n")
    return str(path)


def test_formats_give_the_model_of_the_npz_on_any_number_of_ranks(tmp_path):
    pytest.importorskip("h5py")
    pytest.importorskip("pyarrow")
    X, y = example(150, 5)
    sources = {"npz": write("npz", tmp_path, X, y), "hdf5": write("hdf5", tmp_path, X, y),
               "parquet": write("parquet-dir", tmp_path, X, y),
               "csv-names": write_named_csv(tmp_path / "named.csv", X, y)}
    models = {}
    for ranks, (name, path) in zip([3, 2, 2, 3], sources.items(), strict=True):
        out = tmp_path / f"run-{name}"
        done = run_train(["--data", path, *TRAIN, "--out", str(out)], ranks=ranks)
        assert done.returncode == 0, (name, done.stderr)
        models[name] = load_model(out / "model.npz")
    for name, saved in models.items():
        for tensor, value in models["npz"].params.items():
            np.testing.assert_allclose(saved.params[tensor], value, rtol=1e-9, atol=1e-12,
                                       err_msg=name)
    assert models["npz"].classes is None
    assert models["csv-names"].classes.tolist() == NAMES.tolist()
    summary = json.loads((tmp_path / "run-csv-names" / "summary.json").read_text())
    assert summary["data"]["class_names"] == NAMES.tolist()


def test_zero_based_libsvm_from_scikit_learn(tmp_path):
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = example(120, 4)
    X[:, 0] += 1.0  # index 0 present in every row
    npz = write("npz", tmp_path, X, y)
    svm = str(tmp_path / "a.svm")
    datasets.dump_svmlight_file(X, y, svm)
    runs = {}
    for name, argv in {"npz": ["--data", npz], "auto": ["--data", svm],
                       "true": ["--data", svm, "--zero-based", "true"]}.items():
        out = tmp_path / name
        done = run_train([*argv, *TRAIN, "--out", str(out)], ranks=2)
        assert done.returncode == 0, (name, done.stderr)
        runs[name] = load_model(out / "model.npz").params["W0"]
    np.testing.assert_allclose(runs["auto"], runs["npz"], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(runs["true"], runs["auto"])


def data_errors(tmp_path):
    """(argv, the error message) for data errors met on the command line."""
    X, y = example(20, 3)
    csv = write("csv", tmp_path, X, y)
    zero = tmp_path / "zero.svm"
    zero.write_text("".join(f"{i % 2} 0:1 2:{i}\n" for i in range(12)))
    cases = [
        (["--data", "./digits"], "--data: './digits' does not exist (no such file or "
         "directory; the built-in data set is 'digits', without a path)"),
        (["--data", "traindata"], "--data: 'traindata' does not exist (no such file or "
         "directory; expected .npz, .csv, .svm, .libsvm, .h5, .hdf5, .parquet, a directory "
         "with X.npy and y.npy or .parquet parts, 'synthetic', 'digits' or 'iris')"),
        (["--data", "digitz"], "--data: 'digitz' does not exist (no such file or directory; "
         "did you mean the built-in 'digits'?)"),
        (["--data", str(zero), "--zero-based", "false", "--test-fraction", "0"],
         f"--data: '{zero}' line 1 has feature index '0' (expected an integer from 1 to "
         "2147483647)"),
        (["--data", csv, "--zero-based", "maybe"], "argument --zero-based: invalid choice: "
         "'maybe'"),
        (["--data", csv, "--feature-columns", "a,,b"],
         "--feature-columns must be comma-separated column names like a,b,c (got a,,b)"),
        (["--data", csv, "--label-column", "y"],
         f"--data: '{csv}' has no header line, so --label-column and --feature-columns "
         "cannot name its columns"),
        (["--data", str(zero), "--label-column", "y"],
         "--label-column applies to Parquet data and CSV with a header only"),
    ]
    try:
        import h5py
    except ImportError:
        return cases
    h5 = tmp_path / "a.h5"
    with h5py.File(h5, "w") as file:
        file["features"] = X
        file["y"] = y
    cases.append((["--data", str(h5)], f"--data: '{h5}' has no dataset 'X' (expected datasets "
                  "'X' and 'y'; name others with --h5-x)"))
    try:
        write("parquet", tmp_path, X, y)
    except pytest.skip.Exception:
        return cases
    parquet = tmp_path / "data.parquet"
    cases.append((["--data", str(parquet), "--label-column", "kind"],
                  f"--data: '{parquet}' has no column 'kind' (--label-column; columns: f0, f1, "
                  "f2, label)"))
    return cases


def test_data_errors_exit_2_with_one_message(tmp_path):
    for argv, message in data_errors(tmp_path):
        done = run_train([*argv, "--quiet"], ranks=2, cwd=tmp_path, timeout=60)
        assert done.returncode == 2, (argv, done.returncode, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("mpitrain: error: "), (argv, lines)
        assert message in lines[0], (argv, lines)

