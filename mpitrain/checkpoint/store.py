"""Training checkpoints: atomic, self-checking ``.npz`` files, and finding one to resume from.

No MPI and no user-facing wording in here (that is :mod:`.policy`'s): rank 0 calls
:func:`save_checkpoint`, any rank may load; problems raise :class:`CheckpointError`.

A checkpoint is ``DIR/ckpt-{index:09d}.npz``, a zip of ``.npy`` members that loads with
``np.load(allow_pickle=False)``:

- one member per array (the names given by the caller; names starting with ``__`` are
  reserved),
- ``__meta__``: UTF-8 JSON of the caller's metadata (config, step, RNG states, version, ...)
  as a 1-D uint8 array,
- ``__sha256__``: 32 bytes, the SHA-256 of the metadata and of every array's name, dtype,
  shape and bytes, so a file whose members are intact zip-wise but do not belong together
  (or were damaged past the zip CRC) is caught.

A sharded checkpoint (sharded training: every rank saves its own slice) is one small
manifest under the same name, ``ckpt-{index:09d}.npz`` (no arrays; its metadata lists
the shards), plus one file per rank, ``ckpt-{index:09d}.shard-{rank:05d}-of-{P:05d}.npz``
in the same format (:func:`save_shard`), each written atomically by its rank before the
manifest is; :mod:`.sharded` reads them back.

A file appears under its final name only once it is complete and on disk (temp file in the
same directory, fsync, ``os.replace``, fsync of the directory), so a job killed while
writing leaves the previous checkpoint as the newest complete one. :func:`latest_checkpoint`
still checks every candidate and falls back past damaged ones (a file system may lose data
that a crash was meant not to).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHECKPOINT_SUBDIR = "checkpoints"
"""Where a run keeps its checkpoints: ``OUT/checkpoints/``."""

META_KEY = "__meta__"
CHECKSUM_KEY = "__sha256__"
_RESERVED_PREFIX = "__"
_NAME_RE = re.compile(r"^ckpt-(\d{9,})\.npz$")
_TEMP_PREFIX = ".ckpt-"
_TEMP_SUFFIX = ".npz.tmp"
_HASH_DOMAIN = b"mpitrain-checkpoint-v1\0"
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(Exception):
    """A checkpoint that cannot be found or used; the message names the file."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint file that cannot be used: unreadable, truncated, damaged or foreign."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded and verified checkpoint."""

    arrays: dict[str, np.ndarray]
    meta: dict
    path: Path
    sha256: str = ""  # hex of the stored checksum (what a manifest records of a shard)

    @property
    def index(self) -> int | None:
        """The index in the file name (``ckpt-000000050.npz`` -> 50), None if renamed."""
        return checkpoint_index(self.path)


def checkpoint_name(index: int) -> str:
    """File name of checkpoint ``index``: ``ckpt-000000050.npz``."""
    return f"ckpt-{index:09d}.npz"


def shard_name(index: int, rank: int, ranks: int) -> str:
    """File name of rank ``rank``'s shard of checkpoint ``index`` written by ``ranks``
    ranks: ``ckpt-000000050.shard-00001-of-00004.npz``."""
    return f"ckpt-{index:09d}.shard-{rank:05d}-of-{ranks:05d}.npz"


def checkpoint_index(path: str | os.PathLike[str]) -> int | None:
    """Index encoded in a checkpoint file name, or None for any other name."""
    match = _NAME_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(index, path)`` of every file named like a checkpoint in ``directory``, oldest first.

    Only names are looked at (nothing is loaded); a missing directory has none.
    """
    root = Path(directory)
    try:
        names = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        index = checkpoint_index(name)
        if index is not None:
            found.append((index, root / name))
    found.sort()
    return found


def _checksum(meta_bytes: bytes, arrays: Mapping[str, np.ndarray]) -> bytes:
    """SHA-256 over the metadata and every array's name, dtype, shape and raw bytes.

    Lengths are hashed before variable-length fields so no two different contents hash the
    same stream; arrays go in sorted name order so the digest does not depend on dict order.
    """
    digest = hashlib.sha256(_HASH_DOMAIN)

    def field(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)

    field(meta_bytes)
    digest.update(len(arrays).to_bytes(8, "little"))
    for name in sorted(arrays):
        array = arrays[name]
        field(name.encode("utf-8"))
        field(array.dtype.str.encode("ascii"))
        field(repr(tuple(int(n) for n in array.shape)).encode("ascii"))
        flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        digest.update(flat.size.to_bytes(8, "little"))
        digest.update(flat)
    return digest.digest()


def _fsync_directory(directory: Path) -> None:
    """Make a rename or creation in ``directory`` durable.

    Best effort: some file systems (and all of Windows) cannot fsync a directory.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _prepare_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check names and dtypes up front so a bad call fails before anything is written."""
    prepared: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"checkpoint array names must be non-empty strings (got {name!r})")
        if name.startswith(_RESERVED_PREFIX):
            raise ValueError(f"checkpoint array name {name!r} is reserved (starts with '__')")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise ValueError(f"checkpoint array {name!r} has dtype object; it cannot be stored")
        prepared[name] = array
    return prepared


