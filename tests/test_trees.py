"""Tree ensembles and k-means (``--model gbdt``, ``--model kmeans``) on one rank: the tree
grower against a plain numpy reference, accuracy against scikit-learn, saved models and
predict, resume, and bad input through the CLI (one message, exit 2)."""

import json

import numpy as np
import pytest
from cli_runner import run_mpi, run_train
from mpi4py import MPI

from mpitrain import train
from mpitrain.exact import fixed_scale
from mpitrain.kernels.trees import keyed_uniform
from mpitrain.models.predict import predict, predict_proba
from mpitrain.trees.binning import agree_bins, feature_edges
from mpitrain.trees.grow import GrowOptions, grow_trees

pytestmark = pytest.mark.timeout(240)


def reference_split(codes, g, h, rows, *, n_bins, l2, min_leaf):
    """Exhaustive best split of ``rows`` in plain float64 numpy: (gain, feature, code,
    missing_left, left rows, right rows) or None. Code ``n_bins`` is a missing value; it
    goes to either side (ties: right); a node without missing values sends them to the
    child with more rows."""
    G, H = g[rows].sum(), h[rows].sum()
    best = (1e-12 * max(1.0, G * G / (H + l2)), None)
    for j in range(codes.shape[1]):
        present = codes[rows, j] < n_bins
        for b in range(n_bins):
            for missing_left in (False, True):
                goes_left = (codes[rows, j] <= b) & present
                if missing_left:
                    goes_left |= ~present
                left, right = rows[goes_left], rows[~goes_left]
                if len(left) < min_leaf or len(right) < min_leaf:
                    continue
                gl, hl = g[left].sum(), h[left].sum()
                gain = gl**2 / (hl + l2) + (G - gl)**2 / (H - hl + l2) - G**2 / (H + l2)
                if gain > best[0] * (1 + 1e-9) + 1e-9:
                    if present.all():
                        missing_left = len(left) > len(right)
                    best = (gain, (j, b, missing_left, left, right))
    return None if best[1] is None else (best[0], *best[1])


def reference_tree(codes, g, h, *, n_bins, max_depth, l2, min_leaf, lr, max_leaves=0):
    """Level-wise (or best-first, with ``max_leaves``) growth by :func:`reference_split`:
    {path from the root ("", "L", "LR", ...): (feature, code, missing_left) or the leaf
    value}."""
    leaves = {"": np.arange(len(g))}
    nodes = {}
    splits = {}

    def candidate(path):
        if max_depth and len(path) >= max_depth:
            return None
        return reference_split(codes, g, h, leaves[path], n_bins=n_bins, l2=l2,
                               min_leaf=min_leaf)

    splits[""] = candidate("")
    while True:
        open_ = {p: s for p, s in splits.items() if s is not None}
        if not open_ or (max_leaves and len(leaves) >= max_leaves):
            break
        if max_leaves:  # best-first: the highest gain, ties the first made
            chosen = [max(open_, key=lambda p: open_[p][0])]
        else:
            chosen = list(open_)
        for path in chosen:
            _, j, b, missing_left, left, right = splits.pop(path)
            nodes[path] = (j, b, missing_left)
            del leaves[path]
            leaves[path + "L"], leaves[path + "R"] = left, right
        if not max_leaves:
            splits = {}
        for path in chosen:
            for child in (path + "L", path + "R"):
                splits[child] = candidate(child)
    for path, rows in leaves.items():
        nodes[path] = -lr * g[rows].sum() / (h[rows].sum() + l2)
    return nodes


def as_paths(tree):
    """A grown Tree as :func:`reference_tree` describes it."""
    out = {}

    def walk(node, path):
        if tree.feature[node] < 0:
            out[path] = tree.value[node, 0]
            return
        out[path] = (int(tree.feature[node]), int(tree.code[node]),
                     bool(tree.missing_left[node]))
        walk(tree.left[node], path + "L")
        walk(tree.right[node], path + "R")

    walk(0, "")
    return out


def assert_same_tree(tree, expected):
    got = as_paths(tree)
    assert sorted(got) == sorted(expected)
    for path, value in expected.items():
        if isinstance(value, tuple):
            assert got[path] == value, path
        else:
            np.testing.assert_allclose(got[path], value, rtol=1e-9, atol=1e-12)


