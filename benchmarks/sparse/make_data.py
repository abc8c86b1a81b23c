"""Synthetic sparse logistic data (issue 17): libsvm files for large-scale logistic regression.

A hidden weight vector ``w`` (one weight per feature, normal with standard deviation
``--scale / sqrt(--nnz)``, so a row's margin has standard deviation about ``--scale``) and
rows of ``--nnz`` draws (a Poisson count, at least 1; a column drawn twice in a row counts
once, so rows hold somewhat fewer non-zeros) of columns among ``--features`` with
power-law popularity (``--zipf``, as words and click features: a few are in most rows,
most are rare, so the weights of the common ones can be learnt), with standard normal
values rounded to 3 decimals (0 made 0.001). Each row's label is 1 with probability
``sigmoid(x . w)``, else 0. Rows are generated in blocks of :data:`BLOCK_ROWS`, each from
its own seeded stream ``(seed, split, block)``, so a file is the same whatever writes it
and any block can be regenerated alone.

Writes ``OUT/train.svm`` and ``OUT/test.svm`` (1-based indices, as libsvm), ``OUT/weights.npy``
(the hidden ``w``) and ``OUT/meta.json`` (the options, the files' sizes and the test
log-loss of the hidden model itself: the best any model can do on average).

    python benchmarks/sparse/make_data.py --out data/sparse              # 1M x 2^20, ~80 nnz
    python benchmarks/sparse/make_data.py --out /tmp/s --rows 2000 --features 4096 --nnz 10
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numba
import numpy as np

BLOCK_ROWS = 10_000
SPLITS = {"train": 0, "test": 1}


def hidden_weights(features: int, nnz: int, scale: float, seed: int) -> np.ndarray:
    """The hidden weight vector (its own stream, so it does not depend on the row counts)."""
    rng = np.random.default_rng([seed, 2])
    return rng.standard_normal(features) * (scale / math.sqrt(nnz))


def popular_columns(rng: np.random.Generator, features: int, count: int,
                    zipf: float) -> np.ndarray:
    """``count`` columns: uniform (``zipf`` = 0) or the ``k``-th most popular with
    probability about proportional to ``k**-zipf`` (a continuous power law, inverted), as
    the features of click logs and text are; the popular ones are spread over the columns
    by a fixed permutation."""
    if zipf == 0:
        return rng.integers(0, features, count)
    u = rng.random(count)
    if zipf == 1:
        ranks = np.exp(u * np.log(features + 1.0))
    else:
        top = (features + 1.0) ** (1.0 - zipf)
        ranks = (1.0 + u * (top - 1.0)) ** (1.0 / (1.0 - zipf))
    ranks = np.minimum(ranks.astype(np.int64) - 1, features - 1)
    return _spread(features)[ranks]


_SPREAD: dict[int, np.ndarray] = {}


def _spread(features: int) -> np.ndarray:
    if features not in _SPREAD:
        _SPREAD[features] = np.random.default_rng(12345).permutation(features)
    return _SPREAD[features]


def block(w: np.ndarray, *, rows: int, nnz: int, seed: int, split: int, index: int,
          zipf: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One block of rows as CSR (indptr, 0-based sorted distinct columns, values in
    thousandths), its labels and its true probabilities."""
    rng = np.random.default_rng([seed, split, index])
    counts = np.maximum(rng.poisson(nnz, rows), 1)
    cols = popular_columns(rng, len(w), int(counts.sum()), zipf)
    milli = np.round(rng.standard_normal(len(cols)) * 1000).astype(np.int64)
    milli[milli == 0] = 1
    row_of = np.repeat(np.arange(rows), counts)
    order = np.lexsort((cols, row_of))  # sort the columns within each row
    cols, milli = cols[order], milli[order]
    keep = np.r_[True, (cols[1:] != cols[:-1]) | (row_of[1:] != row_of[:-1])]
    cols, milli, row_of = cols[keep], milli[keep], row_of[keep]
    values = milli / 1000.0  # the double that parsing the written "x.yyy" gives
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row_of, minlength=rows))])
    margin = np.bincount(row_of, weights=values * w[cols], minlength=rows)
    proba = 1.0 / (1.0 + np.exp(-margin))
    labels = (rng.random(rows) < proba).astype(np.int64)
    return indptr, cols, milli, labels, proba


