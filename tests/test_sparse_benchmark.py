"""benchmarks/sparse: the synthetic sparse logistic data of issue 17 (deterministic, the
labels and the hidden model's log-loss as documented) and the comparison with
scikit-learn's SGDClassifier, at a tiny scale."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from cli_runner import ROOT

from mpitrain.data.libsvm import LibsvmSource

pytestmark = pytest.mark.timeout(300)

SCRIPTS = ROOT / "benchmarks" / "sparse"
SMALL = ["--rows", "1200", "--test-rows", "300", "--features", "512", "--nnz", "12"]


def script(name: str) -> ModuleType:
    """A script of benchmarks/sparse imported as a module (so numba can cache its kernels)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def make(out: Path, *extra: str) -> dict:
    return script("make_data").main(["--out", str(out), *SMALL, *extra])


def test_make_data_writes_the_documented_rows(tmp_path):
    meta = make(tmp_path / "a")
    again = make(tmp_path / "b")
    for name in ("train.svm", "test.svm", "weights.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert meta == again == json.loads((tmp_path / "a" / "meta.json").read_text())
    w = np.load(tmp_path / "a" / "weights.npy")
    assert w.shape == (512,)
    for split, rows in (("train", 1200), ("test", 300)):
        source = LibsvmSource(tmp_path / "a" / f"{split}.svm", option="--data",
                              zero_based="false")
        block = source.read(np.arange(source.n_rows))
        assert source.n_rows == rows and set(np.unique(block.y)) <= {0.0, 1.0}
        X = block.X.dense(512, np.float64)
        assert 0 < np.count_nonzero(X) / rows == pytest.approx(meta[f"{split}_nnz_per_row"])
        p = 1 / (1 + np.exp(-(X @ w)))
        loss = -np.mean(np.log(np.where(block.y == 1, p, 1 - p)))
        assert loss == pytest.approx(meta[f"{split}_true_log_loss"], rel=1e-12)
    uniform = make(tmp_path / "c", "--zipf", "0")
    assert uniform["train_nnz_per_row"] > meta["train_nnz_per_row"]  # fewer repeats


def test_compare_with_sgd_classifier_runs_and_reports(tmp_path):
    pytest.importorskip("sklearn")
    make(tmp_path / "d")
    out = tmp_path / "r.json"
    result = script("compare").main(["--dir", str(tmp_path / "d"), "--ranks", "2", "--epochs", "2",
                             "--batch-size", "32", "--dtype", "float32", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["dtype"] == "float32"
    floor = result["hidden_model_test_log_loss"]
    for name in ("mpitrain", "sklearn_sgd"):
        assert 0.8 * floor < result[name]["test_log_loss"] < 5  # learnt, not far below the floor
    assert result["ratio"] == result["mpitrain"]["test_log_loss"] / result["sklearn_sgd"][
        "test_log_loss"]
    vw = result["vowpal_wabbit"]  # (an optional peer: run when installed)
    try:
        import vowpalwabbit  # noqa: F401
    except ImportError:
        assert "not installed" in vw["skipped"]
    else:
        assert 0.8 * floor < vw["test_log_loss"] < 5 and vw["rows_per_second"] > 0
        assert result["vw_ratio"] == result["mpitrain"]["test_log_loss"] / vw["test_log_loss"]
        assert result["throughput_per_core_vs_vw"] > 0


def test_ceiling_compares_the_job_with_independent_runs(tmp_path, capsys):
    meta_dir = tmp_path / "d"
    make(meta_dir)
    capsys.readouterr()
    result = script("ceiling").main(
        ["--data", str(meta_dir / "train.svm"), "--ranks", "2", "--batch-size", "32",
         "--repeat", "1", "--json", str(tmp_path / "c.json"), "--", "--model", "logistic",
         "--sparse", "on", "--epochs", "2"])
    assert json.loads((tmp_path / "c.json").read_text()) == result
    (repeat,) = result["repeats"]
    assert result["ranks"] == 2 and len(repeat["independent_seconds"]) == 2
    assert repeat["job_seconds"] > 0 and result["ratio"] == pytest.approx(
        np.mean(repeat["independent_seconds"]) / repeat["job_seconds"])
    assert 0 < repeat["job_fastest_seconds"] <= repeat["job_seconds"]
    assert result["ratio_fastest"] == pytest.approx(
        np.mean(repeat["independent_fastest_seconds"]) / repeat["job_fastest_seconds"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("repeat 1: 2 ranks ") and "ratio" in lines[0]
    assert lines[-1].startswith("ceiling ratio (median of 1): ")


@pytest.mark.parametrize("path,optimizer", [("rows", "sgd"), ("full", "momentum")])
def test_step_parts_times_each_part(tmp_path, capsys, path, optimizer):
    make(tmp_path)
    capsys.readouterr()
    result = script("step_parts").main(
        ["--data", str(tmp_path / "train.svm"), "--features", "512", "--batch-size", "8",
         "--steps", "20", "--warmup", "2", "--path", path, "--optimizer", optimizer])
    assert list(result) == ["gradient", "reduction", "optimizer", "step"]
    assert all(0 < fastest <= median for fastest, median in result.values())
    assert capsys.readouterr().out.startswith(
        f"1 rank(s), float32, {optimizer}, path {path}, batch 8, reduce auto: ")


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("reduce", ["auto", "bounded", "per-step", "dense"])
@pytest.mark.parametrize("optimizer", ["momentum", "sgd"])
def test_step_parts_times_each_reduction_path(tmp_path, reduce, optimizer):
    """Each path's whole step on P ranks (what the thresholds are set from)."""
    make(tmp_path)  # (every rank its own copy: the data are deterministic)
    result = script("step_parts").main(
        ["--data", str(tmp_path / "train.svm"), "--features", "512", "--batch-size", "8",
         "--steps", "20", "--warmup", "2", "--reduce", reduce, "--optimizer", optimizer])
    assert all(0 < fastest <= median for fastest, median in result.values())
