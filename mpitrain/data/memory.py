"""In-memory arrays given to ``train(X=..., y=...)``: every rank passes its own rows, or
rank 0 passes all rows and the other ranks pass None.

Rows are numbered globally in rank order (rank 0's rows first), so the holdout, the blocks
and the shuffles are those of a file holding the same rows, whatever the number of ranks.
Opening agrees over the ranks on shapes and dtypes (one clear error on every rank);
reading is collective: every rank asks the ranks that hold its rows for them and gets
them back, with two buffer ``Alltoallv`` per split.

``X`` may be a scipy.sparse matrix (any format, the same kind on every rank that passes
rows): its rows then travel as CSR (row lengths, then column indices and values, three
``Alltoallv``) and arrive as :class:`~mpitrain.data.csr.Csr`, never dense.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse
from mpi4py import MPI

from mpitrain.data.base import Block, Source
from mpitrain.data.csr import Csr
from mpitrain.data.labels import MAX_CLASSES, allgather_strings, as_texts, split_labels
from mpitrain.errors import shared_error

#: What a config's ``data`` / ``test_data`` says when the rows came from arrays.
IN_MEMORY = "<in-memory arrays>"
#: Array kinds accepted for features: bool, signed and unsigned integers, floats.
FEATURE_KINDS = "biuf"
#: Label kinds: numbers, or strings (names such as 'cat') in str, bytes or object arrays.
TEXT_KINDS = "USO"


@dataclass(frozen=True, eq=False)
class Arrays:
    """What one rank passed as features and labels (either may be None)."""

    X: Any
    y: Any
    names: tuple[str, str] = ("X", "y")  # the keywords, for messages


@dataclass(frozen=True)
class _Local:
    """What every rank learns about one rank's arrays."""

    given: bool
    rows: int
    features: int
    dtype: str
    names: int  # distinct labels that are not numbers
    error: str | None
    sparse: bool = False  # X is a scipy.sparse matrix


class MemorySource(Source):
    """Rows held in the ranks' memory; ``exchange`` (collective) replaces ``read``."""

    collective = True

    def __init__(self, *, X: np.ndarray, y: np.ndarray, codes: np.ndarray | None,
                 names: np.ndarray | None, offsets: np.ndarray, dtype: np.dtype,
                 keywords: tuple[str, str]) -> None:
        x_name, y_name = keywords
        super().__init__("train()", f"arrays({int(offsets[-1])}x{X.shape[1]})",
                         f"{x_name}/{y_name}")
        self.X, self.y, self.codes, self.names = X, y, codes, names
        self.offsets = offsets  # global index of each rank's first row, then the total
        self.dtype = dtype  # features are sent as this (every rank's, promoted)
        self.n_rows = int(offsets[-1])
        self.n_features = X.shape[1]
        self.sparse = scipy.sparse.issparse(X)

    def read(self, rows: np.ndarray) -> Block:
        raise TypeError("in-memory rows are read collectively, with exchange()")

    def exchange(self, comm: MPI.Comm, rows: np.ndarray) -> Block:
        """Collective: the rows with the given sorted global indices, from their ranks."""
        rank = comm.Get_rank()
        wanted, asked, requested = request_rows(comm, rows, self.offsets)
        local = requested - self.offsets[rank]
        if len(local) and local[-1] - local[0] + 1 == len(local):
            local = slice(int(local[0]), int(local[-1]) + 1)  # a view: no copy to send
        d = self.n_features
        if self.sparse:
            X = self._exchange_csr(comm, local, asked, wanted)
        else:
            X = np.empty((len(rows), d), dtype=self.dtype)
            comm.Alltoallv([np.ascontiguousarray(self.X[local], dtype=self.dtype), asked * d],
                           [X, wanted * d])
        y = np.empty(len(rows))
        comm.Alltoallv([np.ascontiguousarray(self.y[local]), asked], [y, wanted])
        if self.names is None:
            return Block(X=X, y=y, rows=rows)
        codes = np.empty(len(rows), dtype=np.int64)
        assert self.codes is not None
        comm.Alltoallv([np.ascontiguousarray(self.codes[local]), asked], [codes, wanted])
        return Block(X=X, y=y, rows=rows, label_names=self.names, label_codes=codes)

    def _exchange_csr(self, comm: MPI.Comm, local: np.ndarray | slice, asked: np.ndarray,
                      wanted: np.ndarray) -> Csr:
        """Collective: the wanted rows of CSR ``X`` (``asked``: rows each rank wants of
        ours, ``local`` their indices here; ``wanted``: rows we get from each rank)."""
        mine = self.X[local]
        lengths = np.diff(mine.indptr).astype(np.int64)
        got = np.empty(int(wanted.sum()), dtype=np.int64)
        comm.Alltoallv([lengths, asked], [got, wanted])
        send = segment_sums(lengths, asked)
        recv = segment_sums(got, wanted)
        index_type = np.int32 if self.n_features <= 2**31 - 1 else np.int64
        indices = np.empty(int(recv.sum()), dtype=index_type)
        data = np.empty(int(recv.sum()), dtype=self.dtype)
        comm.Alltoallv([np.ascontiguousarray(mine.indices, dtype=index_type), send],
                       [indices, recv])
        comm.Alltoallv([np.ascontiguousarray(mine.data, dtype=self.dtype), send], [data, recv])
        indptr = np.concatenate([[0], np.cumsum(got)]).astype(np.int64)
        return Csr(data, indices, indptr, self.n_features)