def grow_one(X, g, h, *, max_bins, **options):
    bins = agree_bins(MPI.COMM_SELF, X, first_row=0, rows=len(X), seed=0, max_bins=max_bins)
    codes = bins.codes(X)
    scales = (np.array([fixed_scale(np.abs(g).max(), len(X))]),
              np.array([fixed_scale(h.max(), len(X))]))
    (tree,), leaves = grow_trees(MPI.COMM_SELF, codes=codes, grad=g[:, None],
                                 hess=h[:, None], scales=scales, bins=bins,
                                 n_bins=bins.n_bins, options=GrowOptions(**options))
    return bins, codes, tree, leaves


@pytest.mark.parametrize("shape", [dict(max_depth=3), dict(max_depth=0, max_leaves=7),
                                   dict(max_depth=3, max_leaves=5)])
def test_grown_tree_matches_a_numpy_reference(shape):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4))
    g = np.sin(3 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=300)
    h = rng.uniform(0.5, 1.5, size=300)
    bins, codes, tree, leaves = grow_one(X, g, h, max_bins=16, l2=0.5, min_child_weight=0.0,
                                         min_samples_leaf=5, lr=0.3, **shape)
    expected = reference_tree(codes, g, h, n_bins=bins.n_bins, l2=0.5, min_leaf=5, lr=0.3,
                              **shape)
    splits = (tree.feature >= 0).sum()
    assert splits >= 4  # a real tree
    if shape.get("max_leaves"):
        assert splits == shape["max_leaves"] - 1
    assert (tree.feature[leaves[0]] < 0).all()  # every row ends in a leaf
    assert_same_tree(tree, expected)
    # thresholds on raw values send every row where its code does
    for node in np.flatnonzero(tree.feature >= 0):
        f = tree.feature[node]
        np.testing.assert_array_equal(X[:, f] <= tree.threshold[node],
                                      codes[:, f] <= tree.code[node])


def test_missing_values_learn_their_side_like_a_numpy_reference():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 3))
    g = X[:, 0] + 0.5 * X[:, 1] + 0.1 * rng.normal(size=400)
    missing = rng.random(400) < 0.2
    g[missing] += 2.0  # rows missing feature 0 behave like large values
    X[missing, 0] = np.nan
    X[rng.random(400) < 0.05, 2] = np.nan  # noise feature with a few missing
    h = np.ones(400)
    bins, codes, tree, _ = grow_one(X, g, h, max_bins=16, l2=1.0, min_child_weight=0.0,
                                    min_samples_leaf=5, lr=1.0, max_depth=3)
    assert (codes[missing, 0] == bins.missing).all() and bins.missing == bins.n_bins
    expected = reference_tree(codes, g, h, n_bins=bins.n_bins, max_depth=3, l2=1.0,
                              min_leaf=5, lr=1.0)
    assert_same_tree(tree, expected)
    assert tree.feature[0] == 0 and tree.missing_left[0] == 0  # NaN with the large values


def test_bins_are_quantiles_and_at_most_max_bins():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=5000), rng.integers(0, 3, 5000).astype(float)])
    bins = agree_bins(MPI.COMM_SELF, X, first_row=0, rows=5000, seed=0, max_bins=255)
    assert len(bins.feature_edges(0)) == 254
    np.testing.assert_array_equal(bins.feature_edges(1), [0.5, 1.5])
    counts = np.bincount(bins.codes(X)[:, 0])
    assert counts.min() >= 5000 / 255 * 0.5 and counts.max() <= 5000 / 255 * 2


