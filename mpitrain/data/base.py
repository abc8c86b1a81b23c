"""What every data source provides: a row count, a feature count and the rows asked for.

A source is opened on every rank (cheap: headers, line counts), then each rank reads only
the rows of its own blocks. Reading is local (no collectives), so readers may raise
:class:`~mpitrain.errors.UserError` freely; the caller makes the ranks agree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mpitrain.errors import UserError


@dataclass(frozen=True, eq=False)
class Block:
    """Rows one rank read from one source, before conversion and checks.

    ``X`` has any real dtype, or is a :class:`~mpitrain.data.csr.Csr` (sparse formats), and
    may be narrower than the final feature count (sparse
    formats only know their widest row); ``y`` holds labels or targets as float64.
    Sources whose labels may be text (CSV, Parquet, in-memory arrays) give the labels that
    are not numbers as ``label_names`` (this block's distinct ones) and ``label_codes``
    (per row: index into ``label_names``, -1 where ``y`` holds a number; ``y`` is NaN
    where it does not); see :func:`mpitrain.data.values.split_labels`.
    """

    X: np.ndarray  # or a Csr
    y: np.ndarray
    rows: np.ndarray  # index of each row within the source, for messages
    lines: np.ndarray | None = None  # 1-based line numbers, for text formats
    label_names: np.ndarray | None = None  # distinct non-numeric labels (str), or None
    label_codes: np.ndarray | None = None  # int64 per row: index into label_names, or -1

    def where(self, i: int) -> str:
        """Name local row ``i`` the way the user finds it in the file."""
        if self.lines is not None:
            return f"line {int(self.lines[i])}"
        return f"row {int(self.rows[i])}"


class Source(ABC):
    """A table of rows (features and one label/target each) that can be read by index."""

    #: Feature count, or None when only the rows tell (sparse formats: widest row, all ranks).
    n_features: int | None
    n_rows: int
    #: Classes the source declares (synthetic, digits); 0 means "infer from the labels".
    declared_classes: int = 0
    #: libsvm convention: labels -1/+1 stand for classes 0/1.
    signed_labels: bool = False
    #: Whether the rows are read with the collective ``exchange(comm, rows)`` (from the
    #: ranks that hold them) rather than :meth:`read`.
    collective: bool = False

    def __init__(self, option: str, name: str, quoted: str) -> None:
        self.option = option  # the command-line option that named this source
        self.name = name  # short description for summaries
        self.quoted = quoted  # how messages name it, e.g. 'data/train.csv' with quotes

    @abstractmethod
    def read(self, rows: np.ndarray) -> Block:
        """Read the rows with the given sorted, distinct indices (local, no collectives)."""

    def error(self, what: str) -> UserError:
        """A UserError about this source, prefixed with the option that named it."""
        return UserError(f"{self.option}: {what}")


def select_columns(source: Source, names: Sequence[str], label: str | None,
                   features: Sequence[str], *, skip: Callable[[str], bool] = lambda _: False,
                   ) -> tuple[str, list[str]]:
    """The label column and the feature columns of a table with columns ``names``:
    ``label`` (None: the last column) and ``features`` (empty: every other column, except
    those ``skip`` says). Raises UserError naming a missing or doubly used column."""
    usable = [name for name in names if not skip(name)]
    label = usable[-1] if label is None else label
    chosen = list(features) or [name for name in usable if name != label]
    for name, flag in [(label, "--label-column"), *((f, "--feature-columns") for f in chosen)]:
        if name not in names:
            raise source.error(f"{source.quoted} has no column {name!r} ({flag}; columns: "
                               f"{', '.join(names)})")
    if label in chosen:
        raise source.error(f"column {label!r} is the label (--label-column) and cannot also "
                           "be a feature (--feature-columns)")
    if not chosen:
        raise source.error(f"{source.quoted} has no feature columns besides the label {label!r}")
    return label, chosen


def take_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Copy the given sorted rows of ``array`` (in memory or memory-mapped) into a new array.

    A contiguous run is sliced rather than fancy-indexed, which is faster on a memmap.
    """
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return np.array(array[int(rows[0]) : int(rows[-1]) + 1])
    return np.asarray(array[rows])  # fancy indexing already copies (asarray drops memmap)