def request_rows(comm: MPI.Comm, rows: np.ndarray, offsets: np.ndarray,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collective: ask each rank for the rows it holds among ``rows`` (sorted global
    numbers; rank ``q`` holds ``offsets[q]`` to ``offsets[q + 1] - 1``). Returns how many
    rows we get from each rank, how many each rank asks of us, and which (in rank order)."""
    wanted = np.diff(np.searchsorted(rows, offsets)).astype(np.int64)
    asked = np.empty(comm.Get_size(), dtype=np.int64)
    comm.Alltoall(wanted, asked)
    requested = np.empty(int(asked.sum()), dtype=np.int64)
    comm.Alltoallv([np.ascontiguousarray(rows, dtype=np.int64), wanted], [requested, asked])
    return wanted, asked, requested


def segment_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sums of consecutive runs of ``values``, ``counts[i]`` long each."""
    ends = np.concatenate([[0], np.cumsum(values)]).astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ends[bounds[1:]] - ends[bounds[:-1]]


def open_arrays(comm: MPI.Comm, arrays: Arrays) -> MemorySource | None:
    """Collective: check every rank's arrays together; None when no rank passed any.

    Every rank must call it (those without arrays pass ``Arrays(None, None)``).
    """
    x_name, y_name = arrays.names
    rank = comm.Get_rank()
    X, y, local = _check_local(arrays, rank)
    everyone: list[_Local] = comm.allgather(local)  # small records, so pickled
    error = next((r.error for r in everyone if r.error), None)
    if error:
        raise shared_error(error)  # every rank has the same records
    given = [i for i, r in enumerate(everyone) if r.given]
    if not given:
        return None
    message = None
    missing = [i for i, r in enumerate(everyone) if not r.given]
    shown = f"{x_name}= and {y_name}="
    if missing and given != [0]:
        message = (f"{shown} were given on rank(s) {_ranks(given)} but not on rank(s) "
                   f"{_ranks(missing)}: pass them on every rank (each its own rows) or on "
                   "rank 0 only (all rows, which mpitrain scatters)")
    else:
        widths = {everyone[i].features for i in given}
        kinds = {everyone[i].sparse for i in given}
        total = sum(r.rows for r in everyone)
        if len(widths) > 1:
            detail = ", ".join(f"{everyone[i].features} on rank {i}" for i in given)
            message = f"{x_name}= must have the same number of features on every rank ({detail})"
        elif len(kinds) > 1:
            detail = ", ".join(f"{'sparse' if everyone[i].sparse else 'dense'} on rank {i}"
                               for i in given)
            message = (f"{x_name}= must be a scipy.sparse matrix on every rank or on none "
                       f"({detail})")
        elif total == 0:
            message = f"{x_name}= has no rows on any rank"
        elif sum(r.names for r in everyone) > MAX_CLASSES:
            message = f"{y_name}= has more than {MAX_CLASSES} distinct class names"
    if message:
        raise shared_error(message)
    counts = np.array([r.rows for r in everyone], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    dtype = np.promote_types(np.result_type(*(everyone[i].dtype for i in given)), np.float32)
    d = everyone[given[0]].features
    if X is None:
        X = scipy.sparse.csr_array((0, d)) if everyone[given[0]].sparse else np.empty((0, d))
    labels, names, codes = (np.empty(0), None, None) if y is None else y
    if any(r.names for r in everyone):  # names as indices into the sorted union
        union = np.array(sorted(set(allgather_strings(
            comm, [] if names is None else names.tolist()))), dtype=str)
        local_codes = np.full(len(labels), -1, dtype=np.int64)
        if names is not None and codes is not None:
            at = np.searchsorted(union, names)
            local_codes[codes >= 0] = at[codes[codes >= 0]]
        names, codes = union, local_codes
    return MemorySource(X=X, y=labels, codes=codes, names=names, offsets=offsets, dtype=dtype,
                        keywords=arrays.names)


def _ranks(ranks: list[int]) -> str:
    return ", ".join(map(str, ranks))


def _check_local(arrays: Arrays, rank: int) -> tuple[Any, Any, _Local]:
    """This rank's arrays as numpy arrays, and what the other ranks need to know."""
    x_name, y_name = arrays.names
    if arrays.X is None and arrays.y is None:
        return None, None, _Local(False, 0, 0, "float64", 0, None)

    def fail(text: str) -> tuple[Any, Any, _Local]:
        return None, None, _Local(True, 0, 0, "float64", 0, f"{text} (on rank {rank})")

    if arrays.X is None or arrays.y is None:
        given, missing = (x_name, y_name) if arrays.y is None else (y_name, x_name)
        return fail(f"{given}= is given but {missing}= is not")
    sparse = scipy.sparse.issparse(arrays.X)
    X, y = _csr(arrays.X) if sparse else np.asarray(arrays.X), np.asarray(arrays.y)
    if X.ndim != 2:
        return fail(f"{x_name}= must be a 2-D array (rows, features); got shape {X.shape}")
    if X.dtype.kind not in FEATURE_KINDS:
        return fail(f"{x_name}= must hold numbers; got dtype {X.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        return fail(f"{y_name}= must be a 1-D array (one label per row); got shape {y.shape}")
    if len(y) != X.shape[0]:
        return fail(f"{y_name}= has {len(y)} rows but {x_name}= has {X.shape[0]}")
    if y.dtype.kind in TEXT_KINDS:
        labels = split_labels(as_texts(y.tolist()))
    elif y.dtype.kind in FEATURE_KINDS:
        labels = (y.astype(np.float64), None, None)
    else:
        return fail(f"{y_name}= must hold numbers or class names; got dtype {y.dtype}")
    names = 0 if labels[1] is None else len(labels[1])
    return X, labels, _Local(True, X.shape[0], X.shape[1], X.dtype.str, names, None, sparse)


def _csr(X: Any) -> Any:
    """A scipy.sparse matrix as CSR with sorted, distinct columns (repeated entries added,
    as scipy does); the caller's matrix is not changed."""
    X = X.tocsr()
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return X
