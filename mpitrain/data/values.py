"""Turn the raw rows a rank read into checked arrays: features, targets and class labels.

Local checks (non-finite values, bad labels) name the file and the row; the collective
steps (libsvm's -1/+1 labels, the class count) see every rank's rows, so the outcome does
not depend on how the rows are split.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from mpi4py import MPI

from mpitrain.data.base import Block, Source
from mpitrain.data.csr import Csr

#: Rows per chunk when looking for non-finite values (bounds the boolean temporary).
CHUNK_ROWS = 4096
#: Largest class label accepted (the class count sizes the model's output layer).
MAX_LABEL = 2**31 - 1


def features(block: Block, source: Source, width: int, dtype: np.dtype, *,
             missing: bool = False) -> np.ndarray:
    """Local: ``block.X`` as a C-contiguous ``(rows, width)`` array of ``dtype``.

    Sparse rows (:class:`~mpitrain.data.csr.Csr`) are made dense; narrower blocks are
    padded with zero columns. Values that are not
    finite in ``dtype`` (including float32 overflow) raise UserError, except NaN (a
    missing value) when ``missing`` (tree models learn where missing values go).
    """
    with np.errstate(over="ignore"):  # overflow becomes inf, reported below
        if isinstance(block.X, Csr):
            X = block.X.dense(width, dtype)
        elif block.X.shape[1] == width:
            X = np.ascontiguousarray(block.X, dtype=dtype)
        else:
            X = np.zeros((len(block.X), width), dtype=dtype)
            X[:, : block.X.shape[1]] = block.X
    for start in range(0, len(X), CHUNK_ROWS):
        chunk = X[start : start + CHUNK_ROWS]
        bad = ~(np.isfinite(chunk) | (np.isnan(chunk) if missing else False)).all(axis=1)
        if bad.any():
            where = block.where(start + int(np.argmax(bad)))
            what = "an infinite" if missing else "a non-finite"
            raise source.error(f"{source.quoted} has {what} value in {where}")
    return X


def sparse_features(block: Block, source: Source, width: int, dtype: np.dtype) -> Csr:
    """Local: ``block.X`` (a Csr) with values of ``dtype`` and ``width`` columns, never
    dense; values that are not finite in ``dtype`` raise UserError naming the row."""
    X = block.X
    with np.errstate(over="ignore"):
        data = X.data.astype(dtype, copy=False)  # the block's own values when they fit
    if not np.isfinite(data).all():
        bad = ~np.isfinite(data)
        row = int(np.searchsorted(X.indptr, int(np.argmax(bad)), side="right")) - 1
        raise source.error(f"{source.quoted} has a non-finite value in {block.where(row)}")
    return Csr(data, X.indices, X.indptr, width)


def targets(block: Block, source: Source, dtype: np.dtype) -> np.ndarray:
    """Local: regression targets as ``dtype``; names and non-finite values raise UserError."""
    if block.label_codes is not None and block.label_names is not None:
        named = block.label_codes >= 0
        if named.any():
            i = int(np.argmax(named))
            name = str(block.label_names[block.label_codes[i]])
            raise source.error(
                f"{source.quoted} has a non-numeric target {name!r} in {block.where(i)}"
            )
    with np.errstate(over="ignore"):  # overflow becomes inf, reported below
        y = block.y.astype(dtype)
    bad = ~np.isfinite(y)
    if bad.any():
        where = block.where(int(np.argmax(bad)))
        raise source.error(f"{source.quoted} has a non-finite target in {where}")
    return y


def labels(block: Block, source: Source) -> np.ndarray:
    """Local: class labels as int64; anything but a non-negative integer raises UserError."""
    y = block.y
    bad = ~(np.isfinite(y) & (y >= 0) & (y <= MAX_LABEL) & (y == np.floor(y)))
    if bad.any():
        i = int(np.argmax(bad))
        raise source.error(
            f"{source.quoted} has label {y[i]:g} in {block.where(i)} "
            "(expected non-negative integer class labels)"
        )
    return y.astype(np.int64)


def map_signed_labels(comm: MPI.Comm, parts: list[tuple[Block, Source]]) -> list[Block]:
    """Collective: map labels -1/+1 to 0/1 in libsvm sources whose labels are all -1 or +1.

    Decided over the labels of all such sources on all ranks, so every rank maps alike.
    Every rank must pass the same sources (in kind and order).
    """
    signed = [block for block, source in parts if source.signed_labels]
    if not signed:
        return [block for block, _ in parts]
    counts = np.zeros(2, dtype=np.int64)  # labels other than -1/+1, labels equal to -1
    for block in signed:
        counts[0] += np.count_nonzero((block.y != -1) & (block.y != 1))
        counts[1] += np.count_nonzero(block.y == -1)
    total = np.empty_like(counts)
    comm.Allreduce(counts, total, op=MPI.SUM)
    if total[0] or not total[1]:
        return [block for block, _ in parts]
    return [
        dataclasses.replace(block, y=(block.y + 1) / 2) if source.signed_labels else block
        for block, source in parts
    ]


def class_count(comm: MPI.Comm, ys: list[np.ndarray], declared: int) -> int:
    """Collective: the global largest label plus one, at least ``declared``."""
    local = np.array([max((int(y.max()) for y in ys if len(y)), default=-1)], dtype=np.int64)
    largest = np.empty_like(local)
    comm.Allreduce(local, largest, op=MPI.MAX)
    return max(int(largest[0]) + 1, declared)
