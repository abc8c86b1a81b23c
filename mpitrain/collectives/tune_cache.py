"""The tuning cache: which reduction measured fastest here, per communicator shape and size.

``python -m mpitrain tune`` (and a training run's ``--tune auto`` on a miss) times the
candidate reductions on the machine it runs on (:mod:`.tuning`) and stores the fastest in
one JSON file, ``tune.json`` in the user's cache directory: ``$MPITRAIN_CACHE_DIR`` if
set, else ``$XDG_CACHE_HOME/mpitrain``, else ``~/.cache/mpitrain``. An entry holds for one
key (:class:`Shape` plus dtype, size bucket and buffer kind):

- ``mpi_library``: the first line of ``MPI_Get_library_version`` (library and version),
  ``mpitrain_version`` and ``machine`` (the CPU model and its core count, as rank 0 sees
  them): another library, release or machine is a miss, so the table decides until it is
  measured again;
- ``ranks_per_node`` (e.g. ``[2]``, ``[2, 2]``; the number of nodes is its length) and
  ``shared_memory`` (whether the shared-memory transports may be used): another
  communicator shape is a miss;
- ``dtype``, ``bytes`` (the size bucket: the message size rounded to the nearest power of
  two, :func:`bucket`) and ``buffer`` (``persistent``: an
  :class:`~mpitrain.collectives.Allreducer`, what training uses).

File format (``"format": "mpitrain-tune", "version": 1``)::

    {"format": "mpitrain-tune", "version": 1,
     "entries": [{"mpi_library": "MPICH Version: 5.0.2", "mpitrain_version": "0.1.0",
                  "machine": "AMD EPYC ... x2", "ranks_per_node": [2],
                  "shared_memory": true, "dtype": "float32", "bytes": 4194304,
                  "buffer": "persistent", "choice": "ring", "table": "ring",
                  "median_us": {"shm": 1650.2, "ring": 610.4, ...},
                  "repeats": 5, "measured": "2026-11-30T01:40:00Z",
                  "load_average": 0.4}, ...]}

(``load_average``: rank 0's one-minute load average when it was measured; a busy machine
makes the choice reflect that load.)

Only rank 0 touches the file: it reads it once per communicator and broadcasts the entries
of that communicator's shape with buffer calls (:func:`load`), so every rank looks up the
same entries and picks the same algorithm. A file that cannot be read, is not JSON, or is
not this format and version is ignored with one note on rank 0's stderr (the table decides);
it is replaced by the next write. Writes merge with the entries of other shapes and replace
the file atomically (temporary file and rename); two jobs writing at once keep the last
writer's entries, never a torn file. A file that cannot be written is a note, not an error.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

FORMAT = "mpitrain-tune"
VERSION = 1
FILE_NAME = "tune.json"
BUFFERS = ("persistent",)
# The fields of an entry that make its key (besides the Shape's).
_SIZE_KEY = ("dtype", "bytes", "buffer")


def cache_dir() -> Path:
    """Where the tuning cache lives: ``$MPITRAIN_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/mpitrain``, else ``~/.cache/mpitrain``."""
    override = os.environ.get("MPITRAIN_CACHE_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "mpitrain"
    try:
        return Path.home() / ".cache" / "mpitrain"
    except RuntimeError:  # no home directory known: a per-user directory in /tmp
        return Path(tempfile.gettempdir()) / f"mpitrain-cache-{os.getuid()}"


def cache_path() -> Path:
    """The tuning cache file."""
    return cache_dir() / FILE_NAME


def bucket(nbytes: int) -> int:
    """The size bucket of a message of ``nbytes``: the nearest power of two (on a log
    scale; 3 MiB → 4 MiB, 2.5 MiB → 2 MiB)."""
    if nbytes <= 1:
        return 1
    return 1 << round(math.log2(nbytes))


def library() -> str:
    """The MPI library and its version: the first line of ``MPI_Get_library_version``,
    spaces collapsed."""
    first = MPI.Get_library_version().strip().splitlines()[0]
    return " ".join(first.split())


def machine() -> str:
    """The CPU model and core count of this machine (``uname -m`` when no model is known)."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.lower().startswith(("model name", "cpu model")):
                    model = " ".join(line.split(":", 1)[1].split())
                    if model:
                        break
    except OSError:
        pass
    return f"{model or os.uname().machine} x{os.cpu_count() or 1}"


@dataclass(frozen=True)
class Shape:
    """What a measurement holds for, besides the message: the library, the machine and the
    communicator's shape. The same on every rank (rank 0's library and machine)."""

    mpi_library: str
    mpitrain_version: str
    machine: str
    ranks_per_node: tuple[int, ...]
    shared_memory: bool

    def as_dict(self) -> dict[str, Any]:
        return {"mpi_library": self.mpi_library, "mpitrain_version": self.mpitrain_version,
                "machine": self.machine, "ranks_per_node": list(self.ranks_per_node),
                "shared_memory": self.shared_memory}

    def holds(self, entry: dict[str, Any]) -> bool:
        """Whether ``entry`` was measured on this shape."""
        mine = self.as_dict()
        return all(entry.get(name) == value for name, value in mine.items())

    def describe(self) -> str:
        sizes = self.ranks_per_node
        nodes = (f"{len(sizes)}x{sizes[0]}" if len(set(sizes)) == 1
                 else "+".join(map(str, sizes)))
        memory = "shared memory" if self.shared_memory else "MPI messages only"
        return f"{nodes} (nodes x ranks), {memory}, {self.mpi_library}"


def _size_key(dtype: str, nbytes: int, buffer: str) -> tuple[str, int, str]:
    return dtype, bucket(nbytes), buffer


