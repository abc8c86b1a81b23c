"""Turn a ``--data`` / ``--test-data`` value into a :class:`~mpitrain.data.base.Source`.

``synthetic``, ``digits`` and ``iris`` name the built-in data sets unless a file or directory of
that name exists in the working directory; any other value, and any value with a path
separator (``./digits``), is a path.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpitrain.data.base import Source
from mpitrain.data.binary import NpyDirSource, NpzSource
from mpitrain.data.digits import BundledSource
from mpitrain.data.files import format_suffix, is_gzip
from mpitrain.data.hdf5 import Hdf5Source
from mpitrain.data.libsvm import LibsvmSource
from mpitrain.data.memory import IN_MEMORY
from mpitrain.data.parquet import ParquetSource, parquet_parts
from mpitrain.data.synthetic import SyntheticSource, SyntheticSpec
from mpitrain.data.text import CsvSource
from mpitrain.errors import UserError

BUILTIN = ("synthetic", "digits", "iris")
SUFFIXES = (".npz", ".csv", ".svm", ".libsvm", ".h5", ".hdf5", ".parquet")
EXPECTED = (
    "expected .npz, .csv, .svm, .libsvm, .h5, .hdf5, .parquet, a directory with X.npy and "
    "y.npy or .parquet parts, 'synthetic', 'digits' or 'iris'"
)
#: Values of --zero-based (libsvm feature indices), as scikit-learn's load_svmlight_file.
ZERO_BASED = ("auto", "true", "false")


@dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """How files of some formats are read (the same for --data and --test-data)."""

    zero_based: str = "auto"  # libsvm: 0-based indices? auto: if any index is 0
    h5_x: str = "X"  # HDF5: features dataset
    h5_y: str = "y"  # HDF5: labels dataset
    label_column: str | None = None  # Parquet: None = the last column
    feature_columns: tuple[str, ...] = ()  # Parquet: () = every column but the label
    hash_bits: int = 0  # libsvm: hash feature names into 2**hash_bits columns (0: off)
    hash_seed: int = 0  # libsvm: MurmurHash3 seed of the hashing


def is_builtin(value: str) -> bool:
    """Whether ``value`` names a built-in data set rather than a path."""
    return value in BUILTIN and not os.path.lexists(value)


def open_source(
    value: str | Source,
    *,
    option: str,
    task: str,
    seed: int,
    synthetic: SyntheticSpec,
    builtin: bool = True,
    read: ReadOptions = ReadOptions(),
    part: tuple[int, int] = (0, 1),
    dtype: np.dtype | type = np.float64,
) -> Source:
    """Open a source by name (``synthetic``, ``digits``, ``iris`` if ``builtin``) or by path; an
    already open source (in-memory arrays) is only checked.

    Local (no collectives): raises UserError for a missing, unreadable or malformed source.
    ``part=(rank, size)``: formats that open in parallel (libsvm) scan only that rank's
    share, and :func:`mpitrain.data.libsvm.share_scans` (collective) completes them.
    ``dtype``: the features' dtype once loaded (the synthetic rows are made in it).
    """
    if isinstance(value, Source):
        source = value
    elif builtin and is_builtin(value) and value == "synthetic":
        source = SyntheticSource(synthetic, task=task, seed=seed, option=option, dtype=dtype)
    elif builtin and is_builtin(value):
        source = BundledSource(value, option=option)
    elif builtin and value in BUILTIN:  # shadowed by a file or directory of that name
        try:
            source = _open_path(value, option=option, read=read, builtin=builtin, part=part)
        except UserError as exc:
            raise UserError(f"{exc} ('{value}' exists in the working directory, so it is "
                            f"read instead of the built-in data set)") from None
    else:
        source = _open_path(value, option=option, read=read, builtin=builtin, part=part)
    if source.n_rows == 0:
        raise source.error(f"{source.quoted} has no data rows")
    if source.n_features == 0:
        raise source.error(f"{source.quoted} has no features")
    return source


def _open_path(value: str, *, option: str, read: ReadOptions, builtin: bool,
               part: tuple[int, int] = (0, 1)) -> Source:
    """A directory holds .npy files or .parquet parts; otherwise the suffix picks the
    reader."""
    if value == IN_MEMORY:
        raise UserError(f"{option}: {IN_MEMORY} stands for the arrays a run was given in "
                        "Python (train(X=..., y=...)); pass them again, or a path")
    path = Path(value)
    if path.is_dir():
        if not (path / "X.npy").exists() and parquet_parts(path):
            return _parquet(path, option, read)
        return NpyDirSource(path, option=option)
    suffix = format_suffix(path)
    if suffix not in (".csv", ".svm", ".libsvm") and is_gzip(path):
        raise UserError(f"{option}: '{path}' is compressed, which only CSV and libsvm data "
                        "can be (.csv.gz, .svm.gz, .libsvm.gz)")
    if not path.exists():
        if suffix in SUFFIXES:
            raise UserError(f"{option}: file '{value}' does not exist")
        raise UserError(f"{option}: '{value}' does not exist{_hint(path, builtin)}")
    if suffix == ".npz":
        return NpzSource(path, option=option)
    if suffix == ".csv":
        return CsvSource(path, option=option, label_column=read.label_column,
                         feature_columns=read.feature_columns)
    if suffix in (".svm", ".libsvm"):
        return LibsvmSource(path, option=option, zero_based=read.zero_based, part=part,
                            hash_bits=read.hash_bits, hash_seed=read.hash_seed)
    if suffix in (".h5", ".hdf5"):
        return Hdf5Source(path, option=option, x_name=read.h5_x, y_name=read.h5_y)
    if suffix == ".parquet":
        return _parquet(path, option, read)
    raise UserError(f"{option}: '{path}' has an unknown format ({EXPECTED})")


def unused_read_option(read: ReadOptions, sources: list[Source | None]) -> str | None:
    """Message when an option for one format is set but no source has that format."""
    kinds = {type(source) for source in sources if source is not None}
    default = ReadOptions()
    for names, kind, what in [
        (("zero_based", "hash_bits"), (LibsvmSource,), "libsvm data (.svm, .libsvm)"),
        (("h5_x", "h5_y"), (Hdf5Source,), "HDF5 data (.h5, .hdf5)"),
        (("label_column", "feature_columns"), (ParquetSource, CsvSource),
         "Parquet data and CSV with a header"),
    ]:
        for name in names:
            if getattr(read, name) != getattr(default, name) and not kinds & set(kind):
                return f"--{name.replace('_', '-')} applies to {what} only"
    if read.hash_bits and read.zero_based != default.zero_based:
        return "--zero-based does not apply with --hash-bits (feature names are hashed)"
    if read.hash_seed != default.hash_seed and not read.hash_bits:
        return "--hash-seed applies with --hash-bits only"
    return None


def settle_libsvm_base(sources: list[Source | None], zero_based: str) -> None:
    """With ``--zero-based auto``, an index 0 in any libsvm file (training or test) makes
    all of them 0-based, as scikit-learn's ``load_svmlight_files``. Local: every rank has
    scanned the same files."""
    libsvm = [s for s in sources if isinstance(s, LibsvmSource)]
    if zero_based == "auto" and any(s.has_zero for s in libsvm):
        for source in libsvm:
            source.base = 0


def _parquet(path: Path, option: str, read: ReadOptions) -> Source:
    return ParquetSource(path, option=option, label_column=read.label_column,
                         feature_columns=read.feature_columns)


def _hint(path: Path, builtin: bool) -> str:
    """What a missing path without a known suffix might have meant."""
    names = difflib.get_close_matches(path.name, BUILTIN, n=1) if builtin else []
    if names and names[0] == path.name:  # e.g. ./digits
        return (f" (no such file or directory; the built-in data set is {names[0]!r}, "
                "without a path)")
    if names:
        return f" (no such file or directory; did you mean the built-in {names[0]!r}?)"
    return f" (no such file or directory; {EXPECTED})"
