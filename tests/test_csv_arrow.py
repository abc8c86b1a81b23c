"""The CSV reader's pyarrow path (mpitrain.data.csv_arrow) gives the rows, values, labels
and messages of the numpy.loadtxt path, bit for bit, on tricky files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_mpi
from test_data import load, write_text

from mpitrain.data import csv_arrow
from mpitrain.data import text as text_module
from mpitrain.data.base import Block
from mpitrain.data.text import CsvSource
from mpitrain.errors import UserError

pytest.importorskip("pyarrow")
pytestmark = pytest.mark.timeout(120)


def read_both(path: str, monkeypatch, **columns) -> tuple[Block, Block]:
    """The whole file read by the pyarrow path and by the loadtxt path."""
    blocks = []
    for fast in (True, False):
        monkeypatch.setattr(CsvSource, "fast", fast)
        source = CsvSource(Path(path), option="--data", **columns)
        blocks.append(source.read(np.arange(source.n_rows, dtype=np.int64)))
    return blocks[0], blocks[1]


def assert_same(fast: Block, slow: Block) -> None:
    assert fast.X.dtype == slow.X.dtype == np.float64
    assert fast.X.shape == slow.X.shape
    assert np.array_equal(fast.X.view(np.int64), slow.X.view(np.int64))  # bit for bit
    assert np.array_equal(fast.y, slow.y, equal_nan=True)
    assert np.array_equal(fast.lines, slow.lines)
    for a, b in ((fast.label_names, slow.label_names), (fast.label_codes, slow.label_codes)):
        assert (a is None and b is None) or np.array_equal(a, b)


def tricky_numbers(n: int) -> list[str]:
    """17-digit values over the whole exponent range, subnormals, halfway cases and
    numbers with more digits than a double holds."""
    rng = np.random.default_rng(5)
    values = rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n)
    texts = [repr(v) for v in values.tolist()]
    digits = rng.integers(10**17, 10**18, (200, 2)).tolist()  # 36 significant digits
    texts += [f"{a}{b}e{e}" for (a, b), e in zip(digits, rng.integers(-360, 280, 200).tolist(),
                                                 strict=True)]
    texts += ["9007199254740993", "2.2250738585072011e-308", "4.9406564584124654e-324",
                    "2.4703282292062327e-324", "2.4703282292062328e-324", "1e-400", "1e400",
                    "0.1000000000000000055511151231257827021181583404541015625",
                    "1.00000000000000011102230246251565404236316680908203125",
                    "7.2057594037927933e16", "+1", "-0", ".5", "1.", "1E+05", "0000.25",
                    " 3.5", "4.5 ", "\t6", "nan", "-inf", "Infinity", "NaN"]
    return texts


def test_tricky_numbers_are_parsed_bit_for_bit_alike(tmp_path, monkeypatch):
    texts = tricky_numbers(6000)
    texts += ["0"] * (-len(texts) % 3)
    rows = [",".join(texts[i:i + 3]) for i in range(0, len(texts), 3)]
    labels = [str(i % 4) for i in range(len(rows))]
    text = "".join(f"{r},{lab}\n" for r, lab in zip(rows, labels, strict=True))
    fast, slow = read_both(write_text(tmp_path / "a.csv", text), monkeypatch)
    assert_same(fast, slow)
    assert csv_arrow.parse_lines(text.encode(), n_rows=len(rows), n_columns=4,  # pyarrow's
                                 feature_index=[0, 1, 2], label_index=3) is not None
    expected = np.array([float(t) for t in texts]).reshape(-1, 3)
    finite = np.isfinite(expected)
    assert np.array_equal(fast.X[finite].view(np.int64), expected[finite].view(np.int64))


@pytest.mark.parametrize("text", [
    "a,b,label\n1,2,cat\n3,4, dog \n5,6,0\n",  # names and numbers as labels
    "1,2,yes\n3,4,no\n",  # no header, names
    "a,b,label\r\n1.5,2,0\r\n\r\n  \n3,4,1\r\n5,6,2",  # CRLF, blank lines, no final newline
    "a,b,label\n1,2,3 # note\n4,5,6\n",  # what loadtxt takes as a comment
    "a,b,label\n1,2,#x\n4,5,6\n",
    "a,b,label\n1,2,\n4,5,6\n",  # an empty label is a name
    "a,b,label\n1,2,1_0\n4,5,0x1\n",  # Python's float() takes 1_0, loadtxt does not
    "\ufeff1,2,0\n3,4,1\n",  # byte order mark (the loadtxt path)
    "1,2,0\r3,4,1\n5,6,1\n",  # a lone carriage return is not a line break
    "a,b,label\n\"1\",2,0\n",  # quotes are not special: a non-numeric value
])
@pytest.mark.parametrize("chunk_bytes", [text_module.CHUNK_BYTES, 1])  # 1: a line a chunk
def test_plain_and_odd_files_read_alike(tmp_path, monkeypatch, text, chunk_bytes):
    default = text_module.CHUNK_BYTES
    path = write_text(tmp_path / "a.csv", text)
    results = []
    for fast in (True, False):  # the reference: loadtxt over the whole block, as before
        monkeypatch.setattr(CsvSource, "fast", fast)
        monkeypatch.setattr(text_module, "CHUNK_BYTES", chunk_bytes if fast else default)
        try:
            source = CsvSource(Path(path), option="--data")
            results.append(source.read(np.arange(source.n_rows, dtype=np.int64)))
        except UserError as exc:
            results.append(str(exc))
    if isinstance(results[1], str):
        assert results[0] == results[1]
    else:
        assert_same(*results)


@pytest.mark.parametrize("chunk_bytes", [text_module.CHUNK_BYTES, 5000])
def test_named_columns_and_selected_rows(tmp_path, monkeypatch, chunk_bytes):
    rng = np.random.default_rng(1)
    lines = ["id,x,label,z,note"]
    lines += [f"r{i},{rng.standard_normal()!r},{['cat', 'dog', '2'][i % 3]},"
              f"{rng.standard_normal()!r},free text {i}" for i in range(3000)]
    path = write_text(tmp_path / "a.csv", "\n".join(lines) + "\n")
    rows = np.sort(rng.choice(3000, 1700, replace=False)).astype(np.int64)
    blocks = []
    for fast in (True, False):
        monkeypatch.setattr(CsvSource, "fast", fast)
        monkeypatch.setattr(text_module, "CHUNK_BYTES", chunk_bytes if fast else 1 << 40)
        source = CsvSource(Path(path), option="--data",
                           label_column="label", feature_columns=["z", "x"])
        blocks.append(source.read(rows))
    assert_same(*blocks)
    assert blocks[0].lines[0] == rows[0] + 2


def test_bad_value_is_named_as_before(tmp_path, monkeypatch):
    path = write_text(tmp_path / "a.csv", "a,b,label\n1,2,0\n3,x4,1\n5,6,cat\n7,y,1\n")
    monkeypatch.setattr(CsvSource, "fast", True)
    monkeypatch.setattr(text_module, "CHUNK_BYTES", 1)
    with pytest.raises(UserError, match=r"line 3 has a non-numeric value 'x4' in column 'b'"):
        load(path)


def test_without_pyarrow_the_loadtxt_path_reads(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_arrow, "_pyarrow", lambda: None)
    path = write_text(tmp_path / "a.csv", "a,b,label\n1,2,cat\n3,4,dog\n")
    data = load(path)
    assert data.train.X.tolist() == [[1, 2], [3, 4]]
    assert data.classes.tolist() == ["cat", "dog"]


def test_gzip_reads_alike(tmp_path, monkeypatch):
    import gzip
    text = "".join(f"{v!r},{i % 2}\n" for i, v in
                   enumerate(np.random.default_rng(2).standard_normal(500).tolist()))
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    assert_same(*read_both(str(path), monkeypatch))


def test_bench_data_csv_mode_writes_json(tmp_path):
    out = tmp_path / "data.json"
    done = run_mpi(["-m", "mpitrain", "bench", "data", "--format", "csv", "--rows", "2000",
                    "--features", "8", "--repeat", "1", "--pyarrow", "--json", str(out)],
                   ranks=2)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("csv read: 2000 rows")
    result = json.loads(out.read_text())
    assert result["format"] == "csv" and result["ranks"] == 2 and result["rows"] == 2000
    assert result["seconds"] > 0 and result["cpu_seconds"] > 0
    assert result["pyarrow_cpu_seconds"] > 0
    assert result["share_MB_per_rank"] == [1000 * 9 * 8 / 2**20] * 2  # X and y, float64
