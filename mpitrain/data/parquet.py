"""Parquet: one ``.parquet`` file, or a directory of ``.parquet`` parts (read in sorted
path order, as one table).

Opening reads only the footers (schema, row groups). A rank reads only the row groups that
hold its rows, one at a time, and keeps only its rows. The label column is
``label_column`` (default: the last column, as in CSV), the features are
``feature_columns`` (default: every other column, pandas index columns excepted). Labels
may be numbers or strings. Needs pyarrow (the ``[parquet]`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpitrain.data.base import Block, Source, select_columns
from mpitrain.data.labels import split_labels
from mpitrain.data.optional import import_optional

#: Column names pandas gives a stored index (``df.to_parquet`` of a non-default index).
PANDAS_INDEX = "__index_level_"


def parquet_parts(path: Path) -> list[Path]:
    """The ``.parquet`` files under a directory, in sorted path order, skipping hidden and
    ``_``-prefixed files and directories (``_temporary/``, ``.part.crc``), as pyarrow's
    datasets do."""
    return sorted(p for p in path.rglob("*.parquet") if p.is_file() and not any(
        part.startswith((".", "_")) for part in p.relative_to(path).parts))


class ParquetSource(Source):
    """Numeric feature columns and a numeric or string label column of a Parquet table."""

    def __init__(self, path: Path, *, option: str, label_column: str | None = None,
                 feature_columns: Sequence[str] | None = None) -> None:
        super().__init__(option, path.name or str(path), f"'{path}'")
        self.pa = import_optional("pyarrow", "parquet", f"{option}: reading {self.quoted}")
        self.pq = import_optional("pyarrow.parquet", "parquet", f"{option}: reading {self.quoted}")
        self.parts = parquet_parts(path) if path.is_dir() else [path]
        if not self.parts:
            raise self.error(f"directory {self.quoted} has no .parquet files "
                             "(expected X.npy and y.npy, or .parquet parts)")
        files = [self._file(part) for part in self.parts]
        schema = files[0].schema_arrow
        for part, file in zip(self.parts[1:], files[1:], strict=True):
            if not file.schema_arrow.equals(schema):
                raise self.error(f"'{part}' has other columns than '{self.parts[0]}' "
                                 "(every part must have the same schema)")
        self.label, self.features = select_columns(
            self, schema.names, label_column, feature_columns or (),
            skip=lambda name: name.startswith(PANDAS_INDEX))
        self._check_types(schema)
        # (part, row group, first row) of every row group, in table order
        self.groups: list[tuple[int, int]] = []
        starts = [0]
        for p, file in enumerate(files):
            for g in range(file.metadata.num_row_groups):
                self.groups.append((p, g))
                starts.append(starts[-1] + file.metadata.row_group(g).num_rows)
        self.starts = np.array(starts, dtype=np.int64)
        self.n_rows = int(self.starts[-1])
        self.n_features = len(self.features)

    def _file(self, part: Path) -> Any:
        try:
            return self.pq.ParquetFile(part)
        except OSError as exc:
            raise self.error(f"cannot read '{part}' ({exc.strerror or exc})") from exc
        except self.pa.ArrowException as exc:
            raise self.error(f"'{part}' is not a valid Parquet file ({exc})") from exc

    def _check_types(self, schema: Any) -> None:
        types = self.pa.types
        for name in self.features:
            kind = schema.field(name).type
            if not (types.is_integer(kind) or types.is_floating(kind) or types.is_boolean(kind)):
                raise self.error(f"column {name!r} of {self.quoted} has type {kind} (expected "
                                 "numbers; choose the features with --feature-columns)")
        kind = schema.field(self.label).type
        if types.is_dictionary(kind):
            kind = kind.value_type
        if not (types.is_integer(kind) or types.is_floating(kind) or types.is_boolean(kind)
                or types.is_string(kind) or types.is_large_string(kind)):
            raise self.error(f"label column {self.label!r} of {self.quoted} has type {kind} "
                             "(expected numbers or strings)")

    def read(self, rows: np.ndarray) -> Block:
        X = np.empty((len(rows), self.n_features))
        numbers = np.empty(len(rows))
        texts: list[str] = []
        if len(rows):
            first = int(np.searchsorted(self.starts, rows[0], side="right")) - 1
            last = int(np.searchsorted(self.starts, rows[-1], side="right")) - 1
            files: dict[int, Any] = {}
            for index in range(first, last + 1):
                lo, hi = np.searchsorted(rows, self.starts[index : index + 2])
                if lo == hi:
                    continue
                part, group = self.groups[index]
                file = files.get(part) or files.setdefault(part, self._file(self.parts[part]))
                local = rows[lo:hi] - self.starts[index]
                table = self._row_group(file, part, group)
                if local[-1] - local[0] + 1 == len(local):  # a run of rows: a view
                    table = table.slice(int(local[0]), len(local))
                else:
                    table = table.take(local)
                self._check_nulls(table, rows[lo:hi])
                for j, name in enumerate(self.features):
                    X[lo:hi, j] = table.column(name).to_numpy()
                label = table.column(self.label)
                if self._text_labels(label.type):
                    texts += [str(v) for v in label.to_pylist()]
                else:
                    numbers[lo:hi] = label.to_numpy()
        self.pa.default_memory_pool().release_unused()  # the row groups' buffers
        if texts:
            y, names, codes = split_labels(texts)
            return Block(X=X, y=y, rows=rows, label_names=names, label_codes=codes)
        return Block(X=X, y=numbers, rows=rows)

    def _row_group(self, file: Any, part: int, group: int) -> Any:
        try:
            return file.read_row_group(group, columns=[*self.features, self.label])
        except (OSError, self.pa.ArrowException) as exc:
            raise self.error(f"cannot read '{self.parts[part]}' ({exc})") from exc

    def _text_labels(self, kind: Any) -> bool:
        types = self.pa.types
        if types.is_dictionary(kind):
            kind = kind.value_type
        return bool(types.is_string(kind) or types.is_large_string(kind))

    def _check_nulls(self, table: Any, rows: np.ndarray) -> None:
        for name in [*self.features, self.label]:
            column = table.column(name)
            if column.null_count:
                missing = np.asarray(column.is_null().to_numpy(zero_copy_only=False))
                row = int(rows[int(np.argmax(missing))])
                raise self.error(f"{self.quoted} has a missing value in column {name!r} "
                                 f"(row {row})")