@numba.njit(cache=True)
def _digits(out: np.ndarray, at: int, value: int) -> int:
    """Write the decimal digits of ``value`` >= 0 at ``out[at:]``; returns the end."""
    n = 1
    while value >= 10**n:
        n += 1
    for i in range(n - 1, -1, -1):
        out[at + i] = 48 + value % 10
        value //= 10
    return at + n


@numba.njit(cache=True)
def libsvm_text(indptr: np.ndarray, cols: np.ndarray, milli: np.ndarray,
                labels: np.ndarray) -> np.ndarray:
    """The rows as libsvm lines ``label col+1:value ...`` (values in thousandths written as
    decimals, e.g. -1234 as -1.234), as bytes."""
    out = np.empty(len(labels) * 3 + len(cols) * 24, dtype=np.uint8)
    at = 0
    for r in range(len(labels)):
        at = _digits(out, at, labels[r])
        for p in range(indptr[r], indptr[r + 1]):
            out[at] = 32
            at = _digits(out, at + 1, cols[p] + 1)
            out[at] = 58
            at += 1
            v = milli[p]
            if v < 0:
                out[at] = 45
                at += 1
                v = -v
            at = _digits(out, at, v // 1000)
            out[at] = 46
            frac = v % 1000
            out[at + 1] = 48 + frac // 100
            out[at + 2] = 48 + (frac // 10) % 10
            out[at + 3] = 48 + frac % 10
            at += 4
        out[at] = 10
        at += 1
    return out[:at]


def write_split(path: Path, w: np.ndarray, *, rows: int, nnz: int, seed: int,
                split: int, zipf: float = 0.0) -> tuple[float, float]:
    """Write one split; returns the mean log-loss of the true probabilities on it and the
    mean non-zeros per row."""
    loss, entries = 0.0, 0
    with path.open("wb") as fp:
        for index, start in enumerate(range(0, rows, BLOCK_ROWS)):
            n = min(BLOCK_ROWS, rows - start)
            indptr, cols, milli, labels, proba = block(w, rows=n, nnz=nnz, seed=seed,
                                                       split=split, index=index, zipf=zipf)
            fp.write(libsvm_text(indptr, cols, milli, labels).tobytes())
            p = np.clip(np.where(labels == 1, proba, 1 - proba), 1e-15, 1)
            loss -= float(np.log(p).sum())
            entries += len(cols)
    return loss / rows, entries / rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="directory to write")
    parser.add_argument("--rows", type=int, default=1_000_000, help="training rows")
    parser.add_argument("--test-rows", type=int, default=None,
                        help="test rows (default: a tenth of --rows)")
    parser.add_argument("--features", type=int, default=2**20, help="feature count")
    parser.add_argument("--nnz", type=int, default=80, help="mean non-zeros per row")
    parser.add_argument("--scale", type=float, default=3.0,
                        help="standard deviation of a row's true margin (default: 3)")
    parser.add_argument("--zipf", type=float, default=1.1,
                        help="column popularity: the k-th most popular feature appears with "
                        "probability ~ k^-ZIPF (default 1.1, as words and click features); "
                        "0: uniform")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    test_rows = args.rows // 10 if args.test_rows is None else args.test_rows
    for name, value, low in (("rows", args.rows, 1), ("test-rows", test_rows, 1),
                             ("features", args.features, 1), ("nnz", args.nnz, 1)):
        if value < low:
            parser.error(f"--{name} must be >= {low} (got {value})")
    args.out.mkdir(parents=True, exist_ok=True)
    w = hidden_weights(args.features, args.nnz, args.scale, args.seed)
    np.save(args.out / "weights.npy", w)
    meta = {"rows": args.rows, "test_rows": test_rows, "features": args.features,
            "nnz": args.nnz, "scale": args.scale, "zipf": args.zipf, "seed": args.seed}
    for split, rows in (("train", args.rows), ("test", test_rows)):
        path = args.out / f"{split}.svm"
        loss, nnz = write_split(path, w, rows=rows, nnz=args.nnz, seed=args.seed,
                                split=SPLITS[split], zipf=args.zipf)
        meta[f"{split}_true_log_loss"], meta[f"{split}_nnz_per_row"] = loss, nnz
        meta[f"{split}_bytes"] = path.stat().st_size
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))
    return meta


if __name__ == "__main__":
    main()
