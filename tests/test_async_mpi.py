"""Asynchronous modes under MPI (run by `make test` on 2, 3 and 4 ranks): the exact special
cases (ssp --staleness 0 is sync bit for bit, local-sgd --sync-every 1 is sync for plain
SGD), reproducibility of the seeded modes, one model on every rank, the digits accuracy
floor of every mode with its defaults, and the row re-split of the parameter server."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitrain import train
from mpitrain.asynchronous.reshard import reshard
from mpitrain.collectives.context import state_of
from mpitrain.data import Shard

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(240)]

BASE = dict(data="synthetic", samples=503, features=7, classes=3, noise=2.0,
            dtype="float64", shuffle="global", epochs=3, batch_size=32, lr=0.2,
            model="mlp", hidden=(16,), quiet=True)


def same_on_every_rank(flat: np.ndarray) -> None:
    theirs = MPI.COMM_WORLD.bcast(flat, root=0)
    assert theirs.tobytes() == flat.tobytes()


@pytest.mark.parametrize("extra", [
    dict(),
    dict(optimizer="adam", lr=0.01, lr_schedule="cosine"),
    dict(optimizer="momentum", nesterov=True, weight_decay=1e-3, reduce="ring"),
    dict(dtype="float32", shuffle="local", reduce="mpi"),
])
def test_ssp_with_staleness_zero_is_sync_bit_for_bit(extra):
    options = {**BASE, **extra}
    want = train(**options).flat
    got = train(mode="ssp", staleness=0, **options)
    assert got.flat.tobytes() == want.tobytes()
    assert {m["staleness_max"] for m in got.history} == {0}


@pytest.mark.parametrize("reduce", ["auto", "mpi", "ring"])
def test_ssp_is_deterministic_and_as_stale_as_asked(reduce):
    first = train(mode="ssp", staleness=3, reduce=reduce, **BASE)
    second = train(mode="ssp", staleness=3, reduce=reduce, **BASE)
    assert first.flat.tobytes() == second.flat.tobytes()
    same_on_every_rank(first.flat)
    sync = train(**BASE).flat
    assert not np.array_equal(first.flat, sync)  # stale gradients: another trajectory
    for metrics in first.history:
        # 13 steps per epoch, the last 3 drained at the epoch's end with less staleness
        assert metrics["staleness_max"] == 3
        assert 0 < metrics["staleness_mean"] < 3


def iallreduce_adds_in_rank_order(comm: MPI.Comm, n: int) -> bool:
    """Collective: whether MPI's Iallreduce of ``n`` float64 adds in rank order (the
    slot sum's order). Always on 2 ranks (a + b == b + a); MPICH on 3 ranks too, not on 4
    (recursive doubling: (a + b) + (c + d))."""
    rng = np.random.default_rng([comm.Get_rank(), n])
    x = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)
    gathered = np.empty((comm.Get_size(), n))
    comm.Allgather(x, gathered)
    want = gathered[0].copy()
    for row in gathered[1:]:
        want += row
    comm.Iallreduce(MPI.IN_PLACE, x, op=MPI.SUM).Wait()
    return comm.allreduce(int(x.tobytes() == want.tobytes()), op=MPI.MIN) == 1


@pytest.mark.parametrize("staleness", [1, 2])
def test_ssp_on_one_node_reduces_nonblocking_through_shared_memory(staleness):
    """--reduce auto on one node: the started slot sum (summary.json says so); it adds in
    rank order, so it gives MPI's nonblocking path's parameters bit for bit wherever MPI
    does too (2 ranks; MPICH's 3), else within rounding; --no-shared-memory keeps MPI."""
    comm = MPI.COMM_WORLD
    if not state_of(comm).one_node():
        pytest.skip("the shared-memory transports need every rank on one node")
    shm = train(mode="ssp", staleness=staleness, **BASE)
    assert shm.summary["reduce"] == {**shm.summary["reduce"], "algorithm": "shm",
                                     "source": "table", "in_flight": staleness}
    explicit = train(mode="ssp", staleness=staleness, reduce="shm", **BASE)
    assert explicit.summary["reduce"]["source"] == "given"
    assert explicit.flat.tobytes() == shm.flat.tobytes()
    same_on_every_rank(shm.flat)
    assert {m["staleness_max"] for m in shm.history} == {staleness}
    mpi = train(mode="ssp", staleness=staleness, reduce="mpi", **BASE)
    assert mpi.summary["reduce"]["algorithm"] == "mpi"
    if iallreduce_adds_in_rank_order(comm, shm.flat.size + 4):
        assert shm.flat.tobytes() == mpi.flat.tobytes()
    else:
        np.testing.assert_allclose(shm.flat, mpi.flat, rtol=1e-7, atol=1e-9)
    p2p = train(mode="ssp", staleness=staleness, shared_memory=False, **BASE)
    assert p2p.summary["reduce"]["algorithm"] != "shm"
    np.testing.assert_allclose(p2p.flat, shm.flat, rtol=1e-7, atol=1e-9)


def test_local_sgd_with_sync_every_one_is_sync_for_plain_sgd():
    options = {**BASE, "optimizer": "sgd", "weight_decay": 1e-3}
    want = train(**options).flat
    got = train(mode="local-sgd", sync_every=1, **options).flat
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_local_sgd_runs_sync_for_the_local_after_epochs_then_local_steps():
    options = {**BASE, "optimizer": "adam", "lr": 0.01}
    sync = train(**options)
    post = train(mode="local-sgd", sync_every=4, local_after=3, **options)
    assert post.flat.tobytes() == sync.flat.tobytes()  # all 3 epochs synchronous
    local = train(mode="local-sgd", sync_every=4, local_after=1, **options)
    same_on_every_rank(local.flat)
    assert local.history[0]["staleness_max"] == 0  # the synchronous epoch
    assert local.history[1]["staleness_max"] == 3  # then up to H - 1 local steps
    # the averaging reduction follows --tune like the step's, and summary.json says which
    # one runs (no step reduction at all without --local-after)
    for run in (local, train(mode="local-sgd", sync_every=4, tune="cache", **options)):
        average = run.summary["average"]
        assert average["tune"] == run.config.tune and average["requested"] == "auto"
        assert average["message_bytes"] == 3 * run.flat.nbytes + 5 * 8  # params, m, v
    assert "reduce" in local.summary
    assert "reduce" not in train(mode="local-sgd", sync_every=4, **options).summary


def test_gossip_is_reproducible_and_one_model_after_each_epoch():
    first = train(mode="gossip", **BASE)
    second = train(mode="gossip", **BASE)
    assert first.flat.tobytes() == second.flat.tobytes()
    same_on_every_rank(first.flat)
    assert first.history[-1]["train_accuracy"] > 0.5


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_async_ps_simulated_schedule_is_reproducible(optimizer):
    size = MPI.COMM_WORLD.Get_size()
    options = {**BASE, "optimizer": optimizer, "lr": 0.2 if optimizer == "sgd" else 0.01,
               "servers": 2 if size >= 3 else 1, "simulate_schedule": True}
    first = train(mode="async-ps", **options)
    second = train(mode="async-ps", **options)
    assert first.flat.tobytes() == second.flat.tobytes()
    same_on_every_rank(first.flat)
    pushes = first.history[-1]["pushes_per_worker"]
    assert len(pushes) == size - options["servers"] and sum(pushes) >= -(-402 // -(
        -32 // (size - options["servers"])))
    if size - options["servers"] >= 2:  # a straggler pushes less often
        slow = train(mode="async-ps", straggler=f"{size - 1}:4", **options)
        assert slow.flat.tobytes() != first.flat.tobytes()
        counts = slow.history[-1]["pushes_per_worker"]
        assert counts[-1] < min(counts[:-1])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["ssp", "local-sgd", "gossip", "async-ps"])
def test_every_mode_reaches_095_on_digits_with_its_defaults(mode):
    """The digits recipe of the README (mlp, momentum SGD, 10 epochs; sync reaches 0.97)
    with each mode's own defaults; async-ps in its seeded schedule (reproducible)."""
    extra = {"simulate_schedule": True} if mode == "async-ps" else {}
    result = train(data="digits", model="mlp", optimizer="momentum", mode=mode, quiet=True,
                   **extra)
    assert result.history[-1]["test_accuracy"] >= 0.95, result.history[-1]
    same_on_every_rank(result.flat)


def test_reshard_moves_the_rows_to_the_holders_in_global_order():
    comm = MPI.COMM_WORLD
    size, rank = comm.Get_size(), comm.Get_rank()
    n = 37
    start, stop = (n * rank) // size, (n * (rank + 1)) // size  # uneven blocks
    X = np.arange(start * 3, stop * 3, dtype=np.float32).reshape(-1, 3)
    y = np.arange(start, stop, dtype=np.int64)
    holders = range(1, size)
    got = reshard(Shard(X=X, y=y, start=start, n_total=n), comm, holders=holders)
    if rank == 0:
        assert got.n_local == 0
    everything = np.concatenate(comm.allgather(got.y))
    np.testing.assert_array_equal(everything, np.arange(n))
    np.testing.assert_array_equal(got.X, got.y[:, None] * 3 + np.arange(3))
    assert got.start == (got.y[0] if got.n_local else got.start)
