"""Checkpoint files: bit-exact round trip, pruning, damage detection, atomic replacement."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mpitrain.checkpoint.policy import find_resume_checkpoint, resolve_resume_path
from mpitrain.checkpoint.store import (
    CHECKPOINT_SUBDIR,
    CHECKSUM_KEY,
    META_KEY,
    Checkpoint,
    CheckpointError,
    CorruptCheckpoint,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from mpitrain.errors import UserError

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]


def sample_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "params": rng.standard_normal(257).astype(np.float32),
        "velocity": rng.standard_normal((3, 5)),
        "dims": np.array([64, 32, 10], dtype=np.int64),
        "rng_words": np.array([2**64 - 1, 0, 2**63 + 5], dtype=np.uint64),
        "scalar": np.array(np.pi),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
    }


def sample_meta(step: int = 0) -> dict:
    rng = np.random.default_rng(7)
    return {
        "version": "0.1.0",
        "ranks": 4,
        "step": step,
        "epoch": 2,
        "config": {"model": "mlp", "hidden": [64, 32], "lr": 0.05, "name": "ünïcode"},
        "rng": rng.bit_generator.state,  # has 128-bit integers
        "loss": float("nan"),
        "nothing": None,
    }


def assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        assert got[name].tobytes() == array.tobytes(), name


def write(directory: Path, index: int, *, keep: int = 10, seed: int = 0) -> Path:
    return save_checkpoint(
        directory, index=index, arrays=sample_arrays(seed), meta=sample_meta(index), keep=keep
    )


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    arrays = sample_arrays()
    meta = sample_meta(50)
    path = save_checkpoint(tmp_path / "ck", index=50, arrays=arrays, meta=meta, keep=3)
    assert path == tmp_path / "ck" / "ckpt-000000050.npz"
    checkpoint = load_checkpoint(path)
    assert isinstance(checkpoint, Checkpoint)
    assert checkpoint.path == path
    assert checkpoint.index == 50
    assert_same_arrays(checkpoint.arrays, arrays)
    # JSON round trip: NaN stays NaN, everything else compares equal
    assert np.isnan(checkpoint.meta.pop("loss"))
    want = dict(meta)
    want.pop("loss")
    assert checkpoint.meta == json.loads(json.dumps(want))
    restored = np.random.default_rng(0)  # another stream, until the saved state is set
    restored.bit_generator.state = checkpoint.meta["rng"]
    assert restored.random() == np.random.default_rng(7).random()


def test_file_is_plain_npz_without_pickle(tmp_path: Path) -> None:
    path = write(tmp_path, 1)
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == set(sample_arrays()) | {META_KEY, CHECKSUM_KEY}
        assert npz[META_KEY].dtype == np.uint8
        meta = json.loads(npz[META_KEY].tobytes().decode("utf-8"))
    assert meta["step"] == 1


def test_loaded_checkpoint_does_not_depend_on_its_file(tmp_path: Path) -> None:
    """Loading reads everything: what was loaded stays intact when the file is then
    replaced or pruned (a resumed run saves and prunes while it holds what it resumed)."""
    path = write(tmp_path, 1, seed=0)
    checkpoint = load_checkpoint(path)
    write(tmp_path, 1, seed=3)  # the same file name, other arrays
    write(tmp_path, 2, keep=1)  # prunes it
    assert not path.exists()
    assert_same_arrays(checkpoint.arrays, sample_arrays(0))
    assert checkpoint.meta["step"] == 1


def test_names_that_clash_with_numpy_keywords_are_fine(tmp_path: Path) -> None:
    arrays = {"file": np.ones(2), "allow_pickle": np.zeros(3), "a/b": np.arange(4)}
    path = save_checkpoint(tmp_path, index=0, arrays=arrays, meta={}, keep=1)
    assert_same_arrays(load_checkpoint(path).arrays, arrays)


@pytest.mark.parametrize(
    "arrays",
    [{"__meta__": np.ones(1)}, {"": np.ones(1)}, {"obj": np.array([None, 1], dtype=object)}],
)
def test_bad_arrays_are_refused_before_writing(tmp_path: Path, arrays: dict) -> None:
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path, index=0, arrays=arrays, meta={}, keep=1)
    assert list(tmp_path.iterdir()) == []


def test_bad_keep_and_index(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep must be >= 1"):
        save_checkpoint(tmp_path, index=0, arrays={}, meta={}, keep=0)
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path, index=-1, arrays={}, meta={}, keep=1)


def test_keep_prunes_oldest(tmp_path: Path) -> None:
    for index in (0, 50, 100, 150, 200):
        write(tmp_path, index, keep=3)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [100, 150, 200]
    write(tmp_path, 250, keep=1)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [250]


def test_saving_an_older_index_drops_the_abandoned_newer_ones(tmp_path: Path) -> None:
    for index in (100, 150, 200):
        write(tmp_path, index)
    write(tmp_path, 120, keep=2)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [100, 120]
    checkpoint, warnings = latest_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.index == 120 and warnings == []


def test_other_files_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "ckpt-12.npz").write_text("not our name pattern")
    for index in range(4):
        write(tmp_path, index, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-000000003.npz",
        "ckpt-12.npz",
        "notes.txt",
    ]


def test_empty_and_missing_directory(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) == (None, [])
    assert latest_checkpoint(tmp_path / "nope") == (None, [])


# --------------------------------------------------------------------------- damage


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def flip_array_byte(path: Path) -> None:
    """Flip a byte inside the data of the 'params' member (past its .npy header)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("params.npy")
    # local header: 30 bytes + name + extra; then the .npy header (128 bytes in practice)
    with open(path, "rb") as handle:
        handle.seek(info.header_offset + 26)
        name_len = int.from_bytes(handle.read(2), "little")
        extra_len = int.from_bytes(handle.read(2), "little")
    flip_byte(path, info.header_offset + 30 + name_len + extra_len + 128 + 17)


