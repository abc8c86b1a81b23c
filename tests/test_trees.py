"""Tree ensembles and k-means (``--model gbdt``, ``--model kmeans``) on one rank: the tree
grower against a plain numpy reference, accuracy against scikit-learn, saved models and
predict, resume, and bad input through the CLI (one message, exit 2)."""

import json

import numpy as np
import pytest
from cli_runner import run_mpi, run_train
from mpi4py import MPI

from mpitrain import train
from mpitrain.collectives.fixed import fixed_scale
from mpitrain.models.predict import predict, predict_proba
from mpitrain.trees.binning import agree_bins
from mpitrain.trees.grow import GrowOptions, grow_trees

pytestmark = pytest.mark.timeout(240)


def reference_tree(codes, g, h, *, n_bins, max_depth, l2, min_leaf, lr):
    """Depth-wise exhaustive split search on binned rows in plain float64 numpy: heap
    arrays (feature, code, value) as grow_trees stores them."""
    nodes = 2 ** (max_depth + 1) - 1
    feature, code = np.full(nodes, -1), np.zeros(nodes, int)
    value = np.zeros(nodes)
    members = {0: np.arange(len(g))}
    for depth in range(max_depth + 1):
        for node in sorted(n for n in members if int(np.log2(n + 1)) == depth):
            rows = members[node]
            G, H = g[rows].sum(), h[rows].sum()
            best = (1e-12 * max(1.0, G * G / (H + l2)), None)
            for j in range(codes.shape[1]) if depth < max_depth else []:
                for b in range(n_bins - 1):
                    left = rows[codes[rows, j] <= b]
                    right = rows[codes[rows, j] > b]
                    if len(left) < min_leaf or len(right) < min_leaf:
                        continue
                    gl, hl = g[left].sum(), h[left].sum()
                    gain = gl**2 / (hl + l2) + (G - gl)**2 / (H - hl + l2) - G**2 / (H + l2)
                    if gain > best[0] + 1e-9:
                        best = (gain, (j, b, left, right))
            if best[1] is None:
                value[node] = -lr * G / (H + l2)
            else:
                j, b, left, right = best[1]
                feature[node], code[node] = j, b
                members[2 * node + 1], members[2 * node + 2] = left, right
    return feature, code, value


def test_grown_tree_matches_a_numpy_reference():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4))
    g = np.sin(3 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=300)
    h = rng.uniform(0.5, 1.5, size=300)
    bins = agree_bins(MPI.COMM_SELF, X, first_row=0, rows=300, seed=0, max_bins=16)
    codes = bins.codes(X)
    options = GrowOptions(max_depth=3, l2=0.5, min_child_weight=0.0, min_samples_leaf=5,
                          lr=0.3)
    scales = (np.array([fixed_scale(np.abs(g).max(), 300)]),
              np.array([fixed_scale(h.max(), 300)]))
    (tree,), leaves = grow_trees(MPI.COMM_SELF, codes=codes, grad=g[:, None],
                                 hess=h[:, None], scales=scales, bins=bins, n_bins=16,
                                 options=options)
    feature, code, value = reference_tree(codes, g, h, n_bins=16, max_depth=3, l2=0.5,
                                          min_leaf=5, lr=0.3)
    assert (tree.feature >= 0).sum() >= 5  # a real tree
    assert (tree.feature[leaves[0]] < 0).all()  # every row ends in a leaf
    np.testing.assert_array_equal(tree.feature, feature)
    np.testing.assert_array_equal(tree.code[feature >= 0], code[feature >= 0])
    np.testing.assert_allclose(tree.value[:, 0], value, rtol=1e-9, atol=1e-12)
    # thresholds on raw values send every row where its code does
    for node in np.flatnonzero(feature >= 0):
        f = feature[node]
        np.testing.assert_array_equal(X[:, f] <= tree.threshold[node],
                                      codes[:, f] <= tree.code[node])


def test_bins_are_quantiles_and_at_most_max_bins():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=5000), rng.integers(0, 3, 5000).astype(float)])
    bins = agree_bins(MPI.COMM_SELF, X, first_row=0, rows=5000, seed=0, max_bins=255)
    assert len(bins.feature_edges(0)) == 254
    np.testing.assert_array_equal(bins.feature_edges(1), [0.5, 1.5])
    counts = np.bincount(bins.codes(X)[:, 0])
    assert counts.min() >= 5000 / 255 * 0.5 and counts.max() <= 5000 / 255 * 2


