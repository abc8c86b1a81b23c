"""Turn a ``--data`` / ``--test-data`` value into a :class:`~mpitrain.data.base.Source`."""

from __future__ import annotations

from pathlib import Path

from mpitrain.data.base import Source
from mpitrain.data.binary import NpyDirSource, NpzSource
from mpitrain.data.digits import DigitsSource
from mpitrain.data.synthetic import SyntheticSource, SyntheticSpec
from mpitrain.data.text import CsvSource, LibsvmSource
from mpitrain.errors import UserError

FORMATS = {".npz": NpzSource, ".csv": CsvSource, ".svm": LibsvmSource, ".libsvm": LibsvmSource}
EXPECTED = (
    "expected .npz, .csv, .svm, .libsvm, a directory with X.npy and y.npy, 'synthetic' or 'digits'"
)


def open_source(
    value: str,
    *,
    option: str,
    task: str,
    seed: int,
    synthetic: SyntheticSpec,
    builtin: bool = True,
) -> Source:
    """Open a source by name (``synthetic``, ``digits`` if ``builtin``) or by path.

    Local (no collectives): raises UserError for a missing, unreadable or malformed source.
    """
    if builtin and value == "synthetic":
        source: Source = SyntheticSource(synthetic, task=task, seed=seed, option=option)
    elif builtin and value == "digits":
        source = DigitsSource(option=option)
    else:
        source = _open_path(Path(value), option=option)
    if source.n_rows == 0:
        raise source.error(f"{source.quoted} has no data rows")
    if source.n_features == 0:
        raise source.error(f"{source.quoted} has no features")
    return source


def _open_path(path: Path, *, option: str) -> Source:
    """A directory holds .npy files; otherwise the suffix picks the reader (a typo in a
    name like 'synthetc' is reported as an unknown format, not as a missing file)."""
    if path.is_dir():
        return NpyDirSource(path, option=option)
    reader = FORMATS.get(path.suffix.lower())
    if reader is None:
        raise UserError(f"{option}: '{path}' has an unknown format ({EXPECTED})")
    if not path.exists():
        raise UserError(f"{option}: file '{path}' does not exist")
    return reader(path, option=option)