@pytest.mark.parametrize("sampled", [False, True])
def test_float32_rows_give_the_edges_of_their_float64_values(sampled, monkeypatch):
    """The sample travels in the rows' dtype and each feature is sorted on its own in
    float64: the edges are those of the same values held as float64, NaN included, with
    and without the row sample."""
    from mpitrain.trees import binning

    if sampled:
        monkeypatch.setattr(binning, "SAMPLE_ROWS", 700)
    rng = np.random.default_rng(5)
    X = np.column_stack([rng.normal(size=3000), np.round(rng.normal(size=3000) * 3),
                         np.exp(8 * rng.normal(size=3000))]).astype(np.float32)
    X[rng.random(3000) < 0.2, 0] = np.nan
    narrow = agree_bins(MPI.COMM_SELF, X, first_row=0, rows=3000, seed=2, max_bins=64)
    wide = agree_bins(MPI.COMM_SELF, X.astype(np.float64), first_row=0, rows=3000, seed=2,
                      max_bins=64)
    np.testing.assert_array_equal(narrow.edges, wide.edges)
    np.testing.assert_array_equal(narrow.offsets, wide.offsets)
    sample = X.astype(np.float64)
    if sampled:
        draw = np.empty(3000)
        keyed_uniform(2, binning.SAMPLE_STREAM, 0, draw)
        sample = sample[draw < 700 / 3000]
    for j in range(3):
        present = np.sort(sample[:, j][~np.isnan(sample[:, j])])
        np.testing.assert_array_equal(narrow.feature_edges(j), feature_edges(present, 64))
    np.testing.assert_array_equal(narrow.codes(X), wide.codes(X.astype(np.float64)))


@pytest.mark.parametrize("kind", ["normal", "few_values", "nan", "heavy_tail", "signed_zeros"])
def test_edges_are_numpy_unique_and_percentile_of_the_sample(kind):
    """The edges read off the sorted sample equal numpy's (np.unique midpoints, or
    np.percentile(method="midpoint") of the present values), for any max_bins."""
    rng = np.random.default_rng(len(kind))
    for max_bins in (2, 3, 17, 64, 255):
        for n in (1, 2, 300, 4001):
            v = rng.standard_normal(n)
            if kind == "few_values":
                v = np.round(v * 20)
            elif kind == "nan":
                v[rng.random(n) < 0.3] = np.nan
            elif kind == "heavy_tail":
                v = np.exp(20 * v)
            elif kind == "signed_zeros":
                v = np.where(rng.random(n) < 0.5, -0.0, 0.0) * np.round(v)
            present = v[~np.isnan(v)]
            if len(np.unique(present)) <= max_bins:
                distinct = np.unique(present)
                expected = (distinct[:-1] + distinct[1:]) / 2.0
            else:
                expected = np.unique(np.percentile(
                    present, np.linspace(0, 100, max_bins + 1)[1:-1], method="midpoint"))
            got = feature_edges(np.sort(present), max_bins)
            np.testing.assert_array_equal(got, expected)  # -0.0 == 0.0


