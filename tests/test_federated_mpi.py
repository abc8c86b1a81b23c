"""Federated mode under MPI (run by `make test` on 2, 3 and 4 ranks): the same model for any
number of ranks on every aggregation path, rows on the right ranks, and the aggregates
against hand-computed and single-process values."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitrain.collectives import allreduce
from mpitrain.collectives.shared_memory import single_node
from mpitrain.config import resolve
from mpitrain.errors import UserError
from mpitrain.federated import secure
from mpitrain.federated.local import ClientStats
from mpitrain.federated.robust import RobustReducer, coordinate_median, krum_index
from mpitrain.loop import run_loop
from mpitrain.strategies.base import Unit
from mpitrain.strategies.federated import TAIL, FederatedStrategy
from mpitrain.training import prepare

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(120)]

WORLD = MPI.COMM_WORLD
SMALL = dict(data="digits", model="mlp", hidden=(12,), dtype="float64", clients=12,
             client_fraction=0.5, rounds=3, eval_every=2, local_epochs=2, local_batch=8,
             local_lr=0.05)


def build(comm, **options):
    config = resolve({}, {"mode": "fedavg", "quiet": True, **options})
    model, dataset, params = prepare(config, comm=comm)
    return FederatedStrategy.build(config, model=model, params=params,
                                    dataset=dataset, comm=comm), dataset


def run(comm, **options):
    strategy, _ = build(comm, **options)
    history = []
    run_loop(strategy, on_period=history.append)
    return strategy.params, history


def reference(**options):
    """The same run on one rank (COMM_SELF on rank 0), broadcast to every rank."""
    flat = history = None
    if WORLD.Get_rank() == 0:
        flat, history = run(MPI.COMM_SELF, **options)
    size = WORLD.bcast(None if flat is None else flat.size, root=0)
    buf = flat if flat is not None else np.empty(size)
    WORLD.Bcast(buf, root=0)
    return buf, WORLD.bcast(history, root=0)


@pytest.mark.parametrize("extra", [
    dict(partition="iid", reduce="ring"),
    dict(partition="iid", reduce="shm"),
    dict(partition="iid", reduce="hierarchical"),
    dict(partition="iid", reduce="root", server_opt="fedavgm"),
    dict(partition="shards", reduce="mpi", prox_mu=0.1, server_opt="fedadam"),
    dict(partition="dirichlet", alpha=0.3, secure_agg=True, dp_clip=2.0),
    dict(partition="labels", aggregate="median"),
    dict(partition="iid", aggregate="krum", byzantine=1),
    dict(partition="dirichlet", dp_clip=1.0, dp_noise=0.8, server_opt="fedyogi"),
])
def test_same_model_and_metrics_for_any_number_of_ranks(extra):
    options = {**SMALL, **extra}
    expected, expected_history = reference(**options)
    if options.get("reduce") == "shm" and not single_node(WORLD):  # tests/test_multinode.py
        # (the user error of train(), or the collectives' ValueError where a strategy is
        # built without it)
        with pytest.raises((UserError, ValueError),
                           match=r"shm'? needs every rank (of comm )?on one node"):
            run(WORLD, **options)
        return
    params, history = run(WORLD, **options)
    np.testing.assert_allclose(params, expected, rtol=1e-9, atol=1e-11)
    assert [m["round"] for m in history] == [2, 3]
    for got, want in zip(history, expected_history, strict=True):
        for key in ("sampled_clients", "client_updates", "train_loss", "test_accuracy",
                    "client_accuracy_median", "epsilon"):
            if key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-6), key


def test_every_client_trains_on_its_own_rows_wherever_it_lives():
    strategy, _ = build(WORLD, **{**SMALL, "partition": "dirichlet", "alpha": 0.2})
    _, full = build(MPI.COMM_SELF, **{**SMALL, "partition": "dirichlet", "alpha": 0.2})
    clients = strategy.clients
    mine = np.flatnonzero(strategy.owner == WORLD.Get_rank())
    np.testing.assert_array_equal(clients.ids, mine)
    for index, client in enumerate(clients.ids):
        rows = strategy.partition.client(int(client))
        np.testing.assert_allclose(clients.X[clients.rows_of(index)], full.train.X[rows],
                                   rtol=1e-12, atol=1e-12)  # standardised: P-dependent sums
        np.testing.assert_array_equal(clients.y[clients.rows_of(index)], full.train.y[rows])
    counts = WORLD.allgather(len(clients.ids))
    assert sum(counts) == 12 and min(counts) >= 1


def test_sampling_and_partition_agree_on_every_rank():
    strategy, _ = build(WORLD, **SMALL)
    for r in range(5):
        sampled = strategy.sampled_clients(r)
        assert all(np.array_equal(sampled, other) for other in WORLD.allgather(sampled))
    assert all(np.array_equal(strategy.partition.rows, other)
               for other in WORLD.allgather(strategy.partition.rows))


def _crafted_round(strategy, update_of):
    def train(index, round_index, params):
        strategy.trainer.local[:] = update_of(int(strategy.clients.ids[index]))
        return ClientStats(loss_sum=1.0, correct=0.0, rows=1)
    strategy.trainer.train = train
    strategy.params[:] = 0.0
    unit = Unit(0, 0, 0, True)
    strategy.contribute(unit, lambda: False)
    strategy.reduce(unit)
    strategy.apply(unit)
    return strategy.sampled_clients(0)


@pytest.mark.parametrize("extra", [dict(reduce="ring"), dict(secure_agg=True, dp_clip=1e4)])
def test_aggregate_equals_hand_computed_weighted_mean(extra):
    strategy, _ = build(WORLD, **{**SMALL, "partition": "dirichlet", "alpha": 0.5, **extra})
    n = strategy.layout.size
    sampled = _crafted_round(strategy, lambda c: np.linspace(0, 1, n) + c)
    sizes = strategy.partition.sizes[sampled].astype(np.float64)
    expected = np.linspace(0, 1, n) + (sizes * sampled).sum() / sizes.sum()
    np.testing.assert_allclose(strategy.params, expected, rtol=1e-12, atol=1e-12)
    tail = strategy.message[n:]
    assert tail[0] == sizes.sum() and tail[4] == len(sampled) and tail[-1] == 0.0


def test_robust_median_and_krum_on_crafted_updates_with_outliers():
    strategy, _ = build(WORLD, **{**SMALL, "aggregate": "median"})
    sampled = strategy.sampled_clients(0)
    liars = set(sampled[:2].tolist())

    def update(c):
        return np.full(strategy.layout.size, 1000.0 if c in liars else 1.0 + 0.01 * c)
    _crafted_round(strategy, update)
    honest = np.array([1.0 + 0.01 * c for c in sampled if c not in liars])
    values = np.array([update(c)[0] for c in sampled])
    assert strategy.params[0] == pytest.approx(np.median(values))
    assert honest.min() <= strategy.params.min() <= strategy.params.max() <= honest.max()
    krum, _ = build(WORLD, **{**SMALL, "aggregate": "krum", "byzantine": 2,
                              "client_fraction": 0.75})
    liars = set(krum.sampled_clients(0)[:2].tolist())
    _crafted_round(krum, update)
    assert krum.params[0] < 2.0 and np.ptp(krum.params) == 0.0


def test_robust_reducer_chunks_match_a_single_process():
    rank, size = WORLD.Get_rank(), WORLD.Get_size()
    n, per_rank = 37, [3, 2, 1, 2][:size]
    counts = np.array(per_rank, dtype=np.int64)
    everything = np.random.default_rng(5).normal(size=(int(counts.sum()), n))
    everything[1] += 50.0  # an outlier
    first = int(counts[:rank].sum())
    mine = everything[first:first + counts[rank]]
    for rule in ("median", "krum"):
        reducer = RobustReducer(WORLD, rule=rule, n=n, dtype=np.float64, byzantine=1,
                                budget=8)  # tiny budget: many chunks
        assert reducer.chunks(int(counts.sum())) > 1
        message = np.zeros(n + 3)
        message[n:] = [1.0, rank, 0.0]
        winner = reducer.reduce(mine, counts, message, slice(n, n + 3))
        np.testing.assert_allclose(message[n:], [size, sum(range(size)), 0.0])
        if rule == "median":
            expected = np.empty(n)
            coordinate_median(everything, expected)
        else:
            d = ((everything[:, None, :] - everything[None, :, :]) ** 2).sum(axis=2)
            assert winner == krum_index(d, 1) and winner != 1
            expected = everything[winner]
        np.testing.assert_allclose(message[:n], expected, rtol=1e-12, atol=1e-12)


def test_secure_sum_equals_plain_sum_within_quantisation_error():
    n = 1000 + TAIL
    rng = np.random.default_rng(WORLD.Get_rank())
    values = rng.uniform(-3, 3, n)
    scales = np.full(n, 2.0**20)  # coarse, so the quantisation error is visible
    masked = values.copy()
    summer = secure.SecureSum(WORLD, scales=scales, limits=np.full(n, 1e9))
    summer.reduce(masked, round_index=7)
    plain = allreduce(values.copy(), WORLD, algorithm="mpi")
    step = 0.5 / scales[0]
    error = np.abs(masked - plain)
    assert error.max() <= WORLD.Get_size() * step + 1e-12 and error.max() > 0
