"""The parallel libsvm reader on one process: the numba parser against scikit-learn's
load_svmlight_file and Python's float on odd inputs, any byte split, chunk boundaries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_mpi, run_train, same_model_on
from test_data import example, load, write, write_text

from mpitrain.data import libsvm
from mpitrain.data import libsvm_parse as kernels
from mpitrain.data.libsvm import LibsvmSource, share_scans
from mpitrain.errors import UserError

pytestmark = pytest.mark.timeout(120)


def as_bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


def dense(source: LibsvmSource, rows=None) -> tuple[np.ndarray, np.ndarray]:
    block = source.read(np.arange(source.n_rows) if rows is None else rows)
    return block.X.dense(max(block.X.n_cols, 1), np.float64), block.y


@pytest.mark.parametrize("seed", range(3))
def test_numbers_are_parsed_exactly_as_python_float(seed):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(20000) * 10.0 ** rng.integers(-8, 9, 20000)
    texts = [f"{x:.17g}" for x in values] + [f"{x:.6g}" for x in values]
    texts += [repr(float(x)) for x in values]
    texts += ["0", "-0", "+1", ".5", "5.", "1e5", "1E-7", "000.000120", "123456789012345678"]
    parsed = 0
    for text in texts:
        value, ok = kernels.parse_float(as_bytes(text), 0, len(text))
        if ok:
            parsed += 1
            assert value == float(text) and np.signbit(value) == np.signbit(float(text)), text
    assert parsed > 0.9 * len(texts)
    for text in ["", "-", ".", "e5", "1e", "1.2.3", "1x", "inf", "nan", "0x10"]:
        assert not kernels.parse_float(as_bytes(text), 0, len(text))[1], text


ODD = {
    "plain": "1 1:0.5 3:2\n-1 2:1\n",
    "comments and blank lines": "# head\n\n1 1:1 # 4:4\n  \n-1 2:0.25\n# tail",
    "no newline at end": "1 1:1\n-1 3:3",
    "crlf": "1 1:1\r\n-1 2:2\r\n",
    "tabs and spaces": "1\t1:1   2:2\n \t-1 3:3 \n",
    "qid": "1 qid:3 1:1\n-1 qid:3 2:1\n",
    "label only": "1\n-1 1:1\n",
    "zero based": "1 0:1 2:2\n-1 1:1\n",
    "exponents and signs": "+1 1:1e-3 2:-2.5E+2\n-1 1:+.5\n",
    "bom": "\ufeff1 1:1\n-1 2:1\n",
    "inf and nan values": "1 1:inf\n-1 2:nan\n",
    "long mantissas": "1 1:0.1234567890123456789012 2:1e-40\n-1 1:1e300\n",
}


@pytest.mark.parametrize("name", sorted(ODD))
def test_rows_match_scikit_learn(tmp_path, name):
    datasets = pytest.importorskip("sklearn.datasets")
    text = ODD[name]
    path, plain = tmp_path / "a.svm", tmp_path / "plain.svm"
    path.write_bytes(text.encode())
    plain.write_bytes(text.lstrip("\ufeff").encode())  # scikit-learn refuses a BOM
    zero = name == "zero based"
    X_ref, y_ref = datasets.load_svmlight_file(str(plain), zero_based=zero)
    source = LibsvmSource(path, option="--data", zero_based="auto")
    X, y = dense(source)
    np.testing.assert_array_equal(y, y_ref)
    ref = X_ref.toarray()
    assert X.shape[0] == ref.shape[0]
    width = max(X.shape[1], ref.shape[1])
    np.testing.assert_array_equal(np.pad(X, ((0, 0), (0, width - X.shape[1]))),
                                  np.pad(ref, ((0, 0), (0, width - ref.shape[1]))))


def test_unsorted_and_repeated_indices_keep_the_last_value(tmp_path):
    """scikit-learn refuses these; a dense row would hold the last value written."""
    path = Path(write_text(tmp_path / "a.svm", "1 3:3 1:1 3:4 2:2\n0 2:1 2:5\n"))
    block = LibsvmSource(path, option="--data").read(np.arange(2))
    assert block.X.indices.tolist() == [0, 1, 2, 1]
    assert block.X.data.tolist() == [1, 2, 4, 5]
    assert block.X.indptr.tolist() == [0, 3, 4]


def test_inf_nan_and_long_numbers_take_python_and_continue(tmp_path):
    rows = [f"{i % 2} 1:{i} 2:0.{'3' * 25}" if i % 7 == 3 else f"{i % 2} 1:{i}"
            for i in range(100)]
    path = Path(write_text(tmp_path / "a.svm", "\n".join(rows) + "\n"))
    X, _ = dense(LibsvmSource(path, option="--data"))
    assert X[:, 0].tolist() == list(range(100))
    assert X[3, 1] == float("0." + "3" * 25) and X[4, 1] == 0


@pytest.mark.parametrize("size", [2, 3, 5, 8])
def test_any_byte_split_gives_the_same_rows(tmp_path, size):
    """Rank-independence, simulated: scan every part, share the tables as the collective
    would, and each 'rank' sees the same rows, checkpoints and line numbers."""
    lines = ["# comment", ""] + [f"{i % 3} {i % 5 + 1}:{i}.5 7:1" for i in range(3000)]
    lines.insert(1500, "   ")
    path = Path(write_text(tmp_path / "a.svm", "\n".join(lines) + "\n"))
    whole = LibsvmSource(path, option="--data")
    parts = [LibsvmSource(path, option="--data", part=(r, size)) for r in range(size)]
    table = np.stack([p._local_table() for p in parts])
    gathered = np.concatenate([p._local_checkpoints()[0] for p in parts])
    for part in parts:
        part.settle(table, gathered, table[:, 4])
        assert part.n_rows == whole.n_rows == 3000
        # a scan's first checkpoint is at the first data line; a parsed range's at its start
        assert part.ck_lines[np.searchsorted(part.ck_rows, 0)] in (1, 3)
        rows = np.arange(1000, 2100)
        a, b = part.read(rows), whole.read(rows)
        np.testing.assert_array_equal(a.lines, b.lines)
        np.testing.assert_array_equal(a.X.dense(8, np.float64), b.X.dense(8, np.float64))


def test_lines_longer_than_a_chunk_and_small_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(libsvm, "CHUNK_BYTES", 64)
    wide = "1 " + " ".join(f"{j + 1}:{j}" for j in range(100))
    path = Path(write_text(tmp_path / "a.svm", "\n".join([wide, "0 1:1", wide]) + "\n"))
    X, _ = dense(LibsvmSource(path, option="--data", part=(0, 1)))
    assert X.shape == (3, 100) and X[2, 99] == 99 and X[1].tolist() == [1] + [0] * 99


def test_bad_tokens_name_the_line(tmp_path):
    cases = {
        "1 1:1\n1 x:1\n": "line 2 has feature index 'x' (expected an integer from 1 to "
                          "2147483647; feature names need --hash-bits)",
        "1 1:1\nfoo 1:1\n": "line 2 has a non-numeric label 'foo'",
        "1 1:1\n\n1 1:abc\n": "line 3 has a non-numeric value 'abc'",
        "1 1:1\n1 5\n": "line 2 has '5' (expected index:value)",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = write_text(tmp_path / f"{i}.svm", text)
        with pytest.raises(UserError, match=re.escape(message)):
            load(path)


def test_share_scans_on_one_rank_is_a_no_op_for_other_formats(tmp_path):
    from mpi4py import MPI

    path = Path(write_text(tmp_path / "a.svm", "1 1:1\n0 2:1\n"))
    source = LibsvmSource(path, option="--data", part=(0, 1))
    share_scans(MPI.COMM_SELF, [source, None])
    assert source.n_rows == 2


def test_empty_file_is_one_error(tmp_path):
    path = write_text(tmp_path / "a.svm", "# nothing\n\n")
    with pytest.raises(UserError, match="has no data rows"):
        load(path)


def test_bench_data_runs_under_mpiexec_and_writes_json(tmp_path):
    out = tmp_path / "bench" / "data.json"
    done = run_mpi(["-m", "mpitrain", "bench", "data", "--rows", "3000", "--features", "40",
                    "--nnz", "6", "--repeat", "1", "--sklearn", "--json", str(out)], ranks=2)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("libsvm read: 3000 rows")
    result = json.loads(out.read_text())
    assert result["ranks"] == 2 and result["rows"] == 3000
    assert result["seconds"] > 0 and result["rows_per_s"] > 0
    assert len(result["peak_MB_per_rank"]) == len(result["share_MB_per_rank"]) == 2
    bad = run_mpi(["-m", "mpitrain", "bench", "data", "--nnz", "0"], ranks=2)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "mpitrain: error: --nnz must be >= 1 (got 0)"


TRAIN = ["--model", "logistic", "--epochs", "2", "--batch-size", "8", "--dtype", "float64",
         "--seed", "3", "--quiet"]


def test_cli_trains_the_same_model_from_a_libsvm_file_on_1_and_3_ranks(tmp_path):
    lines = ["# header comment", ""]
    lines += [f"{'+1' if i % 3 else '-1'} {i % 7 + 1}:{i / 10} 9:{(i % 5) / 4} # row {i}"
              for i in range(90)]
    path = write_text(tmp_path / "a.svm", "\n".join(lines) + "\n")
    same_model_on((1, 3), ["--data", path, *TRAIN], tmp_path)
    bad = write_text(tmp_path / "bad.svm", "\n".join([*lines, "1 3:1:2"]) + "\n")
    done = run_train(["--data", bad, *TRAIN], ranks=3)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"mpitrain: error: --data: '{bad}' line 93 has a "
                                   "non-numeric value '1:2'")


@pytest.mark.parametrize("fmt", ["libsvm", "csv"])
def test_gzip_files_read_as_a_stream_give_the_same_data(tmp_path, fmt):
    import gzip

    X, y = example(40, 3, sparse=fmt == "libsvm")
    plain = write(fmt, tmp_path, X, y)
    packed = plain + ".gz"
    Path(packed).write_bytes(gzip.compress(Path(plain).read_bytes()))
    Path(plain).unlink()
    data = load(packed, test_fraction=0.25)
    np.testing.assert_allclose(data.train.X, load(write(fmt, tmp_path / "b", X, y),
                                                 test_fraction=0.25).train.X, rtol=1e-12)
    assert not list(tmp_path.glob("*.svm")) and not list(tmp_path.glob("*.csv"))


def test_damaged_or_unsupported_gzip_is_one_error(tmp_path):
    damaged = tmp_path / "a.svm.gz"
    damaged.write_bytes(b"not gzip at all\n")
    with pytest.raises(UserError, match=re.escape(f"--data: cannot read '{damaged}' (")):
        load(str(damaged))
    other = tmp_path / "a.npz.gz"
    other.write_bytes(b"")
    with pytest.raises(UserError, match="is compressed, which only CSV and libsvm data can be"):
        load(str(other))


def _odd_line(rng: np.random.Generator) -> str:
    """A random line mixing the plain form with what the one-pass reader hands back to
    the general one: separators, comments, qid, '+' and zero-padded indices, repeats,
    unsorted indices, exponents, long mantissas, inf/nan, blank and comment-only lines."""
    kind = rng.integers(12)
    if kind == 0:
        return str(rng.choice(["", "   ", "\t", "# only a comment", "  # x 1:2"]))
    numbers = ["0", "-0", "1", "+1", "2.5", "-.5", "5.", "1e-3", "-2.5E+2", "0.000120",
               "123456789012345678", "0.1234567890123456789", "1e300", "inf", "nan",
               "9007199254740993", "0.30000000000000004", "-0.000", "007.50",
               f"{rng.standard_normal():.17g}", f"{rng.standard_normal():.3f}"]
    label = str(rng.choice(["0", "1", "-1", "+1", "2.0", "1e0"]))
    columns = rng.integers(1, 40, rng.integers(0, 8))
    if kind == 1:
        columns = np.sort(columns)
    tokens = [label]
    for column in columns:
        index = str(column)
        if rng.random() < 0.05:
            index = "+" + index
        elif rng.random() < 0.05:
            index = "00" + index
        tokens.append(f"{index}:{rng.choice(numbers)}")
    if rng.random() < 0.1:
        tokens.insert(1, "qid:7")
    separators = [str(rng.choice([" ", " ", " ", "\t", "  ", " \v", "\f"]))
                  for _ in tokens]
    line = "".join(s + t for s, t in zip(separators, tokens, strict=True))[1:]
    if rng.random() < 0.1:
        line += str(rng.choice([" # a 0:1 comment", "#c", "\t#"]))
    if rng.random() < 0.1:
        line = str(rng.choice([" ", "\t"])) + line
    return line + str(rng.choice(["", "", " ", "\r"]))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk", [64, 1 << 20])
def test_one_pass_reader_matches_the_python_reader_line_by_line(tmp_path, monkeypatch,
                                                                 seed, chunk):
    """The kernels (plain lines in one pass, the rest by the general path) give, row for
    row, what the Python reader (``parse_line``) gives for each line, on any chunk size."""
    monkeypatch.setattr(libsvm, "CHUNK_BYTES", chunk)
    rng = np.random.default_rng(seed)
    lines = [_odd_line(rng) for _ in range(400)]
    path = Path(write_text(tmp_path / "a.svm", "\n".join(lines) + "\n"))
    source = LibsvmSource(path, option="--data", zero_based="false")
    block = source.read(np.arange(source.n_rows))
    expected = [(number + 1, source.parse_line(line.encode(), number + 1))
                for number, line in enumerate(lines) if line.split("#")[0].strip()]
    assert source.n_rows == len(expected)
    for k, (number, (label, entries)) in enumerate(expected):
        lo, hi = block.X.indptr[k], block.X.indptr[k + 1]
        assert block.lines[k] == number
        assert block.y[k] == label or (np.isnan(block.y[k]) and np.isnan(label))
        columns = sorted(entries)
        assert block.X.indices[lo:hi].tolist() == columns, lines[number - 1]
        got, want = block.X.data[lo:hi], np.array([entries[c] for c in columns])
        np.testing.assert_array_equal(got, want)
        assert (np.signbit(got) == np.signbit(want)).all(), lines[number - 1]


@pytest.mark.parametrize("chunk", [16, 1 << 20])
def test_the_scan_finds_an_index_0_only_where_a_token_is_one(tmp_path, monkeypatch, chunk):
    """``--zero-based auto``: a token of zeros (``0:``, ``+0:``, ``00:``, after a space,
    tab or other white space) makes the file 0-based; 10:, 0.5 values, qid:0 and comments
    do not."""
    monkeypatch.setattr(libsvm, "CHUNK_BYTES", chunk)
    zero = ["1 0:1", "1 +0:1", "1 00:2 3:1", "1\t0:1", "1 2:1\v0:3", "0 0:0"]
    not_zero = ["1 10:1", "1 100:1 20:0.5", "0 1:0 2:0.0", "1 qid:0 1:1", "1 1:1 # 0:1",
                "# 0:1", "0 1:-0", "1 30:+0"]
    for i, line in enumerate(zero + not_zero):
        path = Path(write_text(tmp_path / f"{i}.svm", f"1 5:5\n{line}\n1 7:7\n"))
        assert LibsvmSource(path, option="--data").has_zero == (line in zero), line


def _same_blocks(a, b) -> None:
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.lines, b.lines)
    np.testing.assert_array_equal(a.X.indptr, b.X.indptr)
    np.testing.assert_array_equal(a.X.indices, b.X.indices)
    np.testing.assert_array_equal(a.X.data, b.X.data)
    assert a.X.n_cols == b.X.n_cols


@pytest.mark.parametrize("zero_based", ["auto", "true", "false"])
@pytest.mark.parametrize("seed", range(3))
def test_a_whole_file_opened_in_one_pass_reads_as_after_a_scan(tmp_path, monkeypatch,
                                                                zero_based, seed):
    """One rank opening a plain file parses every row at once and keeps them: reading
    them all, a holdout split (some rows, then the others) and rows read again from the
    file give what the scan-then-parse path gives."""
    monkeypatch.setattr(libsvm, "CHUNK_BYTES", 256)  # several chunks, more row room
    rng = np.random.default_rng(seed)
    lines = [_odd_line(rng) for _ in range(3000)]
    if seed == 1 and zero_based != "false":
        lines[1700] = "1 0:2 3:1"
    path = Path(write_text(tmp_path / "a.svm", "\n".join(lines) + "\n"))
    one = LibsvmSource(path, option="--data", zero_based=zero_based)
    assert one._held is not None
    with monkeypatch.context() as patched:
        patched.setattr(LibsvmSource, "_parse_range", lambda self, rank, size: False)
        scanned = LibsvmSource(path, option="--data", zero_based=zero_based)
    assert (one.n_rows, one.base, one.has_zero) == (
        scanned.n_rows, scanned.base, scanned.has_zero)
    split = np.sort(rng.choice(one.n_rows, one.n_rows // 5, replace=False))
    rest = np.setdiff1d(np.arange(one.n_rows), split)
    for rows in (rest, split, split[::3], np.arange(one.n_rows)):
        _same_blocks(one.read(rows), scanned.read(rows))
    again = LibsvmSource(path, option="--data", zero_based=zero_based)
    _same_blocks(again.read(np.arange(again.n_rows)), scanned.read(np.arange(one.n_rows)))


def test_an_index_0_in_a_1_based_file_is_named_after_a_one_pass_open(tmp_path):
    path = write_text(tmp_path / "a.svm", "1 1:1\n1 0:1\n")
    source = LibsvmSource(Path(path), option="--data", zero_based="false")
    message = "line 2 has feature index '0' (expected an integer from 1 to 2147483647)"
    with pytest.raises(UserError, match=re.escape(message)):
        source.read(np.arange(source.n_rows))


@pytest.mark.parametrize("size", [2, 3, 5, 8])
def test_parsed_byte_ranges_together_hold_every_row_once(tmp_path, size):
    """P ranks opening a plain file each parse the lines that start in their byte range
    (simulated here): once the tables are shared, their rows, in rank order, are the
    one-rank reader's rows with its global row and line numbers, also when a line spans
    several ranges (ranges without a line start) and rows are very unequal."""
    rng = np.random.default_rng(size)
    long_row = "1 " + " ".join(f"{j + 1}:{j}.5" for j in range(2000))
    lines = ["# comment", "", long_row, long_row] + [_odd_line(rng) for _ in range(400)]
    lines.insert(200, long_row)
    lines.append("0 " + " ".join(f"{j + 1}:{j}.5" for j in range(12000)))  # over half the file
    path = Path(write_text(tmp_path / "a.svm", "\n".join(lines) + "\n"))
    whole = LibsvmSource(path, option="--data")
    parts = [LibsvmSource(path, option="--data", part=(r, size)) for r in range(size)]
    assert all(p._held is not None for p in parts)
    assert any(len(p._held.rows) == 0 for p in parts)  # a range inside the long rows
    table = np.stack([p._local_table() for p in parts])
    gathered = np.concatenate([p._local_checkpoints()[0] for p in parts])
    for part in parts:
        part.settle(table, gathered, table[:, 4])
    held = [p._held for p in parts]
    expected = whole.read(np.arange(whole.n_rows))
    np.testing.assert_array_equal(np.concatenate([h.rows for h in held]),
                                  np.arange(whole.n_rows))
    np.testing.assert_array_equal(np.concatenate([h.lines for h in held]), expected.lines)
    np.testing.assert_array_equal(np.concatenate([h.y for h in held]), expected.y)
    # (the entry arrays have room past their entries, for rows of other ranks)
    indices = np.concatenate([h.indices[: h.indptr[-1]] for h in held])
    np.testing.assert_array_equal(indices - whole.base, expected.X.indices)
    np.testing.assert_array_equal(np.concatenate([h.values[: h.indptr[-1]] for h in held]),
                                  expected.X.data)
    np.testing.assert_array_equal(parts[-1].offsets, [0, *np.cumsum(table[:, 1])])
