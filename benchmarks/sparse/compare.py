"""mpitrain's sparse logistic regression next to scikit-learn's SGDClassifier on the data of
``make_data.py`` (issue 17: equal test log-loss within 1%).

    python benchmarks/sparse/make_data.py --out data/sparse
    python benchmarks/sparse/compare.py --dir data/sparse --ranks 2 --json sparse.json

Runs ``mpiexec -n RANKS python -m mpitrain train --data DIR/train.svm --test-data
DIR/test.svm --model logistic --sparse on --no-standardize`` with the given ``--dtype``
(default float64), ``--epochs``, ``--batch-size``, ``--optimizer`` and ``--lr``, then scikit-learn's
``SGDClassifier(loss="log_loss", alpha=--alpha, max_iter=--epochs, tol=None)`` on the same
training rows (loaded with ``load_svmlight_file``; its default "optimal" learning rate).
Both models are scored on the same test rows, with ``mpitrain.predict_proba`` on the
scipy.sparse test matrix and ``SGDClassifier.predict_proba``; the hidden model's own
log-loss (``meta.json``) is the floor. Prints one line per model and the ratio; exit 0
unless a run fails.

When the ``vowpalwabbit`` package is installed (``pip install vowpalwabbit``; not a
dependency, skipped otherwise or with ``--no-vw``), Vowpal Wabbit trains too, in one
process: the same files in its text format (``1``/``-1`` labels, the feature indices as
names), ``--loss_function logistic``, ``--passes EPOCHS`` over its cache, its default
learning rate (``--vw-lr``), ``-b --vw-bits`` hash bits (default: two more than the
features need, so few collide). Its training time (parsing into the cache included, as
``train`` includes reading) gives its rows per second, and the issue's throughput ratio is
mpitrain's rows per second per rank (``summary.json``'s ``seconds``) over that.
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
               args.dtype, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
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


def to_vw_text(source: Path, target: Path) -> int:
    """A 0/1-labelled libsvm file in Vowpal Wabbit's text format; returns its rows."""
    rows = 0
    with source.open() as lines, target.open("w") as out:
        for line in lines:
            label, _, features = line.partition(" ")
            if label.strip():
                out.write(f"{'1' if float(label) > 0 else '-1'} | {features.strip()}\n")
                rows += 1
    return rows


def run_vw(args: argparse.Namespace, features: int, directory: Path) -> dict:
    """Vowpal Wabbit on the same rows (module docstring), or why it did not run."""
    try:
        from vowpalwabbit import Workspace
    except ImportError:
        return {"skipped": "vowpalwabbit is not installed (pip install vowpalwabbit)"}
    train, test, model = (directory / name for name in ("train.vw", "test.vw", "model.vw"))
    rows = to_vw_text(args.dir / "train.svm", train)
    to_vw_text(args.dir / "test.svm", test)
    bits = args.vw_bits or max(18, int(np.ceil(np.log2(max(2, features)))) + 2)
    options = (f"--loss_function logistic -b {bits} -l {args.vw_lr} --passes {args.epochs} "
               f"-c -k --holdout_off --quiet")
    start = time.perf_counter()
    learner = Workspace(f"-d {train} -f {model} {options}")
    learner.run_parser()
    learner.finish()
    seconds = time.perf_counter() - start
    scorer = Workspace(f"-i {model} -t --link logistic --quiet")
    with test.open() as lines:
        p1 = np.array([scorer.predict(line) for line in lines])
    scorer.finish()
    y = np.array([1 if line.startswith("1") else 0 for line in test.open()])
    return {"train_seconds": seconds, "rows_per_second": rows * args.epochs / seconds,
            "test_log_loss": log_loss(y, p1), "options": f"-b {bits} -l {args.vw_lr} "
            f"--passes {args.epochs} --loss_function logistic"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, type=Path, help="make_data.py's output")
    parser.add_argument("--ranks", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1, help="passes over the data (both)")
    parser.add_argument("--batch-size", type=int, default=256, help="mpitrain's global batch")
    parser.add_argument("--optimizer", default="adam", help="mpitrain's update rule")
    parser.add_argument("--lr", type=float, default=0.005, help="mpitrain's learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="mpitrain's L2")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="mpitrain's float type (scikit-learn works in float64, Vowpal "
                        "Wabbit in float32)")
    parser.add_argument("--alpha", type=float, default=1e-4,
                        help="SGDClassifier's L2 (default: its own default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--no-vw", action="store_true", help="skip Vowpal Wabbit")
    parser.add_argument("--vw-lr", type=float, default=0.5, help="VW's -l (its default)")
    parser.add_argument("--vw-bits", type=int, default=0, help="VW's -b (0: see above)")
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
    with tempfile.TemporaryDirectory() as tmp:
        vw = ({"skipped": "--no-vw"} if args.no_vw else run_vw(args, features, Path(tmp)))
    result = {"data": meta, "ranks": args.ranks, "epochs": args.epochs, "dtype": args.dtype,
              "mpitrain": ours, "sklearn_sgd": theirs, "vowpal_wabbit": vw,
              "hidden_model_test_log_loss": meta["test_true_log_loss"],
              "ratio": ours["test_log_loss"] / theirs["test_log_loss"]}
    if "test_log_loss" in vw and ours.get("train_seconds"):
        ours["rows_per_second_per_rank"] = (meta["rows"] * args.epochs / args.ranks
                                            / ours["train_seconds"])
        result["vw_ratio"] = ours["test_log_loss"] / vw["test_log_loss"]
        result["throughput_per_core_vs_vw"] = (ours["rows_per_second_per_rank"]
                                               / vw["rows_per_second"])
    print(f"mpitrain ({args.ranks} rank(s), {args.optimizer} lr {args.lr}, batch "
          f"{args.batch_size}, {args.dtype}): test log-loss {ours['test_log_loss']:.5f}, "
          f"{ours['seconds']:.1f} s end to end")
    print(f"scikit-learn SGDClassifier(log_loss, alpha {args.alpha}): test log-loss "
          f"{theirs['test_log_loss']:.5f}, load {load_seconds:.1f} s + fit "
          f"{theirs['fit_seconds']:.1f} s")
    if "test_log_loss" in vw:
        print(f"Vowpal Wabbit ({vw['options']}): test log-loss {vw['test_log_loss']:.5f}, "
              f"train {vw['train_seconds']:.1f} s ({vw['rows_per_second']:,.0f} rows/s); "
              f"mpitrain / VW: log-loss {result.get('vw_ratio', float('nan')):.4f}, rows/s "
              f"per core {result.get('throughput_per_core_vs_vw', float('nan')):.2f}")
    else:
        print(f"Vowpal Wabbit: skipped ({vw['skipped']})")
    print(f"hidden model: {meta['test_true_log_loss']:.5f}; ratio mpitrain / scikit-learn "
          f"{result['ratio']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
