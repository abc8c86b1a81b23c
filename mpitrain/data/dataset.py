"""``load_dataset``: from a ``--data`` value to this rank's shards of the train and test sets.

Steps, each collective where ranks must agree: open the source(s) on every rank (headers,
line counts); choose the test rows (a seeded holdout, or a separate test source); block-
split each set over the ranks; read only this rank's rows (in-memory arrays: fetch them
from the ranks that hold them); settle the feature count and the labels (libsvm's -1/+1
labels, class names); standardise with global training statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
from mpi4py import MPI

from mpitrain.data import standardize as standardization
from mpitrain.data import values
from mpitrain.data.base import Block, Source
from mpitrain.data.csr import Csr
from mpitrain.data.hashing import check_hashing
from mpitrain.data.holdout import Holdout, make_holdout, no_holdout
from mpitrain.data.labels import name_labels
from mpitrain.data.libsvm import share_scans
from mpitrain.data.memory import Arrays, open_arrays
from mpitrain.data.pages import with_small_pages
from mpitrain.data.sharding import block_range
from mpitrain.data.sources import (
    ZERO_BASED,
    ReadOptions,
    open_source,
    settle_libsvm_base,
    unused_read_option,
)
from mpitrain.data.synthetic import SyntheticSpec
from mpitrain.errors import UserError, agree, checked, require

Task = Literal["classification", "regression"]
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, eq=False)
class Shard:
    """This rank's rows of one split (train or test): a contiguous block of the split."""

    X: np.ndarray | Csr  # (n_local, d), C-contiguous, float32 or float64; Csr if sparse
    y: np.ndarray  # (n_local,), int64 labels (classification) or X's dtype (regression)
    start: int  # index of this rank's first row within the split
    n_total: int  # rows of the split over all ranks

    @property
    def n_local(self) -> int:
        return len(self.y)


@dataclass(frozen=True, kw_only=True, eq=False)
class Dataset:
    """This rank's shards plus what every rank knows about the whole data set."""

    train: Shard
    test: Shard
    n_features: int
    n_classes: int  # 0 for regression
    name: str  # for summaries
    task: Task
    mean: np.ndarray | None = None  # float64 training means used for standardisation
    std: np.ndarray | None = None  # float64 training stds (1 for constant features)
    #: Class names (str) when labels were names such as 'cat': class i is classes[i].
    #: None when the labels were class indices already (numbers).
    classes: np.ndarray | None = None
    #: Rows held as CSR (``--sparse``): never dense, not standardised.
    sparse: bool = False


#: Values of --sparse: keep libsvm rows as CSR always, never, or below AUTO_DENSITY.
SPARSE = ("auto", "on", "off")
#: ``--sparse auto`` keeps rows sparse when at most this fraction of the values are non-zero.
AUTO_DENSITY = 0.1