def test_codes_count_the_edges_below_each_value_like_searchsorted():
    """bin_rows' grid-bounded search gives numpy's searchsorted count on any spread of
    values: heavy tails, few values, one value, tiny scales, values beyond the edges, NaN."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((4000, 7))
    X = np.column_stack([z[:, 0], np.exp(5 * z[:, 1]), np.exp(30 * z[:, 2]),
                         np.round(z[:, 3] * 3), np.ones(4000), z[:, 5] * 1e-30,
                         -np.exp(30 * z[:, 6])])
    X[rng.random(X.shape) < 0.05] = np.nan
    bins = agree_bins(MPI.COMM_SELF, X, first_row=0, rows=len(X), seed=0, max_bins=255)
    beyond = np.vstack([X, X * 3, -X, X + 1e-9])
    codes = bins.codes(beyond)
    for j in range(X.shape[1]):
        expected = np.searchsorted(bins.feature_edges(j), beyond[:, j], side="left")
        expected[np.isnan(beyond[:, j])] = bins.missing
        np.testing.assert_array_equal(codes[:, j], expected)


@pytest.mark.parametrize("model", ["gbdt", "forest"])
def test_tree_strategies_drop_the_float_rows_after_binning(model):
    """After binning a rank keeps its uint8 codes, not the float rows (train and test)."""
    from mpitrain.config import TrainConfig
    from mpitrain.data import load_dataset
    from mpitrain.strategies import strategy_for
    from mpitrain.training import synthetic_spec

    config = TrainConfig(model=model, data="synthetic", samples=300, features=4, trees=2)
    mode = strategy_for(config.model, config.mode)
    dataset = load_dataset("synthetic", comm=MPI.COMM_SELF, dtype=np.float32, seed=0,
                           synthetic=synthetic_spec(config), **mode.data_options(config))
    strategy = mode.build(config, dataset=dataset, comm=MPI.COMM_SELF)
    for shard, codes in ((strategy.dataset.train, strategy.codes),
                         (strategy.dataset.test, strategy.test_codes)):
        assert shard.X.shape == (0, 4) and codes.dtype == np.uint8
        assert codes.shape == (shard.n_local, 4) and shard.n_local > 0
    assert strategy.dataset.train.n_total == dataset.train.n_total


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


@pytest.mark.parametrize("model", ["gbdt", "forest"])
def test_resume_between_trees_gives_the_same_model(tmp_path, model):
    options = dict(data="synthetic", model=model, classes=3, samples=500, max_depth=3,
                   trees=6, quiet=True, oob_score=model == "forest")
    straight = train(**options)
    out = str(tmp_path / "run")
    calls = []
    stopped = train(out=out, stop_requested=lambda: calls.append(1) or len(calls) >= 3,
                    **options)
    assert stopped.status == "stopped"
    resumed = train(out=out, resume="latest", **options)
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)
    assert resumed.summary["model"] == straight.summary["model"]  # forest: oob_score
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["tree"] for line in lines] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("argv,fragment", [
    (["--model", "gbdt", "--trees", "0"], "--trees must be >= 1 (got 0)"),
    (["--model", "gbdt", "--max-depth", "-1"],
     "--max-depth must be >= 1 (0: no limit, with --max-leaves) (got -1)"),
    (["--model", "gbdt", "--max-depth", "0"], "--max-depth must be >= 1 (0: no limit"),
    (["--model", "gbdt", "--max-leaves", "1"], "--max-leaves must be >= 2"),
    (["--model", "gbdt", "--max-bins", "300"], "--max-bins must be in 2..255 (got 300)"),
    (["--model", "kmeans", "--samples", "20", "--clusters", "50"],
     "--clusters must be at most the 16 training rows (got 50)"),
    (["--model", "gbdt", "--mode", "fedavg"], "--mode fedavg applies to gradient models"),
    (["--model", "gbdt", "--oob-score"], "--oob-score applies to --model forest (got --model"),
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
        assert 0 < min(entry["rss_mb_per_rank"])
    assert report["rss_mb_baseline"] > 0


def missing_data(n, seed):
    """Two classes; feature 0 goes missing mostly where it is large (not at random), so
    where the missing values go matters; feature 1 misses at random."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + X[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(float)
    X[(X[:, 0] > 0.5) & (rng.random(n) < 0.8), 0] = np.nan
    X[rng.random(n) < 0.1, 1] = np.nan
    return X, y


@pytest.mark.parametrize("model", ["gbdt", "forest"])
def test_missing_values_learned_and_predicted_like_scikit_learn(tmp_path, model):
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    X, y = missing_data(3000, 2)
    test_X, test_y = missing_data(1000, 3)
    options = (dict(trees=30, max_depth=3, lr=0.3) if model == "gbdt"
               else dict(trees=30, max_depth=10, min_samples_leaf=1))
    result = train(X=X, y=y, test_X=test_X, test_y=test_y, model=model, quiet=True,
                   out=str(tmp_path / "run"), **options)
    ours = result.history[-1]["test_accuracy"]
    if model == "gbdt":
        sk = HistGradientBoostingClassifier(max_iter=30, max_depth=3, learning_rate=0.3,
                                            max_leaf_nodes=None, early_stopping=False)
    else:  # scikit-learn >= 1.4 forests take NaN
        sk = RandomForestClassifier(n_estimators=30, max_depth=10, random_state=0)
    theirs = sk.fit(X, y).score(test_X, test_y)
    assert ours >= theirs - 0.02, (ours, theirs)
    # model.npz routes NaN on raw values as the run routed the missing code
    saved = predict(tmp_path / "run" / "model.npz", test_X)
    assert np.mean(saved == test_y) == pytest.approx(ours)
    # a learned direction: sending every NaN right (what predict did before) is worse
    assert result.params["missing_left"].any()


def test_infinite_features_are_still_an_error():
    X, y = missing_data(200, 0)
    X[7, 2] = np.inf
    with pytest.raises(Exception, match="has an infinite value in row 7"):
        train(X=X, y=y, model="gbdt", trees=2, quiet=True)
    with pytest.raises(Exception, match="non-finite value"):
        train(X=X, y=y, model="kmeans", quiet=True)


