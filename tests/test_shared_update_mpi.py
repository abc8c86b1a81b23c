"""The node-shared update under MPI (run by `make test` on 2, 3 and 4 ranks): the final
parameters are the bits of ``--reduce shm`` for every optimizer, weight decay and schedule,
and within rounding of ``--reduce mpi``/``ring``; the same on every rank; the result lives
in private memory; across nodes it is refused with one message."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitrain import train
from mpitrain.collectives.context import state_of
from mpitrain.collectives.shared_update import SharedUpdate
from mpitrain.errors import UserError

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(240)]

BASE = dict(data="synthetic", samples=403, features=9, classes=3, noise=2.0,
            dtype="float64", shuffle="global", epochs=3, batch_size=32, quiet=True)


def one_node() -> bool:
    return state_of(MPI.COMM_WORLD).one_node()


def same_on_every_rank(values: np.ndarray) -> None:
    comm = MPI.COMM_WORLD
    gathered = np.empty((comm.Get_size(), values.size), dtype=values.dtype)
    comm.Allgather(values, gathered)
    assert (gathered == gathered[0]).all()


@pytest.mark.parametrize("extra", [
    dict(model="mlp", hidden=(16, 8), optimizer="adam", lr=0.01, weight_decay=1e-3),
    dict(model="mlp", hidden=(12,), optimizer="momentum", nesterov=True, lr=0.05,
         lr_schedule="cosine"),
    dict(model="softmax", optimizer="sgd", lr=0.2, lr_schedule="step", lr_step_epochs=1,
         weight_decay=1e-4),
    dict(model="linear", optimizer="sgd", lr=0.01, dtype="float32"),
])
def test_same_bits_as_the_slot_sum_and_rounding_of_the_others(extra):
    options = {**BASE, **extra}
    if not one_node():
        with pytest.raises(UserError, match="--reduce shared-update needs every rank on one "
                                            "node"):
            train(reduce="shared-update", **options)
        return
    shared = train(reduce="shared-update", **options)
    shm = train(reduce="shm", **options)
    assert shared.flat.tobytes() == shm.flat.tobytes()
    assert shared.flat.flags.owndata  # copied out of the window before it was freed
    same_on_every_rank(shared.flat)
    assert shared.summary["reduce"]["algorithm"] == "shared-update"
    assert [h["train_loss"] for h in shared.history] == [h["train_loss"] for h in shm.history]
    tolerance = 1e-5 if options["dtype"] == "float32" else 1e-12
    for other in ("mpi", "ring"):
        np.testing.assert_allclose(shared.flat, train(reduce=other, **options).flat,
                                   rtol=tolerance, atol=tolerance, err_msg=other)


def test_auto_takes_it_for_a_large_message_with_the_same_bits():
    options = dict(data="synthetic", samples=200, features=64, classes=3, model="mlp",
                   hidden=(512,), epochs=1, batch_size=40, optimizer="adam", quiet=True)
    auto = train(**options)
    if not one_node():
        assert auto.summary["reduce"]["algorithm"] != "shared-update"
        return
    assert auto.summary["reduce"]["algorithm"] == "shared-update"
    assert auto.summary["reduce"]["source"] == "rule"
    memory = auto.summary["memory"]
    assert memory["parameter_copies_per_node"] == 1
    assert memory["optimizer_state_bytes_per_node"] == 2 * auto.flat.nbytes
    assert auto.flat.tobytes() == train(reduce="shm", **options).flat.tobytes()


def _sparse_rows(path, features: int) -> str:
    """A libsvm file (rank 0 writes it) whose rows touch a few of ``features``."""
    comm = MPI.COMM_WORLD
    if comm.Get_rank() == 0:
        rng = np.random.default_rng(7)
        lines = []
        for i in range(240):
            cols = np.unique(rng.integers(1, features + 1, size=6))
            lines.append(f"{i % 2} " + " ".join(f"{c}:{rng.uniform(0.5, 2):.3f}"
                                                for c in cols))
        path.write_text("\n".join(lines) + f"\n1 {features}:1\n")
    comm.Barrier()
    return str(path)


@pytest.mark.parametrize("optimizer,weight_decay,takes_it", [
    ("momentum", 0.0, True), ("adam", 0.0, True), ("sgd", 1e-3, True), ("sgd", 0.0, False)])
def test_auto_takes_it_for_sparse_rows_when_every_weight_moves(mpi_tmp_path, optimizer,
                                                              weight_decay, takes_it):
    # 2^15 float64 weights: a 262 KB step message; the step touches ~6 rows a row
    options = dict(data=_sparse_rows(mpi_tmp_path / "rows.svm", 2**15), model="logistic",
                   sparse="on", dtype="float64", shuffle="global", epochs=2, batch_size=16,
                   optimizer=optimizer, weight_decay=weight_decay, lr=0.05, quiet=True)
    auto = train(**options)
    picked = auto.summary["reduce"]["algorithm"] == "shared-update"
    assert picked == (takes_it and one_node())
    same_on_every_rank(auto.flat)
    # the slot sum's bits (a sparse model's shm reduction gives the dense sum's bits);
    # auto without it may sum in another order (the ring's, on 3+ ranks): rounding only
    # (across nodes there is no slot sum: the ring's model, to rounding)
    shm = train(reduce="shm" if one_node() else "ring", **options).flat
    if picked:
        assert auto.flat.tobytes() == shm.tobytes()
    np.testing.assert_allclose(auto.flat, shm, rtol=1e-12, atol=1e-13)
    if one_node():  # given explicitly it runs with plain SGD too, with the same bits
        given = train(reduce="shared-update", **options)
        assert given.flat.tobytes() == shm.tobytes()


def test_the_windows_sum_slices_in_rank_order():
    comm = MPI.COMM_WORLD
    if not one_node():
        pytest.skip("shared windows need one node")
    rank, size = comm.Get_rank(), comm.Get_size()
    n = 1000
    initial = np.arange(n, dtype=np.float32)
    shared = SharedUpdate(comm, n=n, tail=4, dtype=np.float32, buffers=2, initial=initial)
    try:
        assert shared.params.tobytes() == initial.tobytes()
        assert all((state == 0).all() for state in shared.state)
        lo, hi = shared.lo, shared.hi
        bounds = comm.allgather((lo, hi))
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(bounds[r][1] == bounds[r + 1][0] for r in range(size - 1))
        for step in range(3):
            shared.slot[...] = np.float32(0.1) * (rank + 1) + step
            out = np.empty(hi - lo + 4, dtype=np.float32)
            shared.gather(out)
            want = np.zeros(n + 4, dtype=np.float32)
            want[...] = np.float32(0.1) + step
            for r in range(1, size):
                want += np.float32(0.1) * (r + 1) + step
            assert out[:-4].tobytes() == want[lo:hi].tobytes()
            assert out[-4:].tobytes() == want[n:].tobytes()
            shared.params[lo:hi] += 1
            shared.release()
            assert (shared.params == initial + step + 1).all()  # every rank's slice
    finally:
        shared.close()
