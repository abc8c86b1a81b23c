"""--hash-bits: feature names hashed to signed columns exactly as scikit-learn's
FeatureHasher (MurmurHash3, seed 0, alternate signs), duplicates and collisions summed, the
same model on any number of ranks, and the hashing stored with the model for predict."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from cli_runner import run_mpi, same_model_on
from test_data import load, write_text

from mpitrain.data.hashing import hash_name, murmurhash3_32
from mpitrain.data.libsvm import LibsvmSource
from mpitrain.errors import UserError

pytestmark = pytest.mark.timeout(240)

WORDS = [f"w{i}" for i in range(300)] + ["é", "a:b", "12", "007", "x=y"]


def named_rows(count: int, seed: int = 0) -> tuple[list[list[tuple[str, float]]], list[str]]:
    """Rows of (name, value) pairs and their lines (``name:value``, or ``name`` for 1 when
    the name has no colon: the value follows a name's last colon)."""
    rng = np.random.default_rng(seed)
    rows, lines = [], []
    for i in range(count):
        pairs = []
        for _ in range(int(rng.integers(0, 12))):
            name = WORDS[int(rng.integers(len(WORDS)))]
            value = float(np.round(rng.standard_normal(), 3)) if rng.random() < 0.8 else 1.0
            pairs.append((name, value))
        rows.append(pairs)
        tokens = [name if value == 1.0 and ":" not in name and rng.random() < 0.5
                  else f"{name}:{value!r}" for name, value in pairs]
        lines.append(" ".join([str(i % 2), *tokens]))
    return rows, lines


def csr_of(source: LibsvmSource) -> sp.csr_matrix:
    X = source.read(np.arange(source.n_rows)).X
    return sp.csr_matrix((X.data, X.indices, X.indptr), shape=X.shape)


def test_murmurhash3_equals_scikit_learn():
    from sklearn.utils import murmurhash3_32 as reference

    rng = random.Random(0)
    for _ in range(500):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 30)))
        seed = rng.choice([0, 1, 2**31, 2**32 - 1, rng.randrange(2**32)])
        got = murmurhash3_32(np.frombuffer(raw, dtype=np.uint8), 0, len(raw), seed)
        assert got == reference(raw, seed=seed)


@pytest.mark.parametrize("bits", [3, 12])
def test_rows_equal_scikit_learn_feature_hasher(tmp_path, bits):
    from sklearn.feature_extraction import FeatureHasher

    rows, lines = named_rows(300)
    path = tmp_path / "names.svm"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    X = csr_of(LibsvmSource(path, option="--data", hash_bits=bits))
    expected = FeatureHasher(2**bits, input_type="pair").transform(rows)
    assert X.shape == expected.shape == (300, 2**bits)
    np.testing.assert_allclose(X.toarray(), expected.toarray(), rtol=0, atol=1e-12)
    ends = zip(X.indptr[:-1], X.indptr[1:], strict=True)
    assert all(np.all(np.diff(X.indices[a:b]) > 0) for a, b in ends)  # sorted, distinct


def test_collisions_and_repeats_add_up_with_their_signs(tmp_path):
    names = [f"f{i}" for i in range(64)]
    hashed = [hash_name(n, bits=2) for n in names]  # 64 names into 4 columns: collisions
    line = "1 " + " ".join(f"{n}:{i + 1}" for i, n in enumerate(names)) + " f0:0.5 f1:0"
    path = Path(write_text(tmp_path / "c.svm", line + "\n"))
    X = csr_of(LibsvmSource(path, option="--data", hash_bits=2)).toarray()[0]
    expected = np.zeros(4)
    for i, (column, sign) in enumerate(hashed):
        expected[column] += sign * (i + 1)
    expected[hashed[0][0]] += hashed[0][1] * 0.5
    np.testing.assert_allclose(X, expected, rtol=0, atol=1e-12)


def test_seed_changes_the_columns_and_python_lines_hash_the_same(tmp_path):
    # 'inf' and a 20-digit value send their lines to the Python parser: same hashing
    lines = ["1 a:1 b:2 c:3 d:4", "0 a:1e400 b:2", "1 a:0.10000000000000000001 b:2"]
    path = Path(write_text(tmp_path / "p.svm", "\n".join(lines) + "\n"))
    for seed in (0, 7):
        X = csr_of(LibsvmSource(path, option="--data", hash_bits=16, hash_seed=seed))
        for row, name in ((1, "a"), (2, "a")):
            column, sign = hash_name(name, bits=16, seed=seed)
            assert X[row, column] == sign * (np.inf if row == 1 else 0.1)
        assert X[0, hash_name("c", bits=16, seed=seed)[0]] == 3 * hash_name(
            "c", bits=16, seed=seed)[1]
    zero = csr_of(LibsvmSource(path, option="--data", hash_bits=16))
    seven = csr_of(LibsvmSource(path, option="--data", hash_bits=16, hash_seed=7))
    assert set(zero[0].indices) != set(seven[0].indices)


