"""Sharded checkpoints: reading a rank's slice back (on any number of ranks) and
consolidating the shards into one ordinary checkpoint file.

A sharded checkpoint is a manifest (an ordinary checkpoint file without arrays,
``ckpt-{index:09d}.npz``) whose metadata holds, under :data:`MANIFEST_KEY`::

    {"n": elements of the flat model, "arrays": [names],
     "shards": [{"file": name, "start": int, "stop": int, "sha256": hex}, ...]}

and one shard file per rank of the writing run (:func:`.store.save_shard`) holding
``[start, stop)`` of every named array (all of them of the flat model's length ``n``:
parameters, optimizer state). Reading verifies each shard's own checksum and that it is the
one the manifest recorded, so a shard left by another run is refused. Re-sharding is reading
another ``[start, stop)``: it may span several shards. No MPI, no user-facing wording: problems
raise :class:`~.store.CheckpointError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .store import Checkpoint, CheckpointError, load_checkpoint, write_checkpoint_file

MANIFEST_KEY = "sharded"


def manifest_meta(*, n: int, arrays: list[str], shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's entry: the model's length, the array names, the shards in order."""
    return {MANIFEST_KEY: {"n": int(n), "arrays": sorted(arrays), "shards": shards}}


def is_sharded(checkpoint: Checkpoint) -> bool:
    """Whether ``checkpoint`` is the manifest of a sharded checkpoint."""
    return isinstance(checkpoint.meta.get(MANIFEST_KEY), dict)


def length(checkpoint: Checkpoint) -> int:
    """Elements of the flat model a sharded checkpoint holds."""
    return int(checkpoint.meta[MANIFEST_KEY]["n"])


def read_slice(checkpoint: Checkpoint, start: int, stop: int) -> dict[str, np.ndarray]:
    """``[start, stop)`` of every array of a sharded checkpoint, read from the shards that
    overlap it (each loaded, verified and matched to the manifest)."""
    manifest = checkpoint.meta[MANIFEST_KEY]
    names = list(manifest["arrays"])
    records = [r for r in manifest["shards"] if int(r["start"]) < int(r["stop"])]
    wanted = [r for r in records if int(r["stop"]) > start and int(r["start"]) < stop]
    if not wanted and records:  # an empty slice: the dtypes come from the first shard
        wanted = records[:1]
    out: dict[str, np.ndarray] = {}
    covered = start
    for record in wanted:
        lo, hi = int(record["start"]), int(record["stop"])
        shard = _load_shard(checkpoint.path, record)
        a, b = max(lo, start), min(hi, stop)
        for name in names:
            part = shard.arrays.get(name)
            if part is None or part.shape != (hi - lo,):
                raise CheckpointError(f"checkpoint shard {shard.path}: {name} is missing or "
                                      f"not {hi - lo} elements long")
            if name not in out:
                out[name] = np.empty(stop - start, dtype=part.dtype)
            if a < b:
                out[name][a - start : b - start] = part[a - lo : b - lo]
        covered = max(covered, b)
    if covered < stop:
        raise CheckpointError(f"checkpoint {checkpoint.path}: its shards do not cover "
                              f"elements {covered}..{stop}")
    return out


def _load_shard(manifest_path: Path, record: dict[str, Any]) -> Checkpoint:
    path = Path(manifest_path).parent / str(record["file"])
    shard = load_checkpoint(path)
    if shard.sha256 != record["sha256"]:
        raise CheckpointError(f"checkpoint shard {path} is not the one the manifest "
                              f"{manifest_path} recorded (checksum {shard.sha256[:16]}..., "
                              f"expected {str(record['sha256'])[:16]}...): it was "
                              "replaced by another run")
    return shard


def consolidate(checkpoint: Checkpoint, target: str | os.PathLike[str]) -> Path:
    """Write the whole state of a sharded checkpoint as one ordinary checkpoint file at
    ``target`` (atomically; it resumes on any number of ranks, sharded or not)."""
    arrays = read_slice(checkpoint, 0, length(checkpoint))
    meta = {key: value for key, value in checkpoint.meta.items() if key != MANIFEST_KEY}
    write_checkpoint_file(target, arrays=arrays, meta=meta)
    return Path(target)


def slice_of(checkpoint: Checkpoint, n: int, start: int, stop: int) -> Checkpoint:
    """``checkpoint`` with its arrays of the flat model's length ``n`` cut to
    ``[start, stop)``: read from the shards of a sharded checkpoint, sliced from an
    ordinary one (its other arrays as they are)."""
    if is_sharded(checkpoint):
        if length(checkpoint) != n:
            return checkpoint  # the caller reports the mismatch
        arrays = read_slice(checkpoint, start, stop)
    else:
        arrays = {name: (value[start:stop] if value.shape == (n,) else value)
                  for name, value in checkpoint.arrays.items()}
    return Checkpoint(arrays=arrays, meta=checkpoint.meta, path=checkpoint.path,
                      sha256=checkpoint.sha256)