def _write_member(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with archive.open(name + ".npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, array, allow_pickle=False)


def save_checkpoint(
    directory: str | os.PathLike[str],
    *,
    index: int,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, object],
    keep: int,
) -> Path:
    """Write ``directory/ckpt-{index:09d}.npz`` atomically and prune old checkpoints.

    ``meta`` must be JSON-serialisable (tuples come back as lists). After the write, the
    directory keeps the ``keep`` newest checkpoints up to ``index``; checkpoints with a
    higher index are removed too: they belong to a run that this one resumed before, and
    would otherwise shadow the new ones on the next resume. Shards of removed checkpoints
    go with them. Temp files left by a writer that was killed are removed. Returns the
    path written.
    """
    _check_index(index)
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (got {keep})")
    root = Path(directory)
    started = time.time()
    target = root / checkpoint_name(int(index))
    write_checkpoint_file(target, arrays=arrays, meta=meta)
    _prune(root, newest=int(index), keep=keep, started=started)
    return target


def save_shard(
    directory: str | os.PathLike[str],
    *,
    index: int,
    rank: int,
    ranks: int,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, object],
) -> tuple[Path, str]:
    """Write rank ``rank``'s shard of checkpoint ``index`` atomically (nothing is pruned:
    the manifest's writer does that); returns its path and checksum (hex)."""
    _check_index(index)
    target = Path(directory) / shard_name(int(index), rank, ranks)
    return target, write_checkpoint_file(target, arrays=arrays, meta=meta)


def _check_index(index: object) -> None:
    if not isinstance(index, int | np.integer) or index < 0:
        raise ValueError(f"checkpoint index must be an integer >= 0 (got {index!r})")


def write_checkpoint_file(
    target: str | os.PathLike[str],
    *,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, object],
) -> str:
    """Write one checkpoint file at ``target`` atomically (temp file in the same
    directory, fsync, rename, fsync of the directory); returns its checksum (hex)."""
    prepared = _prepare_arrays(arrays)
    meta_bytes = json.dumps(dict(meta), sort_keys=True, ensure_ascii=False).encode("utf-8")
    digest = _checksum(meta_bytes, prepared)
    target = Path(target)
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=root, prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
                for name, array in prepared.items():
                    _write_member(archive, name, array)
                _write_member(archive, META_KEY, np.frombuffer(meta_bytes, dtype=np.uint8))
                _write_member(archive, CHECKSUM_KEY, np.frombuffer(digest, dtype=np.uint8))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(root)
    return digest.hex()


def _prune(root: Path, *, newest: int, keep: int, started: float) -> None:
    """Remove checkpoints other than the ``keep`` newest up to ``newest``, and stale temps."""
    older = []
    removed = []
    for index, path in list_checkpoints(root):
        if index > newest:
            removed.append(path)
        elif index < newest:
            older.append(path)
    removed += older[: max(0, len(older) - (keep - 1))]
    for path in removed:
        path.unlink(missing_ok=True)
        for shard in root.glob(path.name[: -len(".npz")] + ".shard-*.npz"):
            shard.unlink(missing_ok=True)
    for path in root.glob(_TEMP_PREFIX + "*" + _TEMP_SUFFIX):
        try:
            if path.stat().st_mtime < started:
                path.unlink()
        except OSError:
            pass


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load and verify one checkpoint file.

    Raises :class:`CorruptCheckpoint`, naming the file and the problem, when it is missing,
    unreadable, empty, not a zip, truncated, lacks an entry or fails its checksum.
    """
    path = Path(path)

    def corrupt(problem: str) -> CorruptCheckpoint:
        return CorruptCheckpoint(f"checkpoint {path}: {problem}")

    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        raise corrupt("no such file") from None
    except IsADirectoryError:
        raise corrupt("is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise corrupt(f"cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise corrupt("is empty (0 bytes)")
    if head != _ZIP_MAGIC:
        raise corrupt("is not an .npz (zip) file")

    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            for name in names:
                arrays[name] = npz[name]
    except zipfile.BadZipFile as exc:
        raise corrupt(f"is truncated or damaged ({size} bytes; zip: {exc})") from None
    except Exception as exc:  # whatever a damaged member makes numpy or zipfile raise
        raise corrupt(f"is damaged ({type(exc).__name__}: {exc})") from None
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise corrupt(f"entry {name!r} is not an .npy array")

    for key in (META_KEY, CHECKSUM_KEY):
        if key not in arrays:
            raise corrupt(f"has no {key} entry (incomplete, or not written by mpitrain)")
    meta_array = arrays.pop(META_KEY)
    stored = arrays.pop(CHECKSUM_KEY)
    if meta_array.dtype != np.uint8 or meta_array.ndim != 1:
        raise corrupt(f"{META_KEY} is not a 1-D uint8 array")
    if stored.dtype != np.uint8 or stored.shape != (32,):
        raise corrupt(f"{CHECKSUM_KEY} is not 32 bytes")
    meta_bytes = meta_array.tobytes()
    computed = _checksum(meta_bytes, arrays)
    if computed != stored.tobytes():
        raise corrupt(
            f"checksum mismatch (stored {stored.tobytes().hex()[:16]}..., "
            f"computed {computed.hex()[:16]}...): the file was modified or damaged"
        )
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise corrupt(f"{META_KEY} is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise corrupt(f"{META_KEY} is not a JSON object")
    return Checkpoint(arrays=arrays, meta=meta, path=path, sha256=computed.hex())


def latest_checkpoint(
    directory: str | os.PathLike[str],
) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint in ``directory`` that loads and verifies, and warnings.

    Damaged newer checkpoints are skipped, each described by one warning (for the caller
    to print), so training resumes from the last good one. ``(None, warnings)`` when there
    is no usable checkpoint (or no directory).
    """
    warnings: list[str] = []
    for _, path in reversed(list_checkpoints(directory)):
        try:
            checkpoint = load_checkpoint(path)
        except CorruptCheckpoint as exc:
            warnings.append(f"skipping {exc}")
            continue
        if warnings:
            warnings.append(f"resuming from the older checkpoint {path}")
        return checkpoint, warnings
    return None, warnings
