"""Federated mode, serial parts: partitioners, sampling, server rules, aggregation math,
secure aggregation, DP and its accountant, robust rules, option checks, and the CLI."""

import json
import math
import sys

import numpy as np
import pytest
from cli_runner import run_train
from mpi4py import MPI
from scipy import integrate, stats

from mpitrain.config import resolve
from mpitrain.errors import UserError
from mpitrain.federated import secure
from mpitrain.federated.clients import assign_clients
from mpitrain.federated.local import ClientStats
from mpitrain.federated.partition import partition_rows
from mpitrain.federated.privacy import (
    RdpAccountant,
    add_gaussian_noise,
    clip_update,
    epsilon_from_rdp,
    rdp_sampled_gaussian,
)
from mpitrain.federated.robust import (
    add_squared_distances,
    coordinate_median,
    krum_index,
    trimmed_mean,
)
from mpitrain.federated.sampling import clients_per_round, sample_clients
from mpitrain.federated.server import ServerOptimizer
from mpitrain.strategies.federated import FederatedStrategy
from mpitrain.training import prepare

pytestmark = pytest.mark.timeout(120)

LABELS = np.random.default_rng(7).integers(0, 10, size=1000)


def build(comm=MPI.COMM_SELF, **options):
    """The federated strategy of ``options`` (what train() assembles), not yet run."""
    config = resolve({}, {"mode": "fedavg", "quiet": True, **options})
    model, dataset, params = prepare(config, comm=comm)
    strategy = FederatedStrategy.build(config, model=model, params=params,
                                        dataset=dataset, comm=comm)
    return strategy, dataset


def one_round(strategy, round_index=0):
    from mpitrain.strategies.base import Unit
    unit = Unit(round_index, round_index, 0, True)
    strategy.contribute(unit, lambda: False)
    strategy.reduce(unit)
    strategy.apply(unit)
    return unit


def fake_training(strategy, update_of):
    """Replace local training by a crafted update per client id (stats: one row each)."""
    def train(index, round_index, params):
        client = int(strategy.clients.ids[index])
        strategy.trainer.local[:] = update_of(client)
        return ClientStats(loss_sum=0.0, correct=0.0, rows=1)
    strategy.trainer.train = train


# -- partitioners -----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards", "labels"])
def test_partition_covers_every_row_once_and_is_deterministic(scheme):
    part = partition_rows(LABELS, clients=20, scheme=scheme, seed=3, alpha=0.3,
                          labels_per_client=2, n_classes=10)
    assert part.clients == 20 and (part.sizes >= 1).all()
    np.testing.assert_array_equal(np.sort(part.rows), np.arange(len(LABELS)))
    again = partition_rows(LABELS, clients=20, scheme=scheme, seed=3, alpha=0.3,
                           labels_per_client=2, n_classes=10)
    np.testing.assert_array_equal(part.rows, again.rows)
    np.testing.assert_array_equal(part.offsets, again.offsets)
    other = partition_rows(LABELS, clients=20, scheme=scheme, seed=4, alpha=0.3,
                           labels_per_client=2, n_classes=10)
    assert not np.array_equal(part.rows, other.rows)


def test_partition_sizes_and_label_skew():
    classes = lambda part: (part.label_histograms(LABELS, 10) > 0).sum(axis=1)  # noqa: E731
    iid = partition_rows(LABELS, clients=30, scheme="iid", seed=0)
    assert iid.sizes.max() - iid.sizes.min() <= 1
    assert classes(iid).mean() > 9
    shards = partition_rows(LABELS, clients=50, scheme="shards", seed=0)
    assert shards.sizes.max() - shards.sizes.min() <= 2  # two shards of 10 or 11 rows
    assert np.median(classes(shards)) <= 2 and classes(shards).max() <= 4
    labels = partition_rows(LABELS, clients=25, scheme="labels", seed=0, labels_per_client=3,
                            n_classes=10)
    assert (classes(labels) == 3).all()
    skewed = partition_rows(LABELS, clients=20, scheme="dirichlet", seed=0, alpha=0.05,
                            n_classes=10)
    flat = partition_rows(LABELS, clients=20, scheme="dirichlet", seed=0, alpha=100.0,
                          n_classes=10)
    assert classes(skewed).mean() < 4 < 9 < classes(flat).mean()
    assert skewed.sizes.std() > 3 * flat.sizes.std()