def flip_npy_header_byte(path: Path) -> None:
    """Flip a byte of the first member's .npy header (its dtype description)."""
    with zipfile.ZipFile(path) as archive:
        first = archive.infolist()[0]
    with open(path, "rb") as handle:
        handle.seek(first.header_offset + 26)
        name_len = int.from_bytes(handle.read(2), "little")
        extra_len = int.from_bytes(handle.read(2), "little")
    flip_byte(path, first.header_offset + 30 + name_len + extra_len + 12)


def random_bytes(count: int, seed: int) -> bytes:
    """Seeded noise (the same bytes on every run)."""
    return np.random.default_rng(seed).bytes(count)


def garbage(path: Path) -> None:
    path.write_bytes(random_bytes(4096, seed=11))


def empty(path: Path) -> None:
    path.write_bytes(b"")


def garbage_after_zip_magic(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04" + random_bytes(1000, seed=12))


def missing_meta(path: Path) -> None:
    with zipfile.ZipFile(path) as src:
        members = {n: src.read(n) for n in src.namelist() if n != META_KEY + ".npy"}
    with zipfile.ZipFile(path, "w") as dst:
        for name, data in members.items():
            dst.writestr(name, data)


def swapped_array(path: Path) -> None:
    """Replace one member with another valid array: the zip is fine, the checksum is not."""
    with zipfile.ZipFile(path) as src:
        members = {n: src.read(n) for n in src.namelist()}
    other = path.with_suffix(".tmp.npy")
    np.save(other, np.zeros(257, dtype=np.float32))
    members["params.npy"] = other.read_bytes()
    other.unlink()
    with zipfile.ZipFile(path, "w") as dst:
        for name, data in members.items():
            dst.writestr(name, data)


DAMAGES = {
    "truncated": (truncate, "truncated or damaged"),
    "flipped array byte": (flip_array_byte, "damaged"),
    "flipped npy header byte": (flip_npy_header_byte, "damaged"),
    "garbage": (garbage, "not an .npz"),
    "empty": (empty, "empty"),
    "zip magic then garbage": (garbage_after_zip_magic, "truncated or damaged"),
    "missing meta": (missing_meta, "no __meta__ entry"),
    "checksum mismatch": (swapped_array, "checksum mismatch"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_damage_is_detected_and_previous_good_one_used(tmp_path: Path, kind: str) -> None:
    damage, message = DAMAGES[kind]
    write(tmp_path, 100, seed=1)
    bad = write(tmp_path, 150, seed=2)
    damage(bad)
    with pytest.raises(CorruptCheckpoint, match=message) as info:
        load_checkpoint(bad)
    assert str(bad) in str(info.value)
    # the storage layer speaks of files, not options: the policy turns it into a UserError
    assert isinstance(info.value, CheckpointError) and not isinstance(info.value, UserError)

    checkpoint, warnings = latest_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.index == 100
    assert_same_arrays(checkpoint.arrays, sample_arrays(1))
    assert len(warnings) == 2
    assert str(bad) in warnings[0] and message in warnings[0]
    assert "ckpt-000000100.npz" in warnings[1]


def test_every_single_byte_flip_is_caught_or_harmless(tmp_path: Path) -> None:
    """Flip each byte of a small checkpoint in turn: loading either fails with
    CorruptCheckpoint or returns exactly what was saved (e.g. a flipped zip timestamp)."""
    arrays = {"w": np.arange(6, dtype=np.float32), "n": np.array([3], dtype=np.int64)}
    meta = {"step": 3, "config": {"lr": 0.5}}
    path = save_checkpoint(tmp_path, index=3, arrays=arrays, meta=meta, keep=1)
    original = path.read_bytes()
    caught = 0
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        try:
            checkpoint = load_checkpoint(path)
        except CorruptCheckpoint:
            caught += 1
            continue
        assert_same_arrays(checkpoint.arrays, arrays)
        assert checkpoint.meta == meta
    assert caught > len(original) // 2


def test_all_corrupt_gives_none_with_warnings(tmp_path: Path) -> None:
    for index in (1, 2):
        garbage(write(tmp_path, index))
    checkpoint, warnings = latest_checkpoint(tmp_path)
    assert checkpoint is None
    assert len(warnings) == 2


def test_missing_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(CorruptCheckpoint, match="no such file"):
        load_checkpoint(tmp_path / checkpoint_name(3))
    with pytest.raises(CorruptCheckpoint, match="is a directory"):
        load_checkpoint(tmp_path)


# --------------------------------------------------------------------------- resume paths


def test_resolve_resume_path(tmp_path: Path) -> None:
    out = tmp_path / "run"
    ckdir = out / CHECKPOINT_SUBDIR
    path = write(ckdir, 5)
    assert resolve_resume_path(path) == path
    assert resolve_resume_path(out) == ckdir
    assert resolve_resume_path(ckdir) == ckdir
    with pytest.raises(UserError, match="no such checkpoint file or run directory"):
        resolve_resume_path(tmp_path / "missing")


def test_find_resume_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # --resume with no path and nothing there: start fresh
    assert find_resume_checkpoint(None, out) == (None, [])
    ckdir = out / CHECKPOINT_SUBDIR
    write(ckdir, 10)
    garbage(write(ckdir, 20))
    checkpoint, warnings = find_resume_checkpoint(None, out)
    assert checkpoint is not None and checkpoint.index == 10 and len(warnings) == 2
    checkpoint, _ = find_resume_checkpoint(out, tmp_path / "elsewhere")
    assert checkpoint is not None and checkpoint.index == 10
    # an explicit file must load: no fallback
    with pytest.raises(UserError, match=f"checkpoint {ckdir / checkpoint_name(20)}: "):
        find_resume_checkpoint(ckdir / checkpoint_name(20), out)
    # an explicit directory must hold a usable checkpoint
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(UserError, match="no usable checkpoint"):
        find_resume_checkpoint(tmp_path / "emptydir", out)


# --------------------------------------------------------------------------- atomicity

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from mpitrain.checkpoint import store as checkpoints

    directory, index = sys.argv[1], int(sys.argv[2])

    def die_before_rename(src, dst):
        # the temp file is complete and fsynced here; the rename never happens
        assert os.path.getsize(src) > 0, src
        os.kill(os.getpid(), signal.SIGKILL)

    os.replace = die_before_rename
    checkpoints.save_checkpoint(
        directory, index=index, keep=2,
        arrays={"params": np.full(100_000, 7.0)}, meta={"step": index},
    )
    print("not reached")
    """
)


def test_kill_between_write_and_rename_leaves_old_checkpoint(tmp_path: Path) -> None:
    good = write(tmp_path, 100)
    before = good.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), "150"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "not reached" not in proc.stdout
    # the killed writer left its temp file but no ckpt-000000150.npz
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert "ckpt-000000150.npz" not in leftovers
    temps = [name for name in leftovers if name.endswith(".tmp")]
    assert len(temps) == 1
    assert [i for i, _ in list_checkpoints(tmp_path)] == [100]
    checkpoint, warnings = latest_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.index == 100 and warnings == []
    assert good.read_bytes() == before
    # the next successful save cleans the stale temp file up
    write(tmp_path, 150, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-000000100.npz",
        "ckpt-000000150.npz",
    ]


def test_failed_write_removes_temp_and_keeps_old(tmp_path: Path, monkeypatch) -> None:
    write(tmp_path, 1)

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write(tmp_path, 2)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000001.npz"]
