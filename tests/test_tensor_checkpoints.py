"""--tensor-parallel checkpoints, end to end like users: each rank writes its slice (a
manifest plus a shard per rank, in the full model's layout), the final model.npz is one
ordinary file of full tensors that predict loads, and --resume re-shards T 2 -> 1 (and
onto another rank count) with the same model as an uninterrupted run."""

from __future__ import annotations

import numpy as np
import pytest
from cli_runner import model_of, run_train

from mpitrain import load_model, predict
from mpitrain.checkpoint.store import load_checkpoint, shard_name

pytestmark = pytest.mark.timeout(600)

COMMON = ["--data", "synthetic", "--samples", "203", "--features", "7", "--classes", "3",
          "--dtype", "float64", "--model", "mlp", "--hidden", "12,6", "--optimizer", "adam",
          "--lr", "0.01", "--batch-size", "32", "--quiet"]


def test_sliced_checkpoints_resume_from_t2_onto_t1(tmp_path):
    first, resumed, straight = tmp_path / "first", tmp_path / "resumed", tmp_path / "straight"
    done = run_train([*COMMON, "--epochs", "2", "--tensor-parallel", "2", "--out",
                      str(first)], ranks=2, timeout=300)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (first / "checkpoints").iterdir())
    assert names == ["ckpt-000000012.npz", *(shard_name(12, r, 2) for r in range(2))]
    assert load_checkpoint(first / "checkpoints" / names[0]).arrays == {}
    full = model_of(first)
    assert full["W0"].shape == (7, 12) and full["W1"].shape == (12, 6)
    saved = load_model(first / "model.npz")
    X = np.random.default_rng(1).standard_normal((5, 7))
    assert predict(saved, X).shape == (5,)

    done = run_train([*COMMON, "--epochs", "4", "--resume", str(first), "--out",
                      str(resumed)], ranks=3, timeout=300)
    assert done.returncode == 0, done.stderr
    done = run_train([*COMMON, "--epochs", "4", "--out", str(straight)], ranks=2,
                     timeout=300)
    assert done.returncode == 0, done.stderr
    got, want = model_of(resumed), model_of(straight)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-9)
    # and back: an unsplit checkpoint resumes split, on 4 ranks (T = 2, two replicas)
    again = tmp_path / "again"
    done = run_train([*COMMON, "--epochs", "5", "--resume", str(straight), "--out",
                      str(again), "--tensor-parallel", "2"], ranks=4, timeout=300)
    assert done.returncode == 0, done.stderr
    done = run_train([*COMMON, "--epochs", "5", "--out", str(straight), "--overwrite"],
                     ranks=2, timeout=300)
    assert done.returncode == 0, done.stderr
    for name, value in model_of(again).items():
        np.testing.assert_allclose(value, model_of(straight)[name], rtol=1e-9, atol=1e-9)
