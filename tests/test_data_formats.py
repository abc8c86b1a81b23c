"""Data formats and inputs on one rank: class names, libsvm index bases, HDF5, Parquet,
built-in names versus paths, and in-memory arrays given to ``train``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI
from test_data import example, load, parquet_table, write, write_text

from mpitrain.data.libsvm import LibsvmSource
from mpitrain.data.sources import ReadOptions
from mpitrain.errors import UserError
from mpitrain.models import load_model
from mpitrain.models.predict import predict
from mpitrain.training import train

pytestmark = pytest.mark.timeout(120)

SELF = MPI.COMM_SELF


def csv_lines(rows: list[tuple[float, float, str]], header: str | None = "a,b,label") -> str:
    lines = [header] if header else []
    return "\n".join(lines + [f"{a},{b},{label}" for a, b, label in rows]) + "\n"


# ---------------------------------------------------------------- class names


def test_csv_string_labels_become_sorted_classes(tmp_path):
    rows = [(1, 2, "dog"), (3, 4, " cat"), (5, 6, "bird"), (7, 8, "dog ")]
    data = load(write_text(tmp_path / "a.csv", csv_lines(rows)))
    assert data.classes.tolist() == ["bird", "cat", "dog"] and data.n_classes == 3
    np.testing.assert_array_equal(data.train.y, [2, 1, 0, 2])
    np.testing.assert_array_equal(data.train.X, [[1, 2], [3, 4], [5, 6], [7, 8]])


def test_csv_without_header_and_string_labels(tmp_path):
    data = load(write_text(tmp_path / "a.csv", csv_lines([(1, 2, "yes"), (3, 4, "no")], None)))
    assert data.train.n_total == 2 and data.classes.tolist() == ["no", "yes"]
    np.testing.assert_array_equal(data.train.y, [1, 0])


def test_numbers_and_names_together(tmp_path):
    """Every distinct label is a class: numbers first in numeric order, then names; 1 and
    1.0 are the same number."""
    rows = [(0, 0, "1"), (0, 1, "other"), (1, 0, "0"), (1, 1, "1.0"), (2, 2, "-2.5")]
    data = load(write_text(tmp_path / "a.csv", csv_lines(rows)))
    assert data.classes.tolist() == ["-2.5", "0", "1", "other"]
    np.testing.assert_array_equal(data.train.y, [2, 3, 1, 2, 0])


def test_numeric_labels_have_no_class_names(tmp_path):
    data = load(write_text(tmp_path / "a.csv", csv_lines([(1, 2, "0"), (3, 4, "2")])))
    assert data.classes is None and data.n_classes == 3
    np.testing.assert_array_equal(data.train.y, [0, 2])


def test_class_names_cover_train_and_test_data(tmp_path):
    train_path = write_text(tmp_path / "a.csv", csv_lines([(1, 2, "dog"), (3, 4, "cat")]))
    test_path = write_text(tmp_path / "t.csv", csv_lines([(5, 6, "ant"), (7, 8, "dog")]))
    data = load(train_path, test_source=test_path)
    assert data.classes.tolist() == ["ant", "cat", "dog"]
    np.testing.assert_array_equal(data.train.y, [2, 1])
    np.testing.assert_array_equal(data.test.y, [0, 2])


def test_holdout_of_named_classes(tmp_path):
    names = np.array(["cat", "dog", "emu"])
    X, y = example(60)
    text = "".join(f"{a},{b},{names[k]}\n" for (a, b), k in zip(X[:, :2], y, strict=True))
    data = load(write_text(tmp_path / "a.csv", "x,z,animal\n" + text), test_fraction=0.25)
    indices = load(write_text(tmp_path / "b.csv", "".join(
        f"{a},{b},{k}\n" for (a, b), k in zip(X[:, :2], y, strict=True))), test_fraction=0.25)
    assert data.classes.tolist() == names.tolist()
    np.testing.assert_array_equal(data.train.y, indices.train.y)
    np.testing.assert_array_equal(data.test.y, indices.test.y)


def test_train_writes_class_names(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3))
    labels = np.where(X[:, 0] > 0, "pos", "neg")
    path = tmp_path / "a.csv"
    path.write_text("u,v,w,kind\n" + "".join(
        f"{a},{b},{c},{k}\n" for (a, b, c), k in zip(X, labels, strict=True)))
    result = train(data=str(path), model="logistic", epochs=20, lr=0.5, quiet=True, comm=SELF,
                   out=str(tmp_path / "run"))
    assert result.summary["data"]["class_names"] == ["neg", "pos"]
    saved = load_model(tmp_path / "run" / "model.npz")
    assert saved.classes.tolist() == ["neg", "pos"]
    predicted = predict(saved, X)
    assert set(predicted.tolist()) <= {"neg", "pos"}
    assert np.mean(predicted == labels) > 0.8


def test_csv_columns_named_by_the_header(tmp_path):
    text = ("id,height,species,weight\n"
            "a7,1.5,dog,30\n"
            "b2,0.3,cat,4\n"
            "c9,0.2,cat,5\n")
    path = write_text(tmp_path / "a.csv", text)
    data = load(path, read=ReadOptions(label_column="species",
                                      feature_columns=("weight", "height")))
    np.testing.assert_array_equal(data.train.X, [[30, 1.5], [4, 0.3], [5, 0.2]])
    assert data.classes.tolist() == ["cat", "dog"]
    np.testing.assert_array_equal(data.train.y, [1, 0, 0])
    numeric = load(write_text(tmp_path / "b.csv", "x,label,z\n1,0,2\n3,1,4\n"),
                   read=ReadOptions(label_column="label"))
    np.testing.assert_array_equal(numeric.train.X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(numeric.train.y, [0, 1])
    with pytest.raises(UserError, match=re.escape(
            f"--data: '{path}' line 2 has a non-numeric value 'a7' in column 'id' (choose "
            "the features with --feature-columns)")):
        load(path, read=ReadOptions(label_column="species"))
    with pytest.raises(UserError, match=re.escape(
            f"--data: '{path}' has no column 'mass' (--feature-columns; columns: id, height, "
            "species, weight)")):
        load(path, read=ReadOptions(feature_columns=("mass",)))
    wrong = write_text(tmp_path / "c.csv", text + "d1,0.4,cat,6,extra\n")
    with pytest.raises(UserError, match=re.escape(
            f"--data: '{wrong}' line 5 has 5 columns but line 1 has 4")):
        load(wrong, read=ReadOptions(label_column="species", feature_columns=("weight",)))


# ---------------------------------------------------------------- libsvm index base


def test_libsvm_one_based_file_with_auto_and_true(tmp_path):
    path = write_text(tmp_path / "a.svm", "1 1:5 3:2\n0 2:1\n")
    auto = load(path)
    np.testing.assert_array_equal(auto.train.X, [[5, 0, 2], [0, 1, 0]])
    forced = load(path, read=ReadOptions(zero_based="true"))
    np.testing.assert_array_equal(forced.train.X, [[0, 5, 0, 2], [0, 0, 1, 0]])
    assert load(path, read=ReadOptions(zero_based="false")).n_features == 3


def test_libsvm_zero_based_file(tmp_path):
    path = write_text(tmp_path / "a.svm", "1 0:5 2:2\n0 1:1\n")
    for mode in ("auto", "true"):
        data = load(path, read=ReadOptions(zero_based=mode))
        np.testing.assert_array_equal(data.train.X, [[5, 0, 2], [0, 1, 0]])


@pytest.mark.parametrize("line,zero,features", [
    ("1 10:1 20:2", False, 20), ("1 qid:0 1:1", False, 1), ("1 1:1 # 0:1", False, 1),
    ("1 0:1", True, 2), ("1 2:1\t00:3", True, 3), ("1 +0:1", True, 2),
])
def test_libsvm_auto_finds_an_index_0_anywhere(tmp_path, line, zero, features):
    path = write_text(tmp_path / "a.svm", "0 1:1\n" + line + "\n")
    assert LibsvmSource(Path(path), option="--data").base == (0 if zero else 1)
    assert load(path).n_features == features


def test_libsvm_auto_decides_over_train_and_test_together(tmp_path):
    """As scikit-learn's load_svmlight_files: an index 0 in any file makes all 0-based."""
    train_path = write_text(tmp_path / "a.svm", "1 1:5 2:2\n0 2:1\n")
    test_path = write_text(tmp_path / "t.svm", "1 0:3\n")
    data = load(train_path, test_source=test_path)
    np.testing.assert_array_equal(data.train.X, [[0, 5, 2], [0, 0, 1]])
    np.testing.assert_array_equal(data.test.X, [[3, 0, 0]])


