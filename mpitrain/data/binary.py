"""NumPy array files: an ``.npz`` archive, or a directory holding ``X.npy`` and ``y.npy``.

Only the headers are read when a source is opened. The directory form is memory-mapped,
so a rank touches only the pages of its own rows. Archive members are streamed from the
first to the last wanted row, keeping only the wanted rows, so a rank never holds more than
its rows plus one chunk (compressed archives cannot be mapped).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from mpitrain.data.base import Block, Source, take_rows

#: Bytes read at a time when streaming rows out of an archive member.
CHUNK_BYTES = 8 << 20
#: Array kinds accepted for X and y: bool, signed and unsigned integers, floats.
NUMERIC_KINDS = "biuf"


class ArraySource(Source):
    """Checks shared by both array layouts, given the arrays' headers."""

    def check_arrays(
        self,
        x: tuple[tuple[int, ...], np.dtype],
        y: tuple[tuple[int, ...], np.dtype],
        names: tuple[str, str] = ("X", "y"),
        text_labels: bool = False,
    ) -> None:
        """Validate the shapes and dtypes of X and y (called ``names`` in messages; y may
        hold strings if ``text_labels``); set ``n_rows`` and ``n_features``."""
        (x_shape, x_dtype), (y_shape, y_dtype) = x, y
        X, Y = names
        if x_dtype.kind not in NUMERIC_KINDS:
            raise self.error(
                f"{X} in {self.quoted} has dtype {x_dtype} (expected a numeric dtype)"
            )
        if y_dtype.kind not in NUMERIC_KINDS and not text_labels:
            raise self.error(
                f"{Y} in {self.quoted} has dtype {y_dtype} (expected a numeric dtype)"
            )
        if len(x_shape) != 2:
            raise self.error(
                f"{X} in {self.quoted} has shape {x_shape} (expected 2-D: rows, features)"
            )
        if len(y_shape) not in (1, 2) or math.prod(y_shape[1:]) != 1:
            raise self.error(
                f"{Y} in {self.quoted} has shape {y_shape} (expected 1-D: one label per row)"
            )
        if y_shape[0] != x_shape[0]:
            raise self.error(
                f"{Y} in {self.quoted} has {y_shape[0]} rows but {X} has {x_shape[0]}"
            )
        self.n_rows, self.n_features = x_shape


class NpzSource(ArraySource):
    """Arrays ``X`` and ``y`` in an ``.npz`` archive (plain or compressed)."""

    def __init__(self, path: Path, *, option: str) -> None:
        super().__init__(option, path.name, f"'{path}'")
        self.path = path
        self.headers: dict[str, tuple[tuple[int, ...], bool, np.dtype]] = {}
        with self._open() as archive:
            for name in ("X", "y"):
                if f"{name}.npy" not in archive.namelist():
                    raise self.error(
                        f"{self.quoted} has no array '{name}' (expected arrays X and y)"
                    )
                with self._member(archive, name) as fp:
                    self.headers[name] = self._header(fp, name)
        self.check_arrays(*((s, d) for s, _, d in self.headers.values()))

    def read(self, rows: np.ndarray) -> Block:
        with self._open() as archive:
            X, y = (self._rows(archive, name, rows) for name in ("X", "y"))
        return Block(X=X, y=y.reshape(-1).astype(np.float64), rows=rows)

    def _open(self) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(self.path)
        except OSError as exc:
            raise self.error(f"cannot read {self.quoted} ({exc.strerror or exc})") from exc
        except zipfile.BadZipFile as exc:
            raise self.error(f"{self.quoted} is not a valid .npz file ({exc})") from exc

    def _member(self, archive: zipfile.ZipFile, name: str) -> IO[bytes]:
        try:
            return archive.open(f"{name}.npy")
        except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
            raise self.error(f"cannot read array '{name}' in {self.quoted} ({exc})") from exc

    def _header(self, fp: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
        """Parse the .npy header of a member: (shape, fortran_order, dtype)."""
        try:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                return np.lib.format.read_array_header_1_0(fp)
            if version == (2, 0):
                return np.lib.format.read_array_header_2_0(fp)
            raise ValueError(f"unsupported .npy format version {version}")
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise self.error(
                f"array '{name}' in {self.quoted} is not a valid .npy ({exc})"
            ) from exc

    def _rows(self, archive: zipfile.ZipFile, name: str, rows: np.ndarray) -> np.ndarray:
        """Read the wanted rows of one member, streaming from the first to the last."""
        shape, fortran, dtype = self.headers[name]
        with self._member(archive, name) as fp:
            try:
                if fortran:  # rows are not contiguous on disk: load the member whole
                    return take_rows(np.lib.format.read_array(fp, allow_pickle=False), rows)
                self._header(fp, name)
                return _stream_rows(fp, shape, dtype, rows)
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                raise self.error(f"cannot read array '{name}' in {self.quoted} ({exc})") from exc


def _stream_rows(
    fp: IO[bytes], shape: tuple[int, ...], dtype: np.dtype, rows: np.ndarray
) -> np.ndarray:
    """Copy the given sorted rows out of a C-ordered array stream positioned at its data."""
    row_shape = shape[1:]
    row_bytes = dtype.itemsize * math.prod(row_shape)
    out = np.empty((len(rows), *row_shape), dtype)
    if len(rows) == 0 or row_bytes == 0:
        return out
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    fp.seek(fp.tell() + lo * row_bytes)
    step = max(1, CHUNK_BYTES // row_bytes)
    done = 0
    for first in range(lo, hi, step):
        stop = min(first + step, hi)
        data = fp.read((stop - first) * row_bytes)
        if len(data) != (stop - first) * row_bytes:
            raise ValueError(f"the array ends before row {stop - 1}")
        chunk = np.frombuffer(data, dtype).reshape(stop - first, *row_shape)
        end = int(np.searchsorted(rows, stop))
        out[done:end] = chunk[rows[done:end] - first]
        done = end
    return out


class NpyDirSource(ArraySource):
    """A directory with ``X.npy`` (rows, features) and ``y.npy`` (rows,), memory-mapped."""

    def __init__(self, path: Path, *, option: str) -> None:
        super().__init__(option, path.name or str(path), f"'{path}'")
        self.paths = {name: path / f"{name}.npy" for name in ("X", "y")}
        for name, file in self.paths.items():
            if not file.is_file():
                raise self.error(f"directory '{path}' has no {name}.npy (expected X.npy and y.npy)")
        X, y = self._map("X"), self._map("y")
        self.check_arrays((X.shape, X.dtype), (y.shape, y.dtype))

    def read(self, rows: np.ndarray) -> Block:
        X = take_rows(self._map("X"), rows)
        y = take_rows(self._map("y"), rows).reshape(-1).astype(np.float64)
        return Block(X=X, y=y, rows=rows)

    def _map(self, name: str) -> np.ndarray:
        file = self.paths[name]
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except OSError as exc:
            raise self.error(f"cannot read '{file}' ({exc.strerror or exc})") from exc
        except (ValueError, EOFError) as exc:
            raise self.error(f"'{file}' is not a valid .npy file ({exc or 'empty'})") from exc
        if not isinstance(array, np.ndarray):  # np.load returns an NpzFile for an archive
            raise self.error(f"'{file}' is not a valid .npy file (it is an .npz archive)")
        return array
