"""Line-oriented text formats: CSV (label in the last column) and libsvm/svmlight.

CSV labels may be numbers or names (``cat``); see :mod:`mpitrain.data.labels`. libsvm
feature indices may be 1-based (libsvm's convention) or 0-based (scikit-learn's
``dump_svmlight_file`` default): the scan notes whether any index is 0, so every rank,
having scanned the same file, decides alike without a collective.

Opening a source scans the file once, counting data lines and remembering the byte
offset of every :data:`CHECKPOINT_ROWS`-th one. Reading seeks to the checkpoint before the
first wanted row and parses only the wanted lines, so a rank never holds other ranks' rows.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from mpitrain.data.base import Block, Source, select_columns
from mpitrain.data.labels import split_labels

#: A byte offset is remembered for every this many data lines.
CHECKPOINT_ROWS = 1024
#: Largest libsvm feature index accepted (features are stored densely).
MAX_INDEX = 2**31 - 1


class TextSource(Source):
    """Row counting and selective line reading shared by the text formats."""

    #: Called with every data line while scanning, for formats that learn something from
    #: all rows (libsvm: is any feature index 0?); None for the others.
    note: Callable[[bytes], None] | None = None

    def __init__(self, path: Path, *, option: str) -> None:
        super().__init__(option, path.name, f"'{path}'")
        self.path = path

    def is_data(self, line: bytes) -> bool:
        """Whether a raw line holds a row (blank lines and comments do not)."""
        return bool(line.strip())

    def open_file(self) -> IO[bytes]:
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise self.error(f"cannot read {self.quoted} ({exc.strerror or exc})") from exc

    def scan(self, offset: int = 0, line: int = 1) -> None:
        """Count the data lines from byte ``offset`` (line number ``line``) to the end."""
        offsets, numbers = [], []
        count, is_data, note = 0, self.is_data, self.note
        with self.open_file() as fp:
            fp.seek(offset)
            for raw in fp:
                if is_data(raw):
                    if note is not None:
                        note(raw)
                    if count % CHECKPOINT_ROWS == 0:
                        offsets.append(offset)
                        numbers.append(line)
                    count += 1
                offset += len(raw)
                line += 1
        self.n_rows = count
        self.offsets = np.array(offsets, dtype=np.int64)
        self.numbers = np.array(numbers, dtype=np.int64)

    def lines(self, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The text and 1-based line numbers of the data lines with the given sorted indices."""
        if len(rows) == 0:
            return [], np.empty(0, dtype=np.int64)
        wanted = rows.tolist()
        raws: list[bytes] = []
        numbers: list[int] = []
        checkpoint = wanted[0] // CHECKPOINT_ROWS
        index = checkpoint * CHECKPOINT_ROWS
        line = int(self.numbers[checkpoint])
        is_data, target = self.is_data, wanted[0]
        with self.open_file() as fp:
            fp.seek(int(self.offsets[checkpoint]))
            for raw in fp:
                if is_data(raw):
                    if index == target:
                        raws.append(raw)
                        numbers.append(line)
                        if len(raws) == len(wanted):
                            break
                        target = wanted[len(raws)]
                    index += 1
                line += 1
        if len(raws) != len(wanted):
            raise self.error(f"{self.quoted} changed while being read")
        texts = [_decode(raw) for raw in raws]
        return texts, np.array(numbers, dtype=np.int64)


def _decode(raw: bytes) -> str:
    """A raw line as text without surrounding white space or a UTF-8 byte order mark."""
    return raw.decode("utf-8", errors="replace").strip().lstrip("\ufeff")


def _floats(fields: list[str]) -> bool:
    """Whether every field parses as a number."""
    try:
        for field in fields:
            float(field)
    except ValueError:
        return False
    return True