@with_small_pages
def load_dataset(
    source: str,
    *,
    comm: MPI.Comm,
    task: Task,
    dtype: npt.DTypeLike,
    seed: int,
    test_fraction: float = 0.2,
    test_source: str | None = None,
    standardize: bool | None = None,
    synthetic: SyntheticSpec = SyntheticSpec(),  # noqa: B008 (frozen, so safe as a default)
    read: ReadOptions = ReadOptions(),  # noqa: B008
    arrays: Arrays | None = None,
    test_arrays: Arrays | None = None,
    sparse: str = "off",
    missing: bool = False,
) -> Dataset:
    """Collective: load this rank's shards of ``source`` (see the module docstring).

    ``test_source`` (a path) supplies the test set instead of a holdout of
    ``test_fraction``. ``standardize=None`` means on (every source is dense once loaded).
    ``read`` says how some formats are read. ``arrays`` / ``test_arrays`` are in-memory
    rows (:mod:`.memory`); when any rank passes some, they replace ``source`` /
    ``test_source`` (pass them on every rank, as ``Arrays(None, None)`` where there are
    none). ``sparse`` (``--sparse``): ``"on"`` keeps libsvm rows as CSR, ``"auto"`` when
    at most :data:`AUTO_DENSITY` of their values are non-zero; sparse rows are not
    standardised. ``missing``: NaN features are missing values, kept (tree models);
    otherwise an error like every non-finite value. Any problem, on any rank, raises the
    same UserError on every rank.
    """
    size, rank = comm.Get_size(), comm.Get_rank()
    memory = open_arrays(comm, arrays) if arrays is not None else None
    test_memory = open_arrays(comm, test_arrays) if test_arrays is not None else None
    data_dtype, train_source, separate_test = checked(
        comm,
        _open,
        memory or source,
        test_memory or test_source,
        task=task,
        dtype=dtype,
        seed=seed,
        test_fraction=test_fraction,
        synthetic=synthetic,
        read=read,
        part=(rank, size),
        sparse=sparse,
    )
    share_scans(comm, [train_source, separate_test])
    settle_libsvm_base([train_source, separate_test], read.zero_based)
    agree(comm, _disagreement(comm, [train_source, separate_test]))
    if separate_test is None:
        split = make_holdout(train_source.n_rows, test_fraction, seed)
        test_source_, n_test, test_rows = train_source, split.n_test, split.test_rows
    else:  # every row of the test source is a test row
        split = no_holdout(train_source.n_rows)
        test_source_, n_test = separate_test, separate_test.n_rows
        test_rows = no_holdout(n_test).train_rows
    n_train = split.n_train
    agree(comm, _too_few_rows(split, size, test_fraction))
    train_start, train_stop = block_range(n_train, size, rank)
    test_start, test_stop = block_range(n_test, size, rank)
    sources = [train_source, test_source_]
    blocks = _read(comm, sources, [split.train_rows(train_start, train_stop),
                                   test_rows(test_start, test_stop)])
    width = _feature_count(comm, blocks, sources)
    classification = task == "classification"
    classes = None
    if classification:
        blocks = values.map_signed_labels(comm, list(zip(blocks, sources, strict=True)))
        blocks, classes = name_labels(comm, list(zip(blocks, sources, strict=True)))

    keep_sparse = _keep_sparse(comm, sparse, blocks, width)

    def convert(block: Block, source: Source) -> tuple[np.ndarray | Csr, np.ndarray]:
        X = (values.sparse_features(block, source, width, data_dtype) if keep_sparse
             else values.features(block, source, width, data_dtype, missing=missing))
        y = (
            values.labels(block, source)
            if classification
            else values.targets(block, source, data_dtype)
        )
        return X, y

    (X_train, y_train), (X_test, y_test) = checked(
        comm,
        _in_memory,
        lambda: [convert(b, s) for b, s in zip(blocks, sources, strict=True)],
        rank,
    )
    n_classes = (
        values.class_count(comm, [y_train, y_test], train_source.declared_classes)
        if classification
        else 0
    )

    mean = std = None
    if (standardize is None or standardize) and not keep_sparse:
        mean, std = standardization.fit(comm, X_train, n_train)
        standardization.apply(X_train, mean, std)
        standardization.apply(X_test, mean, std)

    return Dataset(
        train=Shard(X=X_train, y=y_train, start=train_start, n_total=n_train),
        test=Shard(X=X_test, y=y_test, start=test_start, n_total=n_test),
        n_features=width,
        n_classes=n_classes,
        name=train_source.name,
        task=task,
        mean=mean,
        std=std,
        classes=classes,
        sparse=keep_sparse,
    )


def _keep_sparse(comm: MPI.Comm, sparse: str, blocks: list[Block], width: int) -> bool:
    """Collective when rows are CSR and ``sparse`` is ``"auto"``: keep them sparse?"""
    csr = all(isinstance(block.X, Csr) for block in blocks)
    if sparse == "on":
        agree(comm, None if csr else "--sparse on needs libsvm data (.svm, .libsvm) for "
              "--data and --test-data")
        return True
    if sparse == "off" or not csr:
        return False
    counts = np.array([sum(len(b.X.data) for b in blocks), sum(len(b.y) for b in blocks)],
                      dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, counts, op=MPI.SUM)
    return bool(counts[0] <= AUTO_DENSITY * counts[1] * max(width, 1))


def _check_options(task: str, dtype: npt.DTypeLike, seed: int, test_fraction: float) -> np.dtype:
    """Local: validate the plain options; return the data dtype."""
    require(
        task in ("classification", "regression"),
        f"task must be 'classification' or 'regression' (got {task!r})",
    )
    try:
        data_dtype = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError:
        data_dtype = None
    require(
        data_dtype in (np.float32, np.float64),
        f"--dtype must be float32 or float64 (got {dtype!r})",
    )
    require(
        isinstance(seed, int | np.integer) and not isinstance(seed, bool) and seed >= 0,
        f"--seed must be a non-negative integer (got {seed!r})",
    )
    require(
        isinstance(test_fraction, int | float)
        and math.isfinite(test_fraction)
        and 0 <= test_fraction < 1,
        f"--test-fraction must be in [0, 1) (got {test_fraction!r})",
    )
    return data_dtype  # type: ignore[return-value]


