"""Rows in compressed sparse row (CSR) form, as sparse readers return them.

Row ``i`` holds ``data[indptr[i]:indptr[i+1]]`` at columns ``indices[...]`` (sorted, no
duplicates). ``n_cols`` is the widest row plus one: the feature count of the whole data is
known only once every rank has read its rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Csr:
    """A CSR matrix: values (float64), column indices (int32) and row pointers (int64)."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    n_cols: int

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.indptr) - 1, self.n_cols

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(data, indices, indptr)``: how the sparse kernels take ``X``
        (:mod:`mpitrain.kernels.sparse`)."""
        return self.data, self.indices, self.indptr

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.indices.nbytes + self.indptr.nbytes

    def dense(self, width: int, dtype: np.dtype) -> np.ndarray:
        """The rows as a C-contiguous ``(rows, width)`` array of ``dtype`` (width >= n_cols)."""
        X = np.zeros((len(self), width), dtype=dtype)
        rows = np.repeat(np.arange(len(self)), np.diff(self.indptr))
        X[rows, self.indices] = self.data
        return X