def test_sklearn_dump_svmlight_file_loads_as_written(tmp_path):
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = example(50, 4)
    datasets.dump_svmlight_file(X, y, str(tmp_path / "a.svm"))  # zero_based=True by default
    data = load(str(tmp_path / "a.svm"))
    np.testing.assert_allclose(data.train.X, X)
    np.testing.assert_array_equal(data.train.y, y)


# ---------------------------------------------------------------- HDF5


def test_hdf5_dataset_names_and_column_labels(tmp_path):
    h5py = pytest.importorskip("h5py")
    X, y = example(30)
    with h5py.File(tmp_path / "a.hdf5", "w") as file:
        file["group/features"] = X.astype(np.float32)
        file["labels"] = y.reshape(-1, 1)
    data = load(str(tmp_path / "a.hdf5"), read=ReadOptions(h5_x="group/features", h5_y="labels"),
                test_fraction=0.2)
    assert data.train.n_total + data.test.n_total == 30
    whole = load(write("npz", tmp_path, X.astype(np.float32), y), test_fraction=0.2)
    np.testing.assert_array_equal(data.train.X, whole.train.X)
    np.testing.assert_array_equal(data.test.y, whole.test.y)


def test_hdf5_errors(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as file:
        file["X"] = np.zeros((4, 2))
        file["target"] = np.zeros(4)
        file["names"] = np.array([b"a", b"b", b"c", b"d"])
    with pytest.raises(UserError, match=re.escape(
            f"--data: '{path}' has no dataset 'y' (expected datasets 'X' and 'y'; name others "
            "with --h5-y)")):
        load(str(path))
    named = load(str(path), read=ReadOptions(h5_y="names"))
    assert named.classes.tolist() == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(named.train.y, [0, 1, 2, 3])
    with h5py.File(path, "a") as file:
        file["text"] = np.array(["cat", "dog", "cat", "émeu"], dtype=h5py.string_dtype())
        file["pairs"] = np.zeros((4, 2), dtype=[("a", "<i4"), ("b", "<f8")])[:, 0]
    named = load(str(path), read=ReadOptions(h5_y="text"))
    assert named.classes.tolist() == ["cat", "dog", "émeu"]
    with pytest.raises(UserError, match=re.escape(
            f"--data: pairs in '{path}' has dtype [('a', '<i4'), ('b', '<f8')] (expected "
            "numbers or strings)")):
        load(str(path), read=ReadOptions(h5_y="pairs"))
    bad = write_text(tmp_path / "b.h5", "not hdf5")
    with pytest.raises(UserError, match=re.escape(f"--data: '{bad}' is not a readable HDF5 file")):
        load(bad)


def test_hdf5_without_h5py_names_the_extra(tmp_path, monkeypatch):
    path = write_text(tmp_path / "a.h5", "")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(UserError, match=re.escape(
            f"--data: reading '{path}' needs h5py, which is not installed "
            "(pip install 'mpitrain[hdf5]', or '.[hdf5]' from a checkout)")):
        load(path)


# ---------------------------------------------------------------- Parquet


def test_parquet_label_column_feature_columns_and_string_labels(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"id": np.arange(6), "kind": ["b", "a", "b", "c", "a", "a"],
                      "x": np.linspace(0, 1, 6), "flag": [True, False] * 3,
                      "note": ["n"] * 6})
    path = tmp_path / "a.parquet"
    pq.write_table(table, path, row_group_size=4)
    data = load(str(path), read=ReadOptions(label_column="kind", feature_columns=("x", "flag")))
    assert data.classes.tolist() == ["a", "b", "c"] and data.n_features == 2
    np.testing.assert_array_equal(data.train.y, [1, 0, 1, 2, 0, 0])
    np.testing.assert_array_equal(data.train.X[:, 1], [1, 0, 1, 0, 1, 0])
    with pytest.raises(UserError, match=re.escape(
            f"--data: column 'note' of '{path}' has type string (expected numbers; choose "
            "the features with --feature-columns)")):
        load(str(path), read=ReadOptions(label_column="kind"))
    with pytest.raises(UserError, match=re.escape(
            f"--data: '{path}' has no column 'label' (--label-column; columns: id, kind, x, "
            "flag, note)")):
        load(str(path), read=ReadOptions(label_column="label"))
    with pytest.raises(UserError, match=re.escape(
            "--data: column 'kind' is the label (--label-column) and cannot also be a "
            "feature (--feature-columns)")):
        load(str(path), read=ReadOptions(label_column="kind", feature_columns=("x", "kind")))


