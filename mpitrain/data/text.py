"""Line-oriented text: CSV (label in the last column, or columns named by a header).

CSV labels may be numbers or names (``cat``); see :mod:`mpitrain.data.labels`. libsvm
files have their own parallel reader (:mod:`mpitrain.data.libsvm`).

Opening a source scans the file once, counting data lines and remembering the byte
offset of every :data:`CHECKPOINT_ROWS`-th one. Reading seeks to the checkpoint before the
first wanted row and parses only the wanted lines, so a rank never holds other ranks' rows.
CSV lines are parsed :data:`CHUNK_BYTES` of text at a time, by pyarrow when it is installed
(:mod:`mpitrain.data.csv_arrow`), so a rank holds its arrays and one chunk of text.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO

import numpy as np

from mpitrain.data.base import Block, Source, select_columns
from mpitrain.data.csv_arrow import parse_lines
from mpitrain.data.files import open_bytes
from mpitrain.data.labels import split_labels

#: A byte offset is remembered for every this many data lines.
CHECKPOINT_ROWS = 1024
#: Text parsed at a time when reading CSV rows (bounds the text a rank holds).
CHUNK_BYTES = 1 << 24


class TextSource(Source):
    """Row counting and selective line reading shared by the text formats."""

    def __init__(self, path: Path, *, option: str) -> None:
        super().__init__(option, path.name, f"'{path}'")
        self.path = path

    def is_data(self, line: bytes) -> bool:
        """Whether a raw line holds a row (blank lines and comments do not)."""
        return bool(line) and not line.isspace()  # as bool(line.strip()), without a copy

    def open_file(self) -> AbstractContextManager[IO[bytes]]:
        """The file as bytes (``.gz`` decompressed as it is read)."""
        return open_bytes(self, self.path)

    def scan(self, offset: int = 0, line: int = 1) -> None:
        """Count the data lines from byte ``offset`` (line number ``line``) to the end."""
        offsets, numbers = [], []
        count, is_data = 0, self.is_data
        with self.open_file() as fp:
            fp.seek(offset)
            for raw in fp:
                if is_data(raw):
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
        raws, numbers = self.raw_lines(rows)
        return [_decode(raw) for raw in raws], numbers

    def raw_lines(self, rows: np.ndarray) -> tuple[list[bytes], np.ndarray]:
        """The bytes and 1-based line numbers of the data lines with the given sorted indices."""
        raws: list[bytes] = []
        numbers: list[int] = []
        for chunk, chunk_numbers in self.raw_chunks(rows):
            raws += chunk
            numbers += chunk_numbers
        return raws, np.array(numbers, dtype=np.int64)

    def raw_chunks(
        self, rows: np.ndarray, chunk_bytes: float = math.inf
    ) -> Iterator[tuple[list[bytes], list[int]]]:
        """The bytes and 1-based line numbers of the data lines with the given sorted
        indices, in chunks of about ``chunk_bytes`` (so a caller holds one chunk's text)."""
        if len(rows) == 0:
            return
        wanted = rows.tolist()
        raws: list[bytes] = []
        numbers: list[int] = []
        done, size = 0, 0
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
                        done += 1
                        size += len(raw)
                        if done == len(wanted):
                            break
                        target = wanted[done]
                        if size >= chunk_bytes:
                            yield raws, numbers
                            raws, numbers, size = [], [], 0
                    index += 1
                line += 1
        if done != len(wanted):
            raise self.error(f"{self.quoted} changed while being read")
        yield raws, numbers


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
    ``label_column`` and ``feature_columns`` (other columns may then hold anything).

    Lines are parsed by pyarrow when it is installed (:mod:`.csv_arrow`; ``fast=False``
    or no pyarrow: ``numpy.loadtxt``), with the same values either way."""

    #: Whether to try pyarrow's parser first (tests compare both paths).
    fast = True

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
        X = np.empty((len(rows), len(self.feature_index)))
        numbers = np.empty(len(rows), dtype=np.int64)
        ys: list[np.ndarray | None] = []  # per chunk: labels as numbers, or None
        texts: list[str] = []  # every label's text (used when some label is a name)
        start = 0
        for raws, chunk_numbers in self.raw_chunks(rows, CHUNK_BYTES):
            stop = start + len(raws)
            numbers[start:stop] = chunk_numbers
            ys.append(self._parse_chunk(raws, numbers[start:stop], X[start:stop], texts))
            start = stop
        if all(y is not None for y in ys):  # every label a number
            y = np.concatenate(ys) if ys else np.empty(0)
            return Block(X=X, y=y, rows=rows, lines=numbers)
        y, names, codes = split_labels(texts)
        return Block(X=X, y=y, rows=rows, lines=numbers, label_names=names, label_codes=codes)

    def _parse_chunk(self, raws: list[bytes], numbers: np.ndarray, X: np.ndarray,
                     texts: list[str]) -> np.ndarray | None:
        """Parse some lines into ``X``; their labels' texts go to ``texts``; returns the
        labels when every one is a number, else None."""
        text = b"".join(raws)  # a row a line, each ending in a line feed but the last
        raws.clear()  # the chunk's text held once
        parsed = parse_lines(text, n_rows=len(numbers), n_columns=self.n_columns,
                             feature_index=self.feature_index,
                             label_index=self.label_index) if self.fast else None
        if parsed is not None:
            X[...], y, label_texts = parsed
            texts += label_texts
            return y
        # no pyarrow, or not plain numbers: parse (and name the problem) line by line
        lines = [_decode(line) for line in text.split(b"\n")[: len(numbers)]]
        del text
        X[...], labels = self.parse(lines, numbers)
        if isinstance(labels, np.ndarray):
            last = self.label_index == self.n_columns - 1
            texts += [(line.rpartition(",")[2] if last else line.split(",")[self.label_index])
                      .strip() for line in lines]
            return labels
        texts += labels
        return None

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
