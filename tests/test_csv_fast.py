"""The numba fast path of the CSV reader gives exactly the rows of the general path (Python
floats, line numbers, chosen columns), and leaves every unusual file to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mpitrain.data import text
from mpitrain.data.text import CsvSource

pytestmark = pytest.mark.timeout(120)


def both(path: Path, rows: np.ndarray, monkeypatch, **options) -> tuple:
    """(fast block or None, general block) of the same rows."""
    source = CsvSource(path, option="--data", **options)
    fast = source._read_numbers(rows)
    with monkeypatch.context() as patch:
        patch.setattr(CsvSource, "_read_numbers", lambda self, rows: None)
        general = source.read(rows)
    return fast, general


def same(fast, general) -> None:
    assert fast is not None
    np.testing.assert_array_equal(fast.X, general.X)
    np.testing.assert_array_equal(fast.y, general.y)
    np.testing.assert_array_equal(fast.lines, general.lines)


@pytest.mark.parametrize("chunk", [text.READ_BYTES, 7])
def test_fast_rows_equal_the_general_path(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(text, "READ_BYTES", chunk)
    rng = np.random.default_rng(0)
    lines = ["a, b ,c,label", ""]
    for i in range(3000):
        values = rng.standard_normal(3) * 10.0 ** rng.integers(-6, 6, 3)
        fields = [repr(float(v)) if i % 3 else f"{v:.6g}" for v in values]
        lines.append(" , ".join(fields) + f",{i % 4}" + ("\r" if i % 5 == 0 else ""))
        if i % 97 == 0:
            lines.append("   ")
    path = tmp_path / "a.csv"
    path.write_text("\n".join(lines))  # no newline at the end
    for rows in (np.arange(3000), np.arange(5, 3000, 7), np.array([2999])):
        same(*both(path, rows, monkeypatch))
    fast, general = both(path, np.arange(0, 3000, 11), monkeypatch, label_column="a",
                         feature_columns=("c", "b"))
    same(fast, general)
    assert fast.X.shape == (273, 2)


def test_a_skipped_text_column_stays_fast(tmp_path, monkeypatch):
    path = tmp_path / "ids.csv"
    path.write_text("id,x,y\n" + "".join(f"row-{i},{i / 3},{i % 2}\n" for i in range(50)))
    same(*both(path, np.arange(50), monkeypatch, feature_columns=("x",), label_column="y"))


@pytest.mark.parametrize("body", [
    "1,2,cat\n3,4,dog\n",  # class names
    "1,2,0\n3,4\n",  # a short line: the general path names it
    "1,inf,0\n",  # not a plain number
    "1,0.12345678901234567890,1\n",  # more digits than the fast parser takes
    "\ufeff1,2,0\n",  # a byte order mark on a data line
])
def test_unusual_rows_go_to_the_general_path(tmp_path, monkeypatch, body):
    path = tmp_path / "u.csv"
    path.write_text(body)
    source = CsvSource(path, option="--data")
    assert source._read_numbers(np.arange(source.n_rows)) is None