class CsvSource(TextSource):
    """Comma-separated numbers and a label (a number or a name), optional header line (a
    first line with a field before the last that is not a number). The label is the last
    column and the features the others, or with a header the columns named by
    ``label_column`` and ``feature_columns`` (other columns may then hold anything)."""

    def __init__(self, path: Path, *, option: str, label_column: str | None = None,
                 feature_columns: Sequence[str] = ()) -> None:
        super().__init__(path, option=option)
        offset, line, raw = 0, 1, b""
        with self.open_file() as fp:
            for raw in fp:  # find the first non-blank line: header or first row
                if self.is_data(raw):
                    break
                offset += len(raw)
                line += 1
        if not self.is_data(raw):
            raise self.error(f"{self.quoted} has no data rows")
        first = _decode(raw).split(",")
        self.header = not _floats(first[:-1])
        self.n_columns = len(first)
        self.first_line = line
        if self.n_columns < 2:
            raise self.error(
                f"{self.quoted} line {line} has 1 column "
                "(expected feature columns followed by a label column)"
            )
        self.label_index, self.feature_index = self.n_columns - 1, list(range(self.n_columns - 1))
        self.usecols: list[int] | None = None  # None: every column, the label last
        #: Column names from the header line, if any.
        self.columns = [field.strip() for field in first] if self.header else None
        if label_column is not None or feature_columns:
            self._name_columns(label_column, feature_columns)
        if self.header:
            offset += len(raw)
            line += 1
        self.scan(offset, line)
        if self.n_rows == 0:
            raise self.error(f"{self.quoted} has a header line but no data rows")
        self.n_features = len(self.feature_index)

    def _name_columns(self, label: str | None, features: Sequence[str]) -> None:
        """Use the columns the header names (--label-column, --feature-columns)."""
        if self.columns is None:
            raise self.error(f"{self.quoted} has no header line, so --label-column and "
                             "--feature-columns cannot name its columns")
        label, chosen = select_columns(self, self.columns, label, features)
        self.label_index = self.columns.index(label)
        self.feature_index = [self.columns.index(name) for name in chosen]
        self.usecols = [*self.feature_index, self.label_index]

    def read(self, rows: np.ndarray) -> Block:
        texts, numbers = self.lines(rows)
        X, labels = self.parse(texts, numbers)
        if isinstance(labels, np.ndarray):  # every label a number
            return Block(X=X, y=labels, rows=rows, lines=numbers)
        y, names, codes = split_labels(labels)
        return Block(X=X, y=y, rows=rows, lines=numbers, label_names=names, label_codes=codes)

    def parse(
        self, texts: list[str], numbers: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | list[str]]:
        """Parse lines into (rows, features) float64 and the labels: float64 when every
        label is a number, else their texts. Names the first bad line."""
        if not texts:
            return np.empty((0, len(self.feature_index))), np.empty(0)
        values = self._numbers(texts, self.usecols)
        if values is not None:  # the common case: numbers only
            return values[:, :-1], values[:, -1].copy()
        X = self._numbers(texts, self.feature_index)
        if X is not None:
            if self.label_index == self.n_columns - 1:
                labels = [text.rpartition(",")[2].strip() for text in texts]
            else:
                labels = [text.split(",")[self.label_index].strip() for text in texts]
            return X, labels
        for text, number in zip(texts, numbers, strict=True):  # find and name the problem
            fields = text.split(",")
            if len(fields) != self.n_columns:
                raise self.error(
                    f"{self.quoted} line {number} has {len(fields)} columns but line "
                    f"{self.first_line} has {self.n_columns}"
                )
            for j in self.feature_index:
                if not _floats([fields[j]]):
                    where = ("" if self.columns is None else f" in column {self.columns[j]!r} "
                             "(choose the features with --feature-columns)")
                    raise self.error(f"{self.quoted} line {number} has a non-numeric value "
                                     f"{fields[j].strip()!r}{where}")
        raise self.error(f"cannot parse {self.quoted} as CSV")

    def _numbers(self, texts: list[str], usecols: list[int] | None) -> np.ndarray | None:
        """The given columns (None: all) of the lines as a float64 array, or None if they
        are not numbers or a line has another number of columns."""
        if usecols is not None and any(t.count(",") != self.n_columns - 1 for t in texts):
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = np.loadtxt(texts, delimiter=",", dtype=np.float64, ndmin=2,
                                    usecols=usecols)
        except ValueError:
            return None
        width = self.n_columns if usecols is None else len(usecols)
        return values if values.shape == (len(texts), width) else None


