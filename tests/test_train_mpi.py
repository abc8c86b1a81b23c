"""Training under MPI (run by `make test` on 2, 3 and 4 ranks): exactness across rank
counts, accuracy floors, and agreement of every rank."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitrain import train
from mpitrain.collectives import ALGORITHMS
from mpitrain.collectives.shared_memory import single_node
from mpitrain.errors import UserError

pytestmark = pytest.mark.mpi(min_size=2)

EXACT = dict(data="synthetic", samples=503, features=7, classes=3, noise=2.0,
             dtype="float64", shuffle="global", epochs=3, batch_size=32, lr=0.2,
             quiet=True)


def reference(**options):
    """The same run on one rank (COMM_SELF on rank 0), broadcast to every rank."""
    comm = MPI.COMM_WORLD
    flat = train(comm=MPI.COMM_SELF, **options).flat if comm.Get_rank() == 0 else None
    size = comm.bcast(None if flat is None else flat.size, root=0)
    buf = flat if flat is not None else np.empty(size, dtype=np.float64)
    comm.Bcast(buf, root=0)
    return buf


@pytest.mark.parametrize("model,extra", [
    ("mlp", dict(hidden=(16, 8), optimizer="adam", lr=0.01)),
    ("softmax", dict(optimizer="momentum", nesterov=True, weight_decay=1e-3)),
    ("logistic", dict(classes=2, lr_schedule="cosine")),
    ("linear", dict(lr=0.01, lr_schedule="step", lr_step_epochs=1)),
])
def test_same_model_for_any_number_of_ranks(model, extra):
    options = {**EXACT, "model": model, **extra}
    expected = reference(**options)
    one_node = single_node(MPI.COMM_WORLD)  # tests/test_multinode.py runs across nodes
    for algorithm in ALGORITHMS:  # every --reduce, shm and hierarchical included
        if algorithm == "shm" and not one_node:
            with pytest.raises(UserError, match="--reduce shm needs every rank on one node"):
                train(reduce=algorithm, **options)
            continue
        got = train(reduce=algorithm, **options).flat
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-11,
                                   err_msg=f"reduce={algorithm}")


def test_every_rank_holds_identical_parameters_and_history():
    result = train(data="synthetic", model="mlp", hidden=(8,), shuffle="local", epochs=2,
                   quiet=True)
    comm = MPI.COMM_WORLD
    gathered = np.empty((comm.Get_size(), result.flat.size), dtype=result.flat.dtype)
    comm.Allgather(result.flat, gathered)
    assert (gathered == gathered[0]).all()
    histories = comm.allgather([{k: v for k, v in h.items() if "second" not in k}
                                for h in result.history])
    assert all(h == histories[0] for h in histories)
    assert len(result.history) == 2


# Seeds 0-3 give softmax 0.953-0.969 and mlp 0.969-0.983 test accuracy with these settings
# (the seed also draws the held-out rows); seed 1 is a typical one.
DIGITS = dict(data="digits", optimizer="momentum", lr=0.05, weight_decay=1e-3,
              lr_schedule="cosine", epochs=30, batch_size=32, seed=1, quiet=True)


@pytest.mark.parametrize("model,floor,extra", [
    ("softmax", 0.95, {}),
    ("mlp", 0.97, dict(hidden=(128,))),
])
def test_digits_accuracy_floor(model, floor, extra):
    result = train(model=model, **DIGITS, **extra)
    assert result.history[-1]["test_accuracy"] >= floor
