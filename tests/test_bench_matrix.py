"""``mpitrain bench matrix`` on its tiny points: it runs the default, the explicit variants
and the ceiling workers, and writes well-formed JSON (and the PNG); the grid covers the
issue's matrix; its options are checked. No timing assertions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_runner import run_mpi
from mpi4py import MPI

from mpitrain.bench.matrix import (
    MATRIX,
    QUICK,
    VARIANTS,
    blas_step_seconds,
    default_update_slice,
    point_rows,
)
from mpitrain.bench.train import kernel_step_seconds

pytestmark = pytest.mark.timeout(300)

POINT_KEYS = {"name", "features", "hidden", "classes", "rows_per_rank", "dtype", "parameters",
              "gradient_bytes", "steps_per_epoch", "blas_seconds", "kernel_seconds",
              "kernel_updates",
              "blas_vs_kernel", "blas_vs_compute", "variants", "ceiling",
              "default_samples_per_second", "best", "best_samples_per_second",
              "default_vs_best", "vs_ceiling"}


def test_bench_matrix_quick_runs_every_variant_and_the_ceiling(tmp_path):
    out, png = tmp_path / "results" / "matrix.json", tmp_path / "results" / "matrix.png"
    done = run_mpi(["-m", "mpitrain", "bench", "matrix", "--quick", "--repeats", "1",
                    "--variants", "mpi,overlap,fp16,shared-update", "--json", str(out),
                    "--plot", str(png)],
                   ranks=2, timeout=240)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert set(doc) == {"ranks", "mpi_library", "mpitrain_version", "cpus", "load_average",
                        "settings", "defaults", "points"}
    assert doc["ranks"] == 2 and len(doc["load_average"]) == 2
    assert doc["settings"]["variants"] == ["mpi", "overlap", "fp16", "shared-update"]
    assert [p["name"] for p in doc["points"]] == [p.name for p in QUICK]
    for point, spec in zip(doc["points"], QUICK, strict=True):
        assert set(point) == POINT_KEYS
        assert point["parameters"] == spec.parameters
        assert point["gradient_bytes"] == spec.parameters * np.dtype(spec.dtype).itemsize
        assert point["blas_seconds"] > 0 and point["kernel_seconds"] > 0
        assert point["kernel_updates"] == "all"  # tiny: the default is an allreduce
        assert set(point["variants"]) == {"default", "mpi", "overlap", "fp16", "shared-update"}
        timed = {n: v for n, v in point["variants"].items() if "skipped" not in v}
        for variant in timed.values():
            assert len(variant["runs"]) == 1
            assert variant["samples_per_second"] == variant["runs"][0] > 0
            assert variant["step_seconds"] > 0
        if spec.dtype == "float64":  # 16-bit transport needs float32: skipped, saying why
            assert "--dtype float32" in point["variants"]["fp16"]["skipped"]
            assert set(timed) == {"default", "mpi", "overlap", "shared-update"}
        else:
            assert set(timed) == {"default", "mpi", "overlap", "fp16", "shared-update"}
        others = {n: v["samples_per_second"] for n, v in timed.items() if n != "default"}
        assert point["best"] == max(others, key=others.get)
        assert point["best_samples_per_second"] == others[point["best"]]
        default = point["default_samples_per_second"]
        assert default == timed["default"]["samples_per_second"]
        assert point["default_vs_best"] == round(default / others[point["best"]], 3)
        ceiling = point["ceiling"]
        assert ceiling["samples_per_second"] > 0 and len(ceiling["runs"]) == 1
        assert point["vs_ceiling"] == round(default / ceiling["samples_per_second"], 3)
    assert "# bench matrix: 2 ranks" in done.stdout and f"wrote {out}" in done.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "--plot skipped" in done.stdout
        return
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_matrix_covers_the_issue_workloads():
    sizes = [p.parameters for p in MATRIX]
    assert min(sizes) <= 15_000 and max(sizes) >= 9_000_000
    assert {min(p.features for p in MATRIX), max(p.features for p in MATRIX)} == {16, 1024}
    assert {len(p.hidden) for p in MATRIX} == {1, 2, 3}
    assert {min(p.rows_per_rank for p in MATRIX), max(p.rows_per_rank for p in MATRIX)} == \
        {32, 512}
    assert {p.dtype for p in MATRIX} == {"float32", "float64"}
    assert len({p.name for p in MATRIX}) == len(MATRIX)
    assert MATRIX[1].dims == [64, 128, 10] and MATRIX[1].parameters == 64 * 128 + 128 + 1290


def test_point_rows_are_the_same_in_the_job_and_in_a_worker():
    point = QUICK[1]
    X, y = point_rows(point, rank=1, rows=5, seed=3)
    X2, y2 = point_rows({"features": 8, "hidden": [8, 8], "rows_per_rank": 8,
                         "dtype": "float64", "classes": 10}, rank=1, rows=5, seed=3)
    assert X.dtype == np.float64 and X.shape == (5, 8) and y.dtype == np.int64
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(X, point_rows(point, rank=0, rows=5, seed=3)[0])


def test_blas_step_seconds_times_the_step_shapes():
    seconds = blas_step_seconds(MPI.COMM_SELF, dims=[8, 16, 4], dtype=np.dtype(np.float32),
                                batch=4, steps=5, seed=0)
    assert 0 < seconds < 1


@pytest.mark.parametrize(("flags", "message"), [
    (["--variants", "mpi,nope"], "--variants: unknown variant 'nope'"),
    (["--points", "7"], "--points must be indices 0..1 (got '7')"),
    (["--repeats", "0"], "--repeats must be >= 1 (got 0)"),
])
def test_bad_options_are_one_error(flags, message):
    done = run_mpi(["-m", "mpitrain", "bench", "matrix", "--quick", *flags], ranks=2,
                   timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("mpitrain: error:") == 1 and message in done.stderr, done.stderr
    assert set(VARIANTS) >= {"mpi", "overlap", "fp16"}


def test_shared_update_is_a_variant_and_the_kernel_probe_updates_the_slice():
    assert VARIANTS["shared-update"] == {"reduce": "shared-update"}
    assert default_update_slice(MATRIX[-1], MPI.COMM_SELF) is None  # one rank: all
    assert kernel_step_seconds(MPI.COMM_SELF, dims=[8, 8, 3], model="mlp",
                               dtype=np.dtype(np.float32), seed=0, rows=16, batch=8,
                               steps=5, update=(20, 60)) > 0