class LibsvmSource(TextSource):
    """libsvm/svmlight lines ``label index:value ...``.

    The feature count is the largest index over the whole file, known only once every
    rank has parsed its lines, so ``n_features`` is None and readers return rows as wide
    as their own widest row. ``zero_based``: ``"true"`` (index 0 is column 0), ``"false"``
    (index 1 is column 0; an index 0 is an error) or ``"auto"``: 0-based when the file has
    an index 0 (:func:`mpitrain.data.sources.settle_libsvm_base` extends that to a
    training and a test file together, as scikit-learn's ``load_svmlight_files``).
    """

    n_features = None
    signed_labels = True

    def __init__(self, path: Path, *, option: str, zero_based: str = "auto") -> None:
        super().__init__(path, option=option)
        self.has_zero = False  # set by note() while scanning
        self.scan()
        if self.n_rows == 0:
            raise self.error(f"{self.quoted} has no data rows")
        #: The index that goes to column 0.
        self.base = 0 if zero_based == "true" or (zero_based == "auto" and self.has_zero) else 1

    def is_data(self, line: bytes) -> bool:
        return bool(line.split(b"#", 1)[0].strip())

    def note(self, line: bytes) -> None:  # type: ignore[override]
        if not self.has_zero and b"0:" in line and _ZERO_INDEX.search(line.split(b"#", 1)[0]):
            self.has_zero = True

    def read(self, rows: np.ndarray) -> Block:
        texts, numbers = self.lines(rows)
        bodies = [text.split("#", 1)[0].split(None, 1) for text in texts]
        labels = [body[0] for body in bodies]
        pairs = [body[1] if len(body) > 1 else "" for body in bodies]
        try:
            y, counts, entries = _parse_fast(labels, pairs, self.base)
        except ValueError:
            y, counts, entries = self._parse_line_by_line(labels, pairs, numbers)
        cols = entries[0::2].astype(np.int64) - self.base
        X = np.zeros((len(texts), int(cols.max()) + 1 if len(cols) else 0))
        X[np.repeat(np.arange(len(texts)), counts), cols] = entries[1::2]
        return Block(X=X, y=y, rows=rows, lines=numbers)

    def _parse_line_by_line(
        self, labels: list[str], pairs: list[str], numbers: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like :func:`_parse_fast`, token by token: skips ``qid:``, names the first bad line."""
        y = np.empty(len(labels))
        counts = np.zeros(len(labels), dtype=np.int64)
        entries: list[float] = []
        for i, (label, line_pairs, number) in enumerate(zip(labels, pairs, numbers, strict=True)):
            y[i] = self._number(label, number, "label")
            for pair in line_pairs.split():
                key, sep, value = pair.partition(":")
                if key == "qid":
                    continue
                if not sep:
                    raise self.error(
                        f"{self.quoted} line {number} has {pair!r} (expected index:value)"
                    )
                entries += [self._index(key, number), self._number(value, number, "value")]
                counts[i] += 1
        return y, counts, np.array(entries, dtype=np.float64)

    def _number(self, text: str, number: int, what: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise self.error(
                f"{self.quoted} line {number} has a non-numeric {what} {text!r}"
            ) from None

    def _index(self, text: str, number: int) -> int:
        """A feature index, from ``base`` to MAX_INDEX."""
        try:
            index = int(text)
        except ValueError:
            index = -1
        if not self.base <= index <= MAX_INDEX:
            raise self.error(
                f"{self.quoted} line {number} has feature index {text!r} "
                f"(expected an integer from {self.base} to {MAX_INDEX})"
            )
        return index


#: A token without a colon, or with more than one.
_NOT_A_PAIR = re.compile(r"(?<!\S)[^\s:]+(?!\S)|:\S*:")


#: A feature index 0 (``0:``, ``00:``, ``+0:``) at the start of a token.
_ZERO_INDEX = re.compile(rb"(?:^|\s)\+?0+:")


def _parse_fast(
    labels: list[str], pairs: list[str], base: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse labels and ``index:value`` pairs with a few vectorised calls.

    Returns the labels, the number of pairs per line and the flat (index, value, ...) list.
    Raises ValueError on anything unusual (bad tokens, ``qid:``), which the caller then
    parses line by line to name the problem.
    """
    y = np.array(labels, dtype=np.float64)
    flat = " ".join(pairs)
    if "qid" in flat or _NOT_A_PAIR.search(flat):
        raise ValueError("needs the line-by-line parser")
    counts = np.array([text.count(":") for text in pairs], dtype=np.int64)
    entries = np.array(flat.replace(":", " ").split(), dtype=np.float64)
    index = entries[0::2]
    valid = (index >= base) & (index <= MAX_INDEX) & (index == np.floor(index))
    if len(entries) != 2 * counts.sum() or not valid.all():
        raise ValueError("needs the line-by-line parser")
    return y, counts, entries