@pytest.mark.parametrize("scheme,clients,extra,message", [
    ("iid", 1001, {}, "--clients 1001 is more than the 1000 training rows"),
    ("shards", 501, {}, "2 × --clients = 1002 shards; use at most 500 clients"),
    ("labels", 4, {"labels_per_client": 2}, "leaves classes without a client"),
    ("labels", 10, {"labels_per_client": 11}, "--labels-per-client must be at most the "
     "number of classes, 10 (got 11)"),
])
def test_partition_errors(scheme, clients, extra, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        partition_rows(LABELS, clients=clients, scheme=scheme, seed=0, n_classes=10, **extra)


def test_assign_clients_is_contiguous_balanced_and_covers_every_rank():
    sizes = np.array([50, 1, 1, 1, 1, 1, 45, 1, 1, 48])
    for ranks in (1, 2, 3, 4, 10):
        owner = assign_clients(sizes, ranks)
        assert (np.diff(owner) >= 0).all() and set(owner) == set(range(ranks))
    owner = assign_clients(np.full(12, 10), 3)
    np.testing.assert_array_equal(np.bincount(owner), [4, 4, 4])


# -- sampling ----------------------------------------------------------------------------


def test_sampling_is_keyed_by_seed_and_round_only():
    assert clients_per_round(100, 0.1) == 10 and clients_per_round(100, 0.001) == 1
    first = sample_clients(seed=1, round_index=5, clients=100, fraction=0.1)
    assert len(first) == 10 and len(set(first)) == 10 and (np.diff(first) > 0).all()
    np.testing.assert_array_equal(first, sample_clients(seed=1, round_index=5, clients=100,
                                                        fraction=0.1))
    assert not np.array_equal(first, sample_clients(seed=1, round_index=6, clients=100,
                                                    fraction=0.1))
    counts = [len(sample_clients(seed=0, round_index=r, clients=200, fraction=0.25,
                                 poisson=True)) for r in range(400)]
    assert abs(np.mean(counts) - 50) < 1.5 and np.std(counts) > 3  # Binomial(200, 0.25)


# -- server optimizers -------------------------------------------------------------------


def _server_reference(name, deltas, lr, momentum=0.9, b1=0.9, b2=0.99, tau=1e-3):
    x = np.zeros_like(deltas[0])
    m = np.zeros_like(x)
    v = np.full_like(x, tau * tau)
    for d in deltas:
        if name == "fedavg":
            x = x + lr * d
            continue
        if name == "fedavgm":
            m = momentum * m + d
            x = x + lr * m
            continue
        m = b1 * m + (1 - b1) * d
        if name == "fedadagrad":
            v = v + d * d
        elif name == "fedyogi":
            v = v - (1 - b2) * d * d * np.sign(v - d * d)
        else:
            v = b2 * v + (1 - b2) * d * d
        x = x + lr * m / (np.sqrt(v) + tau)
    return x


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_server_rules_match_reddi_et_al(name):
    deltas = [np.array([0.5, -1.0, 0.0, 2.0]), np.array([0.25, 1.0, -0.1, -3.0]),
              np.array([1.0, 0.0, 0.2, 0.5])]
    opt = ServerOptimizer(name=name, lr=0.3)
    params = np.zeros(4)
    opt.allocate(params)
    for d in deltas:
        opt.step(params, d)
    np.testing.assert_allclose(params, _server_reference(name, deltas, 0.3), rtol=1e-12)


def test_server_rule_by_hand_and_defaults():
    opt = ServerOptimizer(name="fedadam", lr=0.1)
    params = np.zeros(1)
    opt.allocate(params)
    opt.step(params, np.array([2.0]))
    # m = 0.1·2 = 0.2; v = 0.99·1e-6 + 0.01·4 = 0.04000099; x = 0.1·0.2/(0.2000025 + 1e-3)
    assert params[0] == pytest.approx(0.1 * 0.2 / (math.sqrt(0.04000099) + 1e-3), rel=1e-12)
    assert ServerOptimizer(name="fedavg").lr == 1.0
    assert ServerOptimizer(name="fedadam").lr == 0.01


# -- aggregation math --------------------------------------------------------------------


def test_aggregate_is_the_example_weighted_mean_of_client_updates():
    strategy, _ = build(data="synthetic", samples=130, features=3, classes=2, model="softmax",
                        dtype="float64", test_fraction=0.0, clients=7, partition="dirichlet",
                        alpha=0.5, client_fraction=1.0, rounds=1)
    strategy.params[:] = 0.0
    fake_training(strategy, lambda c: np.full(strategy.layout.size, float(c)))
    one_round(strategy)
    sizes = strategy.partition.sizes
    expected = (sizes * np.arange(7)).sum() / sizes.sum()
    np.testing.assert_allclose(strategy.params, expected, rtol=1e-12)
    assert strategy.message[-1 - 6] == sizes.sum()  # the WEIGHT slot: total rows


def test_fedsgd_with_every_client_is_one_full_batch_gradient_step():
    strategy, dataset = build(data="synthetic", samples=300, features=5, classes=3,
                              model="softmax", dtype="float64", test_fraction=0.0, clients=6,
                              partition="shards", client_fraction=1.0, local_epochs=1,
                              local_batch=0, local_lr=0.5, rounds=1)
    before = strategy.params.copy()
    one_round(strategy)
    X, y = dataset.train.X, dataset.train.y
    grad = np.empty(strategy.layout.size)
    rows = np.arange(len(y), dtype=np.int64)
    strategy.trainer.model.gradient(before, grad, X, y, rows,
                                    strategy.trainer.model.workspace(len(y), np.float64))
    np.testing.assert_allclose(strategy.params, before - 0.5 * grad / len(y), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("extra", [{}, {"secure_agg": True, "dp_clip": 1.0}])
def test_diverged_clients_stop_the_run_with_one_shared_error(extra):
    strategy, _ = build(data="synthetic", samples=100, features=3, model="softmax",
                        clients=5, rounds=1, **extra)

    def train(index, round_index, params):
        strategy.trainer.local[:] = np.nan
        return ClientStats(loss_sum=float("nan"), correct=0.0, rows=1)
    strategy.trainer.train = train
    with pytest.raises(UserError, match="training diverged: the clients' training loss is "
                       "not finite in round 1") as info:
        one_round(strategy)
    assert info.value.agreed


# -- secure aggregation ------------------------------------------------------------------


def fixed_key_pair(seed):
    """What secure.generate_key_pair returns, from seeded bytes instead of the OS's."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    x25519 = secure.require_cryptography()
    private = x25519.X25519PrivateKey.from_private_bytes(np.random.default_rng(seed).bytes(32))
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _parties(count, key_pair=lambda party: fixed_key_pair(100 + party)):
    """Every party's pair keys. Fixed keys by default: the masks, and so the statistical
    tests on them, are the same on every run."""
    pairs = [key_pair(party) for party in range(count)]
    publics = [public for _, public in pairs]
    return [secure.pair_keys(private, publics, me) for me, (private, _) in enumerate(pairs)]


def test_pair_keys_are_shared_by_the_pair_only():
    # fresh OS-random keys: the pairs agree whatever the keys
    keys = _parties(3, key_pair=lambda party: secure.generate_key_pair())
    assert keys[0][1] == keys[1][0] and keys[0][2] == keys[2][0] and keys[1][2] == keys[2][1]
    assert len({keys[0][1], keys[0][2], keys[1][2]}) == 3
    assert all(len(k) == 32 for party in keys for k in party.values())


def test_masks_cancel_and_a_masked_update_looks_uniform():
    n = 4096
    keys = _parties(3)
    scales = np.full(n, secure.payload_scale(10.0))
    updates = [np.linspace(-1, 1, n) * (p + 1) for p in range(3)]
    total = np.zeros(n, dtype=np.uint64)
    masked = []
    for p, update in enumerate(updates):
        encoded = np.empty(n, dtype=np.uint64)
        secure.encode(update, scales, encoded, np.empty(n))
        secure.PairwiseMasks(keys[p], p, n).apply(encoded, round_index=3)
        masked.append(encoded.copy())
        total += encoded
    result = np.empty(n)
    secure.decode(total, scales, result, np.empty(n))
    np.testing.assert_allclose(result, sum(updates), atol=3 * 0.5 / scales[0])
    uniform = masked[1].astype(np.float64) / 2.0**64
    assert stats.kstest(uniform, "uniform").pvalue > 1e-4
    top_bytes = (masked[1] >> np.uint64(56)).astype(np.int64)
    assert stats.chisquare(np.bincount(top_bytes, minlength=256)).pvalue > 1e-4
    plain = np.empty(n, dtype=np.uint64)
    secure.encode(updates[1], scales, plain, np.empty(n))
    assert stats.kstest(plain.astype(np.float64) / 2.0**64, "uniform").pvalue < 1e-10
    other_round = np.empty(n, dtype=np.uint64)
    secure.encode(updates[1], scales, other_round, np.empty(n))
    secure.PairwiseMasks(keys[1], 1, n).apply(other_round, round_index=4)
    assert not np.array_equal(other_round, masked[1])  # fresh masks every round


def test_fixed_point_round_trip_error_is_half_a_step():
    values = np.random.default_rng(0).uniform(-5, 5, 1000)
    scales = np.full(1000, secure.payload_scale(5.0))
    encoded, back = np.empty(1000, dtype=np.uint64), np.empty(1000)
    secure.encode(values, scales, encoded, np.empty(1000))
    secure.decode(encoded, scales, back, np.empty(1000))
    assert np.abs(back - values).max() <= 0.5 / scales[0] * (1 + 1e-9)


def test_secure_agg_without_cryptography_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.asymmetric.x25519", None)
    with pytest.raises(UserError, match=r"pip install 'mpitrain\[secure\]'"):
        secure.require_cryptography()


# -- differential privacy ----------------------------------------------------------------


def test_clipping_bounds_the_norm_and_keeps_small_updates():
    big = np.array([3.0, 4.0])
    assert clip_update(big, 1.0) == 5.0
    np.testing.assert_allclose(big, [0.6, 0.8])
    small = np.array([0.3, 0.4])
    clip_update(small, 1.0)
    np.testing.assert_array_equal(small, [0.3, 0.4])


def test_noise_has_the_requested_std_and_is_keyed_by_round():
    values = np.zeros(200_000)
    add_gaussian_noise(values, 0.7, np.empty_like(values), seed=1, round_index=2)
    assert abs(values.std() - 0.7) < 0.01 and abs(values.mean()) < 0.01
    again = np.zeros(200_000)
    add_gaussian_noise(again, 0.7, np.empty_like(again), seed=1, round_index=2)
    np.testing.assert_array_equal(values, again)


def test_dp_round_adds_noise_of_std_z_s_over_qk():
    strategy, _ = build(data="synthetic", samples=400, features=4, classes=2, model="softmax",
                        dtype="float64", clients=40, client_fraction=0.5, dp_clip=2.0,
                        dp_noise=1.5, rounds=1)
    strategy.params[:] = 0.0
    fake_training(strategy, lambda c: np.zeros(strategy.layout.size))
    one_round(strategy)
    # the noise of a round alone: std z·S/(qK) = 1.5·2/(0.5·40) = 0.15
    expected = np.zeros(strategy.layout.size)
    add_gaussian_noise(expected, 1.5 * 2.0, np.empty_like(expected), seed=0, round_index=0)
    np.testing.assert_allclose(strategy.params, expected / 20.0, rtol=1e-12)
    assert strategy.privacy.accountant.rounds == 1


def test_accountant_against_published_values():
    # TensorFlow Privacy's rdp_accountant tests (Mironov, Talwar and Zhang 2019) and Abadi et
    # al. 2016 §3.1 (q = 0.01, σ = 4, T = 10000, δ = 1e-5: ε ≈ 1.26).
    assert 10 * rdp_sampled_gaussian(0.1, 2.0, np.array([5.0]))[0] == pytest.approx(0.07737,
                                                                                      abs=1e-5)
    got = 50 * rdp_sampled_gaussian(0.01, 2.5, np.array([1.5, 2.5, 5, 50, 100]))
    np.testing.assert_allclose(got, [0.00065, 0.001085, 0.00218075, 0.023846, 167.416307],
                               atol=1e-5)
    orders = np.arange(2.0, 33.0)
    eps, order = epsilon_from_rdp(orders, 10000 * rdp_sampled_gaussian(0.01, 4.0, orders),
                                  1e-5, conversion="classic")
    assert (eps, order) == (pytest.approx(1.258575, abs=1e-6), 20.0)
    orders = np.array([1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28,
                       32, 64, 256])
    rdp = (10000 * rdp_sampled_gaussian(0.01, 4.0, orders)
           + 100 * rdp_sampled_gaussian(0.1, 2.0, orders))
    eps, order = epsilon_from_rdp(orders, rdp, 1e-5, conversion="classic")
    assert (eps, order) == (pytest.approx(3.276237, abs=1e-6), 8.0)
    accountant = RdpAccountant(q=0.01, noise=4.0)
    accountant.step(10000)
    assert accountant.epsilon(1e-5) < accountant.epsilon(1e-5, conversion="classic") < 1.26


@pytest.mark.parametrize("q,sigma,order", [(0.05, 1.0, 2.5), (0.3, 2.0, 7.25), (0.01, 0.8, 3)])
def test_rdp_matches_numerical_integration(q, sigma, order):
    def integrand(x):
        ratio = math.exp((2 * x - 1) / (2 * sigma * sigma))
        return stats.norm.pdf(x, scale=sigma) * (1 - q + q * ratio) ** order
    value, _ = integrate.quad(integrand, -40 * sigma, 40 * sigma, limit=400)
    expected = math.log(value) / (order - 1)
    got = rdp_sampled_gaussian(q, sigma, np.array([order]))[0]
    assert got == pytest.approx(expected, rel=1e-6)
    assert rdp_sampled_gaussian(1.0, sigma, np.array([order]))[0] == order / (2 * sigma**2)


# -- robust aggregation ------------------------------------------------------------------


def test_robust_rules_ignore_outliers():
    honest = np.random.default_rng(0).normal(1.0, 0.1, size=(8, 5))
    updates = np.vstack([honest, np.full((2, 5), 100.0)])
    median = np.empty(5)
    coordinate_median(updates, median)
    assert np.abs(median - 1.0).max() < 0.2
    trimmed = np.empty(5)
    trimmed_mean(updates, 0.2, trimmed)  # drops 2 lowest and 2 highest of 10
    np.testing.assert_allclose(trimmed, np.sort(updates, axis=0)[2:8].mean(axis=0))
    assert np.abs(trimmed - 1.0).max() < 0.2
    distances = np.zeros((10, 10))
    add_squared_distances(updates, distances)
    np.testing.assert_allclose(distances[0, 9], ((updates[0] - updates[9]) ** 2).sum())
    assert krum_index(distances, byzantine=2) < 8
    assert np.mean(updates, axis=0).min() > 15  # the plain mean is dragged away


def test_trimmed_mean_and_median_by_hand():
    updates = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    out = np.empty(1)
    trimmed_mean(updates, 0.2, out)
    assert out[0] == 3.0  # mean of 2, 3, 4
    coordinate_median(updates, out)
    assert out[0] == 3.0


# -- options -----------------------------------------------------------------------------


@pytest.mark.parametrize("options,message", [
    ({"clients": 0}, "--clients must be >= 1 (got 0)"),
    ({"client_fraction": 1.5}, "--client-fraction must be in (0, 1] (got 1.5)"),
    ({"client_fraction": 0.0}, "--client-fraction must be in (0, 1] (got 0.0)"),
    ({"alpha": 0.0}, "--alpha must be a positive number (got 0.0)"),
    ({"local_epochs": 0}, "--local-epochs must be >= 1 (got 0)"),
    ({"local_batch": -1}, "--local-batch must be >= 0 (0: full batch) (got -1)"),
    ({"local_lr": -1.0}, "--local-lr must be a positive number (got -1.0)"),
    ({"rounds": 0}, "--rounds must be >= 1 (got 0)"),
    ({"eval_every": 0}, "--eval-every must be >= 1 (got 0)"),
    ({"server_beta2": 1.0}, "--server-beta2 must be in [0, 1) (got 1.0)"),
    ({"trim_fraction": 0.5}, "--trim-fraction must be in [0, 0.5) (got 0.5)"),
    ({"dp_delta": 0.0}, "--dp-delta must be in (0, 1) (got 0.0)"),
    ({"partition": "zipf"}, "--partition must be one of iid, dirichlet, shards, labels, kmeans "
     "(got 'zipf')"),
    ({"mode": "fedavg", "dp_noise": 1.0}, "--dp-noise 1 needs --dp-clip > 0"),
    ({"mode": "fedavg", "secure_agg": True}, "--secure-agg needs --dp-clip > 0"),
    ({"mode": "fedavg", "secure_agg": True, "dp_clip": 1.0, "aggregate": "median"},
     "--aggregate median needs individual client updates, which --secure-agg hides"),
    ({"mode": "fedavg", "aggregate": "krum", "byzantine": 4},
     "--aggregate krum with --byzantine 4 needs at least 11 sampled clients per round "
     "(got 10"),
])
def test_bad_federated_options(options, message):
    with pytest.raises(UserError) as info:
        resolve({}, options)
    assert str(info.value).startswith(message), str(info.value)


def test_label_partitions_need_a_classifier():
    with pytest.raises(UserError, match="--partition labels needs class labels but --model "
                       "linear is regression"):
        build(data="synthetic", samples=100, model="linear", partition="labels", clients=4)


# -- the CLI (needs training.py's --mode fedavg wiring) -----------------------------------

DIGITS = ["--data", "digits", "--model", "softmax", "--mode", "fedavg", "--clients", "20",
          "--rounds", "4", "--eval-every", "2", "--client-fraction", "0.2"]


@pytest.mark.timeout(180)
def test_cli_fedavg_writes_rounds_and_client_summary(tmp_path):
    out = tmp_path / "run"
    done = run_train([*DIGITS, "--partition", "shards", "--dp-clip", "5", "--dp-noise", "0.5",
                      "--out", str(out)], ranks=2)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [2, 4]
    for key in ("sampled_clients", "train_loss", "test_loss", "test_accuracy",
                "client_accuracy_min", "client_accuracy_median", "client_accuracy_max",
                "bytes_sent_per_rank", "seconds", "epsilon"):
        assert key in lines[-1], key
    summary = json.loads((out / "summary.json").read_text())
    federated = summary["federated"]
    assert sum(federated["client_sizes"]) == summary["data"]["train_rows"]
    assert np.array(federated["label_histograms"]).shape == (20, 10)
    assert federated["dp"]["epsilon"] == lines[-1]["epsilon"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("args,message", [
    (["--client-fraction", "1.5"], "--client-fraction must be in (0, 1] (got 1.5)"),
    (["--clients", "1"], "--clients 1 is fewer than the 2 ranks"),
    (["--clients", "2000"], "--clients 2000 is more than the 1438 training rows"),
])
def test_cli_bad_federated_option_exits_2_with_one_message(args, message):
    done = run_train([*DIGITS, *args], ranks=2)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], done.stderr
