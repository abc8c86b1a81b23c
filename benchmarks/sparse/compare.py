"""mpitrain's sparse logistic regression next to scikit-learn's SGDClassifier on the data of
``make_data.py`` (issue 17: equal test log-loss within 1%).

    python benchmarks/sparse/make_data.py --out data/sparse
    python benchmarks/sparse/compare.py --dir data/sparse --ranks 2 --json sparse.json

Runs ``mpiexec -n RANKS python -m mpitrain train --data DIR/train.svm --test-data
DIR/test.svm --model logistic --sparse on --no-standardize --dtype float64`` with the given
``--epochs``, ``--batch-size``, ``--optimizer`` and ``--lr``, then scikit-learn's
``SGDClassifier(loss="log_loss", alpha=--alpha, max_iter=--epochs, tol=None)`` on the same
training rows (loaded with ``load_svmlight_file``; its default "optimal" learning rate).
Both models are scored on the same test rows, with ``mpitrain.predict_proba`` on the
scipy.sparse test matrix and ``SGDClassifier.predict_proba``; the hidden model's own
log-loss (``meta.json``) is the floor. Prints one line per model and the ratio; exit 0
unless a run fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def log_loss(y: np.ndarray, p1: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``p1`` of class 1 (clipped as sklearn)."""
    p = np.clip(np.where(y == 1, p1, 1.0 - p1), 1e-15, 1.0)
    return float(-np.mean(np.log(p)))


def load(path: Path, features: int):
    """A libsvm file as a CSR matrix with 32-bit indices (SGDClassifier refuses 64-bit)."""
    import scipy.sparse
    from sklearn.datasets import load_svmlight_file

    X, y = load_svmlight_file(str(path), n_features=features)
    if X.nnz < 2**31:
        X = scipy.sparse.csr_matrix((X.data, X.indices.astype(np.int32),
                                     X.indptr.astype(np.int32)), shape=X.shape)
    return X, y


def run_mpitrain(args: argparse.Namespace, out: Path) -> dict:
    mpiexec = Path(sys.executable).with_name("mpiexec")
    command = [str(mpiexec) if mpiexec.exists() else (shutil.which("mpiexec") or "mpiexec"),
               "-n", str(args.ranks), sys.executable, "-m", "mpitrain", "train",
               "--data", str(args.dir / "train.svm"), "--test-data", str(args.dir / "test.svm"),
               "--model", "logistic", "--sparse", "on", "--no-standardize", "--dtype",
               "float64", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--optimizer", args.optimizer, "--lr", str(args.lr), "--weight-decay",
               str(args.weight_decay), "--seed", str(args.seed), "--quiet", "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"mpitrain train failed ({done.returncode}):\n{done.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    return {"seconds": seconds, "train_seconds": summary.get("seconds"),
            "command": " ".join(command)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, type=Path, help="make_data.py's output")
    parser.add_argument("--ranks", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1, help="passes over the data (both)")
    parser.add_argument("--batch-size", type=int, default=256, help="mpitrain's global batch")
    parser.add_argument("--optimizer", default="adam", help="mpitrain's update rule")
    parser.add_argument("--lr", type=float, default=0.005, help="mpitrain's learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="mpitrain's L2")
    parser.add_argument("--alpha", type=float, default=1e-4,
                        help="SGDClassifier's L2 (default: its own default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    from sklearn.linear_model import SGDClassifier

    from mpitrain import load_model, predict_proba

    meta = json.loads((args.dir / "meta.json").read_text())
    features = meta["features"]
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_mpitrain(args, Path(tmp) / "run")
        model = load_model(Path(tmp) / "run" / "model.npz")
    X_test, y_test = load(args.dir / "test.svm", features)
    # mpitrain's width is the widest index it saw: pad its weights to every feature
    width = model.n_features
    X_ours = X_test[:, :width] if width < features else X_test
    ours["test_log_loss"] = log_loss(y_test, predict_proba(model, X_ours)[:, 1])
    start = time.perf_counter()
    X, y = load(args.dir / "train.svm", features)
    load_seconds = time.perf_counter() - start
    sgd = SGDClassifier(loss="log_loss", alpha=args.alpha, max_iter=args.epochs, tol=None,
                        random_state=args.seed)
    start = time.perf_counter()
    import warnings

    with warnings.catch_warnings():  # max_iter reached before convergence: as asked
        warnings.simplefilter("ignore")
        sgd.fit(X, y)
    theirs = {"load_seconds": load_seconds, "fit_seconds": time.perf_counter() - start,
              "test_log_loss": log_loss(y_test, sgd.predict_proba(X_test)[:, 1])}
    result = {"data": meta, "ranks": args.ranks, "epochs": args.epochs,
              "mpitrain": ours, "sklearn_sgd": theirs,
              "hidden_model_test_log_loss": meta["test_true_log_loss"],
              "ratio": ours["test_log_loss"] / theirs["test_log_loss"]}
    print(f"mpitrain ({args.ranks} rank(s), {args.optimizer} lr {args.lr}, batch "
          f"{args.batch_size}): test log-loss {ours['test_log_loss']:.5f}, "
          f"{ours['seconds']:.1f} s end to end")
    print(f"scikit-learn SGDClassifier(log_loss, alpha {args.alpha}): test log-loss "
          f"{theirs['test_log_loss']:.5f}, load {load_seconds:.1f} s + fit "
          f"{theirs['fit_seconds']:.1f} s")
    print(f"hidden model: {meta['test_true_log_loss']:.5f}; ratio mpitrain / scikit-learn "
          f"{result['ratio']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