class TuneCache:
    """The entries of one shape, the same on every rank (:func:`load`), and where they are
    stored. :meth:`lookup` is local; :meth:`store` writes the file from rank 0."""

    def __init__(self, shape: Shape, entries: list[dict[str, Any]], path: Path) -> None:
        self.shape, self.path = shape, path
        self._entries = {_size_key(e["dtype"], e["bytes"], e["buffer"]): e for e in entries}

    def lookup(self, dtype: str, nbytes: int, buffer: str = "persistent",
               ) -> dict[str, Any] | None:
        """The entry for a message of ``nbytes`` (its bucket), or None (a miss)."""
        return self._entries.get(_size_key(dtype, nbytes, buffer))

    def entries(self) -> list[dict[str, Any]]:
        return list(self._entries.values())

    def store(self, comm: MPI.Comm, new: list[dict[str, Any]]) -> str | None:
        """Add measured entries (every rank passes the same ones: rank 0 writes the file);
        on rank 0, a note when the file could not be written, else None."""
        for entry in new:
            self._entries[_size_key(entry["dtype"], entry["bytes"], entry["buffer"])] = entry
        if comm.Get_rank() != 0:
            return None
        return write_entries(self.path, self.shape, new)


def entry_of(shape: Shape, *, dtype: str, nbytes: int, buffer: str, choice: str, table: str,
             median_us: dict[str, float], repeats: int, measured: str, load: float,
             ) -> dict[str, Any]:
    """One cache entry (the module docstring's format)."""
    return {**shape.as_dict(), "dtype": dtype, "bytes": bucket(nbytes), "buffer": buffer,
            "choice": choice, "table": table,
            "median_us": {name: round(value, 2) for name, value in median_us.items()},
            "repeats": repeats, "measured": measured, "load_average": round(load, 2)}


def read_entries(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """Every well-formed entry of the cache file and a note when the file had to be
    ignored (missing: no entries, no note)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], None
    except (OSError, UnicodeDecodeError) as exc:
        return [], f"cannot read it ({getattr(exc, 'strerror', None) or exc})"
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], f"not JSON ({exc.msg} at line {exc.lineno})"
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return [], f"not a {FORMAT} file"
    if document.get("version") != VERSION:
        return [], f"version {document.get('version')!r}, this mpitrain reads {VERSION}"
    entries = document.get("entries")
    if not isinstance(entries, list):
        return [], "no list of entries"
    return [e for e in entries if _well_formed(e)], None


def _well_formed(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    text = ("dtype", "buffer", "choice", "table", "measured")
    return (all(isinstance(entry.get(name), str) for name in text)
            and isinstance(entry.get("bytes"), int) and not isinstance(entry["bytes"], bool)
            and isinstance(entry.get("ranks_per_node"), list)
            and isinstance(entry.get("median_us"), dict))


def write_entries(path: Path, shape: Shape, new: list[dict[str, Any]]) -> str | None:
    """Merge ``new`` into the file (replacing entries with the same key) and write it
    atomically; a note when that failed, else None."""
    old, _ = read_entries(path)
    keys = {(json.dumps(_shape_part(e), sort_keys=True), *_size_key(e["dtype"], e["bytes"],
                                                                    e["buffer"]))
            for e in new}
    kept = [e for e in old
            if (json.dumps(_shape_part(e), sort_keys=True),
                *_size_key(e["dtype"], e["bytes"], e["buffer"])) not in keys]
    document = {"format": FORMAT, "version": VERSION, "entries": kept + new}
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        temp.replace(path)
    except OSError as exc:
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass
        return f"could not write {path} ({exc.strerror or exc})"
    return None


def _shape_part(entry: dict[str, Any]) -> dict[str, Any]:
    return {name: entry.get(name) for name in ("mpi_library", "mpitrain_version", "machine",
                                                "ranks_per_node", "shared_memory")}


def note(text: str) -> None:
    """One note on stderr (call on rank 0 only)."""
    print(f"mpitrain: note: {text}", file=sys.stderr, flush=True)


def package_version() -> str:
    """This mpitrain's version (from the installed package's metadata)."""
    try:
        return metadata.version("mpitrain")
    except metadata.PackageNotFoundError:
        return "unknown"


def load(comm: MPI.Comm, *, ranks_per_node: tuple[int, ...], shared_memory: bool,
         ) -> TuneCache:
    """Collective: the cache entries of this communicator's shape. Rank 0 reads the file
    and broadcasts the shape and its entries (a length, then UTF-8 JSON bytes: buffer
    calls), so every rank holds the same entries; a file it had to ignore is one note on
    rank 0's stderr."""
    path = cache_path()
    payload = b""
    if comm.Get_rank() == 0:
        shape = Shape(library(), package_version(), machine(), ranks_per_node,
                      shared_memory)
        entries, problem = read_entries(path)
        if problem:
            note(f"ignoring the tuning cache {path}: {problem}; --reduce auto uses its "
                 "table until 'mpitrain tune' measures again")
        payload = json.dumps({"shape": shape.as_dict(), "path": str(path),
                              "entries": [e for e in entries if shape.holds(e)]}).encode()
    length = np.array([len(payload)], dtype=np.int64)
    comm.Bcast(length, root=0)
    data = np.frombuffer(payload, dtype=np.uint8).copy() if comm.Get_rank() == 0 else \
        np.empty(int(length[0]), dtype=np.uint8)
    comm.Bcast(data, root=0)
    document = json.loads(data.tobytes().decode())
    described = document["shape"]
    shape = Shape(described["mpi_library"], described["mpitrain_version"],
                  described["machine"], tuple(described["ranks_per_node"]),
                  described["shared_memory"])
    return TuneCache(shape, document["entries"], Path(document["path"]))