def test_gbdt_on_digits_close_to_scikit_learn(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    result = train(data="digits", model="gbdt", trees=30, max_depth=4, lr=0.2, quiet=True,
                   out=str(tmp_path / "run"))
    ours = result.history[-1]["test_accuracy"]
    # the same split of digits, from the run's own test rows
    from mpitrain.data import load_dataset
    data = load_dataset("digits", comm=MPI.COMM_SELF, task="classification",
                        dtype=np.float32, seed=0, standardize=False)
    sk = HistGradientBoostingClassifier(max_iter=30, max_depth=4, learning_rate=0.2,
                                        max_leaf_nodes=None, early_stopping=False,
                                        random_state=0)
    sk.fit(data.train.X, data.train.y)
    theirs = sk.score(data.test.X, data.test.y)
    assert ours >= theirs - 0.02, (ours, theirs)
    # model.npz reproduces the run's test accuracy and gives probabilities
    model = tmp_path / "run" / "model.npz"
    assert np.mean(predict(model, data.test.X) == data.test.y) == pytest.approx(ours)
    proba = predict_proba(model, data.test.X[:5])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert predict(model, data.test.X[0]) == np.argmax(proba[0])


def test_forest_on_digits_close_to_scikit_learn(tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    from mpitrain.data import load_dataset

    result = train(data="digits", model="forest", trees=30, max_depth=12, min_samples_leaf=1,
                   quiet=True, out=str(tmp_path / "run"))
    ours = result.history[-1]["test_accuracy"]
    data = load_dataset("digits", comm=MPI.COMM_SELF, task="classification",
                        dtype=np.float32, seed=0, standardize=False)
    theirs = np.mean([RandomForestClassifier(n_estimators=30, random_state=seed).fit(
        data.train.X, data.train.y).score(data.test.X, data.test.y) for seed in range(3)])
    assert ours >= theirs - 0.02, (ours, theirs)
    model = tmp_path / "run" / "model.npz"
    assert np.mean(predict(model, data.test.X) == data.test.y) == pytest.approx(ours)
    np.testing.assert_allclose(predict_proba(model, data.test.X).sum(axis=1), 1.0)


def test_forest_bootstrap_is_poisson_and_keyed_by_row():
    from mpitrain.kernels.trees import keyed_uniform, poisson_weights

    u = np.empty(100_000)
    keyed_uniform(7, 3, 0, u)
    w = np.empty_like(u)
    poisson_weights(u, w)
    assert abs(w.mean() - 1.0) < 0.02 and abs(w.var() - 1.0) < 0.03
    assert abs(np.mean(w == 0) - np.exp(-1)) < 0.01
    tail = np.empty(10)
    keyed_uniform(7, 3, 500, tail)  # rows 500.. drawn from another rank: same numbers
    np.testing.assert_array_equal(tail, u[500:510])


def test_forest_regressor_learns():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 3))
    y = 2 * X[:, 0] + np.sin(2 * X[:, 1])
    result = train(X=X, y=y, model="forest", loss="squared", trees=10, max_depth=8,
                   min_samples_leaf=3, quiet=True)
    assert result.history[-1]["test_loss"] < 0.1 * np.var(y)


def test_gbdt_regression_and_logistic_learn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(800, 3))
    y = 2 * X[:, 0] + np.sin(2 * X[:, 1]) + 0.1 * rng.normal(size=800)
    reg = train(X=X, y=y, model="gbdt", loss="squared", trees=30, max_depth=3, lr=0.3,
                quiet=True)
    assert reg.history[-1]["test_loss"] < 0.1 * reg.history[0]["test_loss"]
    binary = train(data="synthetic", model="gbdt", classes=2, samples=800, trees=20,
                   quiet=True)
    assert binary.summary["model"]["loss"] == "logistic"
    assert binary.history[-1]["test_accuracy"] >= 0.75