def _open(
    source: str | Source,
    test_source: str | Source | None,
    *,
    task: str,
    dtype: npt.DTypeLike,
    seed: int,
    test_fraction: float,
    synthetic: SyntheticSpec,
    read: ReadOptions,
    part: tuple[int, int],
    sparse: str,
) -> tuple[np.dtype, Source, Source | None]:
    """Local: check the options, open the training source and the test source if any
    (libsvm: this rank's ``part`` only, see :func:`~mpitrain.data.libsvm.share_scans`).

    The test source is always a path or in-memory arrays. Returns the data dtype and the
    sources.
    """
    data_dtype = _check_options(task, dtype, seed, test_fraction)
    require(sparse in SPARSE, f"--sparse must be one of {', '.join(SPARSE)} (got {sparse!r})")
    hashing = check_hashing(read.hash_bits, read.hash_seed)
    if hashing:
        raise UserError(hashing)
    require(read.zero_based in ZERO_BASED,
            f"--zero-based must be one of {', '.join(ZERO_BASED)} (got {read.zero_based!r})")
    train = open_source(source, option="--data", task=task, seed=seed, synthetic=synthetic,
                        read=read, part=part, dtype=data_dtype)
    test = None if test_source is None else open_source(
        test_source, option="--test-data", task=task, seed=seed, synthetic=synthetic,
        builtin=False, read=read, part=part,
    )
    unused = unused_read_option(read, [train, test])
    if unused:
        raise UserError(unused)
    if test is None:
        return data_dtype, train, None
    if None not in (train.n_features, test.n_features) and train.n_features != test.n_features:
        raise UserError(
            f"--test-data has {test.n_features} features "
            f"but the training data has {train.n_features}"
        )
    return data_dtype, train, test


def _disagreement(comm: MPI.Comm, sources: list[Source | None]) -> str | None:
    """Collective: a message when ranks opened sources of different sizes (a file that
    differs between nodes, or a name that is a path on some nodes only)."""
    shapes = [(s.name, s.n_rows, s.n_features) if s is not None else None for s in sources]
    everyone = comm.allgather(shapes)
    for rank, theirs in enumerate(everyone):
        for option, mine, other in zip(("--data", "--test-data"), everyone[0], theirs,
                                       strict=True):
            if mine != other:
                return (f"{option}: the ranks see different data (rank 0: {_shape(mine)}; "
                        f"rank {rank}: {_shape(other)}); is the file the same on every node?")
    return None


def _shape(shape: tuple[str, int, int | None] | None) -> str:
    if shape is None:
        return "none"
    name, rows, features = shape
    width = "" if features is None else f" x {features} features"
    return f"{name}, {rows} rows{width}"


def _read(comm: MPI.Comm, sources: list[Source], rows: list[np.ndarray]) -> list[Block]:
    """Collective: this rank's rows of each source (local reads, then in-memory exchanges)."""
    rank = comm.Get_rank()
    local = checked(
        comm,
        _in_memory,
        lambda: [None if s.collective else s.read(r)
                 for s, r in zip(sources, rows, strict=True)],
        rank,
    )
    return [
        s.exchange(comm, r) if s.collective else block  # type: ignore[attr-defined]
        for s, r, block in zip(sources, rows, local, strict=True)
    ]


def _in_memory(step: Callable[[], T], rank: int) -> T:
    """Run a local step; running out of memory becomes a UserError (which ranks then share)."""
    try:
        return step()
    except MemoryError:
        raise UserError(
            f"--data: rank {rank} ran out of memory holding its rows (use more ranks)"
        ) from None


def _too_few_rows(split: Holdout, size: int, test_fraction: float) -> str | None:
    """Message when the training rows cannot give every rank at least one row."""
    if split.n_train == 0:
        return f"--test-fraction {test_fraction:g} leaves no training rows out of {split.n_rows}"
    if size > split.n_train:
        n = split.n_train
        return f"{size} ranks but only {n} training rows: use at most {n} ranks"
    return None


def _feature_count(comm: MPI.Comm, blocks: list[Block], sources: list[Source]) -> int:
    """Collective when a source is sparse: the feature count of the training data.

    A sparse source's width is its widest row over all ranks; a sparse test set may be
    narrower than the training data (it is padded with zero features), never wider.
    """
    if all(source.n_features is not None for source in sources):
        return int(sources[0].n_features)  # type: ignore[arg-type]
    local = np.array([block.X.shape[1] for block in blocks], dtype=np.int64)
    widest = np.empty_like(local)
    comm.Allreduce(local, widest, op=MPI.MAX)
    train, test = (
        int(n) if n is not None else int(w)
        for n, w in zip((s.n_features for s in sources), widest, strict=True)
    )
    if sources[0] is sources[1]:  # holdout: one file, one width
        train = test = max(train, test)
    message = None
    if train == 0:
        message = f"--data: {sources[0].quoted} has no features"
    elif test > train or (test < train and sources[1].n_features is not None):
        message = f"--test-data has {test} features but the training data has {train}"
    agree(comm, message)
    return train