def test_numeric_indices_are_names_when_hashing(tmp_path):
    path = write_text(tmp_path / "n.svm", "1 1:2 007:3 qid:4\n0 2:1\n")
    data = load(path, read=_read(hash_bits=5))
    assert data.n_features == 32 and data.sparse is False
    row = np.zeros(32)
    for name, value in (("1", 2), ("007", 3)):
        column, sign = hash_name(name, bits=5)
        row[column] += sign * value
    np.testing.assert_allclose(data.train.X[0], row)


def _read(**options):
    from mpitrain.data.sources import ReadOptions

    return ReadOptions(**options)


def test_hashing_option_errors(tmp_path):
    svm = write_text(tmp_path / "a.svm", "1 a:1\n0 b:1\n")
    csv = write_text(tmp_path / "a.csv", "1,2\n3,4\n")
    cases = [
        (svm, {"hash_bits": 32}, "--hash-bits must be 0 (off) or from 1 to 31 (got 32)"),
        (svm, {"hash_bits": 4, "hash_seed": -1},
         "--hash-seed must be an integer from 0 to 4294967295 (got -1)"),
        (csv, {"hash_bits": 4}, "--hash-bits applies to libsvm data (.svm, .libsvm) only"),
        (svm, {"hash_seed": 3}, "--hash-seed applies with --hash-bits only"),
        (svm, {"hash_bits": 4, "zero_based": "true"},
         "--zero-based does not apply with --hash-bits (feature names are hashed)"),
        (svm, {}, f"--data: '{svm}' line 1 has feature index 'a' (expected an integer from 1 "
                  "to 2147483647; feature names need --hash-bits)"),
        (write_text(tmp_path / "b.svm", "1 a:x\n"), {"hash_bits": 4},
         f"--data: '{tmp_path / 'b.svm'}' line 1 has a non-numeric value 'x'"),
    ]
    for path, options, message in cases:
        with pytest.raises(UserError) as caught:
            load(path, read=_read(**options))
        assert str(caught.value) == message


TRAIN = ["--model", "logistic", "--hash-bits", "10", "--sparse", "on", "--epochs", "2",
         "--batch-size", "16", "--dtype", "float64", "--seed", "2", "--quiet"]


def test_cli_same_model_on_1_and_3_ranks_and_predict_hashes_the_same(tmp_path):
    _, lines = named_rows(240, seed=1)
    path = write_text(tmp_path / "train.svm", "\n".join(lines) + "\n")
    saved = same_model_on((1, 3), ["--data", path, *TRAIN], tmp_path)
    assert (saved.hash_bits, saved.hash_seed, saved.n_features) == (10, 0, 1024)
    # predict on new names hashes them as training did: equal to FeatureHasher + predict
    from sklearn.feature_extraction import FeatureHasher

    from mpitrain import predict_proba

    new_rows, new_lines = named_rows(50, seed=9)
    new = write_text(tmp_path / "new.svm", "\n".join(new_lines) + "\n")
    out = tmp_path / "p.csv"
    done = run_mpi(["-m", "mpitrain", "predict", "--model", str(tmp_path / "run1" / "model.npz"),
                    "--data", new, "--out", str(out), "--proba"], ranks=2)
    assert done.returncode == 0, done.stderr
    written = np.loadtxt(out, delimiter=",", skiprows=1)
    X = FeatureHasher(1024, input_type="pair").transform(new_rows).toarray()
    np.testing.assert_allclose(written[:, 1:], predict_proba(saved, X), rtol=1e-8)
    csv = write_text(tmp_path / "x.csv", "1,2\n")
    done = run_mpi(["-m", "mpitrain", "predict", "--model", str(tmp_path / "run1" / "model.npz"),
                    "--data", csv, "--out", str(out)], ranks=2)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "mpitrain: error: --data: the model hashes feature names (--hash-bits 10), so its "
        f"rows must be libsvm text (.svm, .libsvm), not '{csv}'")