def test_parquet_default_label_is_the_last_column_and_pandas_index_is_skipped(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"f0": [1.0, 2.0, 3.0], "f1": [4, 5, 6], "y": [0, 1, 0],
                      "__index_level_0__": [10, 11, 12]})
    pq.write_table(table, tmp_path / "a.parquet")
    data = load(str(tmp_path / "a.parquet"))
    np.testing.assert_array_equal(data.train.X, [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(data.train.y, [0, 1, 0])


def test_parquet_directory_missing_values_and_mismatched_parts(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    X, y = example(40)
    directory = write("parquet-dir", tmp_path, X, y)
    np.testing.assert_array_equal(load(directory).train.X, X)
    pq.write_table(pa.table({"f0": [1.0, None], "label": [0, 1]}), tmp_path / "n.parquet")
    with pytest.raises(UserError, match=re.escape(
            f"--data: '{tmp_path / 'n.parquet'}' has a missing value in column 'f0' (row 1)")):
        load(str(tmp_path / "n.parquet"))
    (Path(directory) / "_temporary").mkdir()
    pq.write_table(pa.table({"g": [1.0], "label": [0]}), f"{directory}/_temporary/p.parquet")
    pq.write_table(pa.table({"g": [1.0], "label": [0]}), f"{directory}/.hidden.parquet")
    np.testing.assert_array_equal(load(directory).train.X, X)  # those are skipped
    pq.write_table(pa.table({"g": [1.0], "label": [0]}), f"{directory}/part-9.parquet")
    with pytest.raises(UserError, match="every part must have the same schema"):
        load(directory)


def test_parquet_regression_with_text_target_is_an_error(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"f0": [1.0, 2.0], "label": ["1.5", "high"]}), tmp_path / "a.parquet")
    with pytest.raises(UserError, match="has a non-numeric target 'high' in row 1"):
        load(str(tmp_path / "a.parquet"), task="regression")
    data = load(str(tmp_path / "a.parquet"))
    assert data.classes.tolist() == ["1.5", "high"]


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    X, y = example(10)
    path = write("parquet", tmp_path, X, y)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(UserError, match=re.escape("needs pyarrow, which is not installed "
                                                  "(pip install 'mpitrain[parquet]'")):
        load(path)


def test_parquet_table_helper_matches_the_writer(tmp_path):
    pytest.importorskip("pyarrow")
    X, y = example(5, 2)
    assert parquet_table(X, y).column_names == ["f0", "f1", "label"]


# ---------------------------------------------------------------- built-in names and paths


def test_a_directory_named_like_a_builtin_is_the_path(tmp_path, monkeypatch):
    X, y = example(12)
    write("npy-dir", tmp_path, X, y, name="digits")
    monkeypatch.chdir(tmp_path)
    for value in ("digits", "./digits", str(tmp_path / "digits")):
        data = load(value)
        assert data.train.n_total == 12 and data.n_features == X.shape[1], value
    assert load("synthetic").name.startswith("synthetic(")
    (tmp_path / "synthetic").mkdir()
    with pytest.raises(UserError, match=re.escape(
            "--data: directory 'synthetic' has no X.npy (expected X.npy and y.npy) ('synthetic' "
            "exists in the working directory, so it is read instead of the built-in data set)")):
        load("synthetic")


# ---------------------------------------------------------------- train(X=, y=) on one rank


def test_train_with_arrays_equals_train_with_the_file(tmp_path):
    X, y = example(150, 4)
    options = dict(model="mlp", hidden=(6,), epochs=2, batch_size=16, dtype="float64",
                   quiet=True, comm=SELF, test_fraction=0.2)
    from_file = train(data=write("npz", tmp_path, X, y), **options)
    from_arrays = train(X=X, y=y, **options)
    np.testing.assert_array_equal(from_arrays.flat, from_file.flat)
    assert from_arrays.config.data == "<in-memory arrays>"
    held = train(X=X[:120], y=y[:120], test_X=X[120:], test_y=y[120:], **options)
    assert held.summary["data"]["test_rows"] == 30


def test_train_with_arrays_writes_a_config_that_does_not_mean_other_data(tmp_path):
    X, y = example(40, 3)
    out = tmp_path / "run"
    train(X=X, y=y, model="softmax", epochs=1, quiet=True, comm=SELF, out=str(out))
    assert 'data = "<in-memory arrays>"' in (out / "config.toml").read_text()
    with pytest.raises(UserError, match=re.escape(
            "--data: <in-memory arrays> stands for the arrays a run was given in Python")):
        load("<in-memory arrays>")


@pytest.mark.parametrize("kwargs,message", [
    (dict(data=np.zeros((3, 2))), "data= takes a name or a path (got ndarray); pass in-memory "
     "arrays as X= and y="),
    (dict(test_data=np.zeros((3, 2))), "test_data= takes a name or a path (got ndarray); pass "
     "in-memory arrays as test_X= and test_y="),
    (dict(data="digits", X=np.zeros((3, 2)), y=np.zeros(3)),
     "pass either data= or X=/y=, not both"),
    (dict(X=np.zeros((3, 2))), "X= is given but y= is not (on rank 0)"),
    (dict(test_y=np.zeros(3)), "test_y= is given but test_X= is not (on rank 0)"),
    (dict(X=np.zeros(3), y=np.zeros(3)),
     "X= must be a 2-D array (rows, features); got shape (3,) (on rank 0)"),
    (dict(X=np.array([["a", "b"]]), y=np.zeros(1)),
     "X= must hold numbers; got dtype <U1 (on rank 0)"),
    (dict(X=np.zeros((3, 2)), y=np.zeros((3, 2))),
     "y= must be a 1-D array (one label per row); got shape (3, 2) (on rank 0)"),
    (dict(X=np.zeros((3, 2)), y=np.zeros(4)), "y= has 4 rows but X= has 3 (on rank 0)"),
    (dict(X=np.zeros((0, 2)), y=np.zeros(0)), "X= has no rows on any rank"),
    (dict(X=np.where(np.arange(24).reshape(12, 2) == 11, np.inf, 0), y=np.zeros(12),
          test_fraction=0.0),
     "train(): X/y has a non-finite value in row 5"),
])
def test_train_with_bad_arrays(kwargs, message):
    with pytest.raises(UserError) as info:
        train(model="softmax", epochs=1, quiet=True, comm=SELF, **kwargs)
    assert str(info.value) == message
