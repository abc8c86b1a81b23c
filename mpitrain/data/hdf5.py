"""HDF5 files (``.h5``/``.hdf5``): a 2-D features dataset and a 1-D labels dataset
(numbers, or strings such as ``cat``: see :mod:`mpitrain.data.labels`).

Opening reads only the datasets' shapes and dtypes. A rank reads the span from its first
to its last row as hyperslabs of at most :data:`CHUNK_BYTES`, keeping only its rows, so it
never holds more than its rows plus one slab. Needs h5py (the ``[hdf5]`` extra).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mpitrain.data.base import Block
from mpitrain.data.binary import CHUNK_BYTES, NUMERIC_KINDS, ArraySource
from mpitrain.data.labels import as_texts, split_labels
from mpitrain.data.optional import import_optional


class Hdf5Source(ArraySource):
    """Datasets ``x_name`` (rows, features) and ``y_name`` (rows,) of an HDF5 file."""

    def __init__(self, path: Path, *, option: str, x_name: str = "X", y_name: str = "y") -> None:
        super().__init__(option, path.name, f"'{path}'")
        self.h5py = import_optional("h5py", "hdf5", f"{option}: reading {self.quoted}")
        self.path = path
        self.names = (x_name, y_name)
        headers = []
        with self._open() as file:
            for name, flag in zip(self.names, ("--h5-x", "--h5-y"), strict=True):
                dataset = file.get(name)
                if not isinstance(dataset, self.h5py.Dataset):
                    raise self.error(
                        f"{self.quoted} has no dataset {name!r} (expected datasets "
                        f"{x_name!r} and {y_name!r}; name others with {flag})"
                    )
                headers.append((tuple(dataset.shape), dataset.dtype))
        y_dtype = headers[1][1]
        self.text_labels = y_dtype.kind == "S" or (
            y_dtype.kind == "O" and self.h5py.check_string_dtype(y_dtype) is not None)
        if y_dtype.kind not in NUMERIC_KINDS and not self.text_labels:
            raise self.error(f"{y_name} in {self.quoted} has dtype {y_dtype} (expected "
                             "numbers or strings)")
        self.check_arrays(headers[0], headers[1], names=self.names, text_labels=True)

    def read(self, rows: np.ndarray) -> Block:
        with self._open() as file:
            try:
                X, y = (_hyperslab_rows(file[name], rows) for name in self.names)
            except (OSError, ValueError, KeyError) as exc:
                raise self.error(f"cannot read {self.quoted} ({exc})") from exc
        y = y.reshape(-1)
        if self.text_labels:
            labels, names, codes = split_labels(as_texts(y.tolist()))
            return Block(X=X, y=labels, rows=rows, label_names=names, label_codes=codes)
        return Block(X=X, y=y.astype(np.float64), rows=rows)

    def _open(self) -> Any:
        """The file, read-only, without HDF5's file locks (unsupported on some parallel
        file systems, and pointless for readers)."""
        try:
            return self.h5py.File(self.path, "r", locking=False)
        except OSError as exc:
            if not self.path.exists():
                raise self.error(f"file {self.quoted} does not exist") from exc
            raise self.error(f"{self.quoted} is not a readable HDF5 file ({exc})") from exc


def _hyperslab_rows(dataset: Any, rows: np.ndarray) -> np.ndarray:
    """Copy the given sorted rows of an h5py dataset, one slab of rows at a time."""
    row_shape = tuple(dataset.shape[1:])
    out = np.empty((len(rows), *row_shape), dtype=dataset.dtype)
    if len(rows) == 0:
        return out
    row_bytes = max(1, dataset.dtype.itemsize * math.prod(row_shape))
    step = max(1, CHUNK_BYTES // row_bytes)
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    done = 0
    for first in range(lo, hi, step):
        stop = min(first + step, hi)
        end = int(np.searchsorted(rows, stop))
        if end == done:
            continue
        if rows[end - 1] - rows[done] + 1 == end - done:  # one run: read just it
            out[done:end] = dataset[int(rows[done]) : int(rows[end - 1]) + 1]
        else:
            slab = dataset[first:stop]
            out[done:end] = slab[rows[done:end] - first]
        done = end
    return out