def test_kmeans_inertia_within_one_percent_of_scikit_learn(tmp_path):
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=3000, centers=6, n_features=5, cluster_std=1.5,
                      random_state=1)
    result = train(X=X, y=y.astype(float), model="kmeans", clusters=6, test_fraction=0.0,
                   standardize=False, quiet=True, out=str(tmp_path / "run"))
    sk = KMeans(n_clusters=6, n_init=1, random_state=0).fit(X)
    ours = result.history[-1]["inertia"]
    assert ours <= sk.inertia_ * 1.01, (ours, sk.inertia_)
    assert result.summary["model"]["converged"]
    labels = predict(tmp_path / "run" / "model.npz", X)
    centers = result.params["centers"]
    np.testing.assert_array_equal(labels, np.argmin(
        ((X[:, None, :] - centers[None]) ** 2).sum(axis=2), axis=1))
    with pytest.raises(Exception, match="predict_proba needs a classifier"):
        predict_proba(tmp_path / "run" / "model.npz", X)


def test_resume_between_trees_gives_the_same_model(tmp_path):
    options = dict(data="synthetic", model="gbdt", classes=3, samples=500, max_depth=3,
                   trees=6, quiet=True)
    straight = train(**options)
    out = str(tmp_path / "run")
    calls = []
    stopped = train(out=out, stop_requested=lambda: calls.append(1) or len(calls) >= 3,
                    **options)
    assert stopped.status == "stopped"
    resumed = train(out=out, resume="latest", **options)
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["tree"] for line in lines] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("argv,fragment", [
    (["--model", "gbdt", "--trees", "0"], "--trees must be >= 1 (got 0)"),
    (["--model", "gbdt", "--max-depth", "-1"], "--max-depth must be >= 1 (got -1)"),
    (["--model", "gbdt", "--max-bins", "300"], "--max-bins must be in 2..255 (got 300)"),
    (["--model", "kmeans", "--samples", "20", "--clusters", "50"],
     "--clusters must be at most the 16 training rows (got 50)"),
    (["--model", "gbdt", "--mode", "fedavg"], "--mode fedavg applies to gradient models"),
    (["--mode", "fedavg", "--partition", "kmeans", "--samples", "30", "--clients", "40"],
     "--partition kmeans makes one cluster per client, but --clients 40 is more than"),
    (["--model", "gbdt", "--loss", "logistic", "--classes", "3"],
     "--loss logistic needs two classes"),
])
def test_bad_input_exits_2_with_one_message(argv, fragment):
    done = run_train([*argv, "--quiet"], ranks=2, timeout=120)
    assert done.returncode == 2, (argv, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mpitrain: error: "), done.stderr
    assert fragment in lines[0], lines[0]


def test_cli_end_to_end_under_mpiexec(tmp_path):
    out = tmp_path / "run"
    done = run_train(["--model", "gbdt", "--data", "digits", "--trees", "5", "--max-depth",
                      "3", "--out", str(out), "--quiet"], ranks=3, timeout=180)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["model"]["trees"] == 50
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 5
    rows = tmp_path / "rows.npz"
    np.savez(rows, X=np.zeros((5, 64)), y=np.zeros(5))
    check = run_mpi(["-m", "mpitrain", "predict", "--model", str(out / "model.npz"), "--data",
                     str(rows), "--out", str(tmp_path / "pred.csv"), "--proba"], ranks=2)
    assert check.returncode == 0, check.stderr
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    assert lines[0].startswith("prediction,proba_0") and len(lines) == 6


def test_bench_trees_runs_and_writes_json(tmp_path):
    target = tmp_path / "bench" / "trees.json"
    done = run_mpi(["-m", "mpitrain", "bench", "trees", "--samples", "2000", "--features",
                    "4", "--trees", "2", "--max-iter", "3", "--models", "gbdt,forest,kmeans",
                    "--json", str(target)], ranks=2, timeout=240)
    assert done.returncode == 0, done.stderr
    report = json.loads(target.read_text())
    assert report["ranks"] == 2 and sorted(report["models"]) == ["forest", "gbdt", "kmeans"]
    for entry in report["models"].values():
        assert entry["seconds"] > 0 and entry["one_rank_seconds"] > 0
        assert "sklearn" in entry["peers"] and len(entry["rss_mb_per_rank"]) == 2