def test_forest_out_of_bag_score_like_scikit_learn(tmp_path):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    from mpitrain.data import load_dataset

    out = tmp_path / "run"
    result = train(data="digits", model="forest", trees=40, max_depth=12, min_samples_leaf=1,
                   oob_score=True, quiet=True, out=str(out))
    ours = result.summary["model"]["oob_score"]
    assert ours == result.history[-1]["oob_score"]
    assert json.loads((out / "summary.json").read_text())["model"]["oob_score"] == ours
    data = load_dataset("digits", comm=MPI.COMM_SELF, task="classification",
                        dtype=np.float32, seed=0, standardize=False)
    theirs = np.mean([RandomForestClassifier(n_estimators=40, oob_score=True, random_state=s)
                      .fit(data.train.X, data.train.y).oob_score_ for s in range(3)])
    assert abs(ours - theirs) < 0.03, (ours, theirs)
    # the out-of-bag estimate tracks the held-out accuracy
    assert abs(ours - result.history[-1]["test_accuracy"]) < 0.05
    rng = np.random.default_rng(1)
    X = rng.normal(size=(800, 3))
    y = 2 * X[:, 0] + np.sin(2 * X[:, 1]) + 0.1 * rng.normal(size=800)
    reg = train(X=X, y=y, model="forest", loss="squared", trees=30, max_depth=10,
                min_samples_leaf=1, oob_score=True, test_fraction=0.0, quiet=True)
    sk = RandomForestRegressor(n_estimators=30, max_depth=10, oob_score=True,
                               random_state=0).fit(X, y)
    assert abs(reg.summary["model"]["oob_score"] - sk.oob_score_) < 0.03


@pytest.mark.parametrize("model", ["gbdt", "forest"])
def test_more_trees_on_resume_equal_an_uninterrupted_run(tmp_path, model):
    options = dict(data="synthetic", model=model, classes=3, samples=500, max_depth=3,
                   oob_score=model == "forest", quiet=True)
    longer = train(trees=7, **options)
    out = str(tmp_path / "run")
    assert train(out=out, trees=4, **options).status == "finished"
    resumed = train(out=out, trees=7, resume="latest", overwrite=True, **options)
    assert resumed.status == "finished"
    for name, value in longer.params.items():
        np.testing.assert_array_equal(resumed.params[name], value, err_msg=name)
    assert resumed.summary["model"] == longer.summary["model"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["tree"] for line in lines] == [1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(Exception, match="is at tree 7 but this run ends at tree 3"):
        train(out=out, trees=3, resume="latest", overwrite=True, **options)


def test_forest_on_iris_close_to_scikit_learn():
    from sklearn.ensemble import RandomForestClassifier

    from mpitrain.data import load_dataset

    ours, theirs = [], []
    for seed in range(3):  # 30 test rows each: average a few splits
        data = load_dataset("iris", comm=MPI.COMM_SELF, task="classification",
                            dtype=np.float32, seed=seed, standardize=False)
        assert data.n_features == 4 and data.n_classes == 3
        assert data.train.n_total + data.test.n_total == 150
        result = train(data="iris", model="forest", trees=50, min_samples_leaf=1, max_depth=0,
                       max_leaves=64, seed=seed, quiet=True)
        ours.append(result.history[-1]["test_accuracy"])
        theirs.append(RandomForestClassifier(n_estimators=50, random_state=seed).fit(
            data.train.X, data.train.y).score(data.test.X, data.test.y))
    assert np.mean(ours) >= np.mean(theirs) - 0.02, (ours, theirs)


def test_models_saved_in_heap_order_still_predict():
    from mpitrain.models.estimators import SavedEstimator

    # one split: x0 <= 0.5 left (node 1), else right (node 2); no left/right arrays
    arrays = {"feature": np.array([[0, -1, -1]], np.int32), "threshold": np.array([[0.5, 0, 0]]),
              "value": np.array([[[0.0], [1.0], [2.0]]]), "column": np.zeros(1, np.int64),
              "base": np.zeros(1)}
    saved = SavedEstimator(kind="gbdt", arrays=arrays, n_features=1, n_classes=0,
                           info={"loss": "squared"})
    np.testing.assert_array_equal(saved.outputs(np.array([[0.0], [1.0], [np.nan]])),
                                  [1.0, 2.0, 2.0])
