"""Sharded checkpoints (--shard): the shard files and manifest (store level, no MPI), and
end to end like users: write on 4 ranks, resume on 2 (re-sharded) with the same model as an
uninterrupted run, consolidate into one ordinary file, refuse damaged or foreign shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_runner import model_of, run_mpi, run_train

from mpitrain.checkpoint import sharded
from mpitrain.checkpoint.store import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_shard,
    shard_name,
)
from mpitrain.collectives.ring import chunk_offsets

pytestmark = pytest.mark.timeout(600)


def write_sharded(directory: Path, index: int, full: dict[str, np.ndarray], ranks: int,
                  *, keep: int = 3) -> Path:
    """What the ranks of a sharded run write: a shard each, then the manifest."""
    n = next(iter(full.values())).size
    off = chunk_offsets(n, ranks)
    records = []
    for rank in range(ranks):
        part = {k: v[off[rank] : off[rank + 1]] for k, v in full.items()}
        path, digest = save_shard(directory, index=index, rank=rank, ranks=ranks,
                                  arrays=part, meta={"shard": rank})
        records.append({"file": path.name, "start": off[rank], "stop": off[rank + 1],
                        "sha256": digest})
    meta = {"next_unit": index, **sharded.manifest_meta(n=n, arrays=list(full),
                                                        shards=records)}
    return save_checkpoint(directory, index=index, arrays={}, meta=meta, keep=keep)


def state(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"params": rng.standard_normal(n), "optimizer.m": rng.standard_normal(n)}


@pytest.mark.parametrize("n,ranks", [(10, 4), (3, 5), (101, 3)])
def test_any_slice_reads_back_across_shards(tmp_path, n, ranks):
    full = state(n)
    manifest = load_checkpoint(write_sharded(tmp_path, 7, full, ranks))
    assert sharded.is_sharded(manifest) and sharded.length(manifest) == n
    for new_ranks in (1, 2, 3, 4):
        off = chunk_offsets(n, new_ranks)
        for r in range(new_ranks):
            got = sharded.read_slice(manifest, off[r], off[r + 1])
            for name, value in full.items():
                assert (got[name] == value[off[r] : off[r + 1]]).all()
                assert got[name].dtype == value.dtype


def test_consolidate_writes_one_ordinary_checkpoint(tmp_path):
    full = state(33)
    manifest = load_checkpoint(write_sharded(tmp_path / "checkpoints", 5, full, 4))
    out = sharded.consolidate(manifest, tmp_path / "one.npz")
    one = load_checkpoint(out)
    assert not sharded.is_sharded(one) and one.meta["next_unit"] == 5
    for name, value in full.items():
        assert (one.arrays[name] == value).all()


def test_a_damaged_or_foreign_shard_is_refused(tmp_path):
    manifest = load_checkpoint(write_sharded(tmp_path, 3, state(20), 2))
    # another run's shard under the same name: intact, but not the recorded one
    save_shard(tmp_path, index=3, rank=1, ranks=2, arrays=state(20, seed=1),
               meta={"shard": 1})
    with pytest.raises(CheckpointError, match="is not the one the manifest"):
        sharded.read_slice(manifest, 0, 20)
    assert sharded.read_slice(manifest, 0, 10)["params"].size == 10  # shard 0 is fine
    (tmp_path / shard_name(3, 1, 2)).write_bytes(b"PK\x03\x04 damaged")
    with pytest.raises(CheckpointError, match=r"damaged|truncated"):
        sharded.read_slice(manifest, 5, 15)


def test_pruning_removes_the_shards_of_pruned_checkpoints(tmp_path):
    for index in (1, 2, 3):
        write_sharded(tmp_path, index, state(9), 2, keep=2)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert sorted(p.name for p in tmp_path.glob("*.shard-*")) == [
        shard_name(i, r, 2) for i in (2, 3) for r in (0, 1)]


# -- end to end ----------------------------------------------------------------------------

COMMON = ["--data", "synthetic", "--samples", "403", "--features", "7", "--classes", "3",
          "--dtype", "float64", "--model", "mlp", "--hidden", "16,8", "--optimizer", "adam",
          "--lr", "0.01", "--batch-size", "32", "--quiet"]


def test_write_on_4_ranks_resume_resharded_on_2_consolidate(tmp_path):
    first, resumed, straight = tmp_path / "first", tmp_path / "resumed", tmp_path / "straight"
    done = run_train([*COMMON, "--epochs", "2", "--shard", "optimizer", "--out", str(first)],
                     ranks=4, timeout=300)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (first / "checkpoints").iterdir())
    assert names == ["ckpt-000000022.npz", *(shard_name(22, r, 4) for r in range(4))]
    manifest = load_checkpoint(first / "checkpoints" / names[0])
    assert manifest.arrays == {}  # nothing of the model gathered on rank 0
    assert (first / "model.npz").is_file()  # the final model is still one ordinary file

    done = run_train([*COMMON, "--epochs", "4", "--shard", "optimizer", "--resume",
                      str(first), "--out", str(resumed)], ranks=2, timeout=300)
    assert done.returncode == 0, done.stderr
    done = run_train([*COMMON, "--epochs", "4", "--out", str(straight)], ranks=2, timeout=300)
    assert done.returncode == 0, done.stderr
    got, want = model_of(resumed), model_of(straight)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12)

    done = run_mpi(["-m", "mpitrain", "checkpoint", "consolidate", str(first)], ranks=1)
    assert done.returncode == 0, done.stderr
    one = first / "consolidated-ckpt-000000022.npz"
    assert f"into {one}" in done.stdout
    whole = load_checkpoint(one)
    assert whole.arrays["params"].size == sharded.length(manifest)
    # the consolidated file resumes like any checkpoint (unsharded, another rank count)
    again = tmp_path / "again"
    done = run_train([*COMMON, "--epochs", "4", "--resume", str(one), "--out", str(again)],
                     ranks=3, timeout=300)
    assert done.returncode == 0, done.stderr
    for name, value in model_of(again).items():
        np.testing.assert_allclose(value, want[name], rtol=1e-12, atol=1e-12)

    done = run_mpi(["-m", "mpitrain", "checkpoint", "consolidate", str(straight)], ranks=2)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"mpitrain: error: checkpoint consolidate: {straight}/checkpoints/"
        "ckpt-000000044.npz is not sharded (it is already one ordinary file)")


def test_same_layout_resume_is_bit_identical_and_a_missing_shard_is_one_error(tmp_path):
    run, resumed, straight = tmp_path / "run", tmp_path / "resumed", tmp_path / "straight"
    done = run_train([*COMMON, "--epochs", "1", "--shard", "gradients", "--out", str(run)],
                     ranks=2, timeout=300)
    assert done.returncode == 0, done.stderr
    for out, extra in ((resumed, ["--resume", str(run)]), (straight, [])):
        done = run_train([*COMMON, "--epochs", "2", "--shard", "gradients", "--out", str(out),
                          *extra], ranks=2, timeout=300)
        assert done.returncode == 0, done.stderr
    got, want = model_of(resumed), model_of(straight)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    (run / "checkpoints" / shard_name(11, 1, 2)).unlink()
    done = run_train([*COMMON, "--epochs", "2", "--shard", "gradients", "--resume",
                      "--out", str(run)], ranks=2, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpitrain: error: --resume: checkpoint ")
    assert "no such file" in lines[0]
