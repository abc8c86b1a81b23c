"""--tensor-parallel T under MPI (run by `make test` on 2, 3 and 4 ranks): for every T that
divides P, the same model as --tensor-parallel 1 to 1e-9 (float64), identical on every
rank; the split layers' parameter bytes per rank about 1/T; a T that does not divide P is
one error on every rank."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitrain import train
from mpitrain.errors import UserError
from mpitrain.models.dense import MLP, Softmax

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(240)]

EXACT = dict(data="synthetic", samples=203, features=7, classes=3, noise=2.0,
             dtype="float64", shuffle="global", epochs=2, batch_size=24, lr=0.05,
             model="mlp", quiet=True)
SIZE = MPI.COMM_WORLD.Get_size()
DEGREES = [t for t in range(2, SIZE + 1) if SIZE % t == 0]


def same_everywhere(flat):
    comm = MPI.COMM_WORLD
    every = np.empty((comm.Get_size(), flat.size), dtype=flat.dtype)
    comm.Allgather(flat, every)
    assert (every == every[:1]).all(), "ranks hold different parameters"


@pytest.mark.parametrize("extra", [
    dict(optimizer="sgd", weight_decay=1e-3, hidden=(16,)),
    dict(optimizer="adam", lr=0.01, hidden=(11, 9, 5)),  # uneven blocks, a second pair
    dict(optimizer="momentum", hidden=(13, 6), shuffle="local"),  # a replicated top layer
    # the group's gather and sums over MPI instead of the shared-memory slots
    dict(optimizer="adam", lr=0.01, hidden=(11, 9, 5), shared_memory=False),
], ids=["sgd", "adam-two-pairs", "momentum-local", "adam-two-pairs-mpi"])
def test_tensor_parallel_is_the_same_model(extra):
    options = {**EXACT, **extra}
    expected = train(**options)
    for tensor in DEGREES:
        result = train(tensor_parallel=tensor, **options)
        np.testing.assert_allclose(result.flat, expected.flat, rtol=1e-9, atol=1e-9,
                                   err_msg=f"--tensor-parallel {tensor}")
        same_everywhere(result.flat)
        assert result.history[-1]["train_loss"] == pytest.approx(
            expected.history[-1]["train_loss"], rel=1e-9)


def test_split_layers_take_one_tth_of_the_bytes():
    tensor = DEGREES[-1]
    result = train(tensor_parallel=tensor, **{**EXACT, "hidden": (64,), "epochs": 1})
    memory = result.summary["memory"]
    assert memory["tensor_parallel"] == tensor
    assert memory["data_parallel_replicas"] == SIZE // tensor
    assert memory["split_layer_bytes"] == result.flat.nbytes
    # the largest rank: ceil(64/T) hidden units of W0, b0, W1 and all of b1 (3 classes)
    units = -(-64 // tensor)
    per_rank = (7 * units + units + units * 3 + 3) * 8
    assert memory["split_layer_bytes_per_rank"] == per_rank
    assert memory["parameter_bytes_per_rank"] == per_rank
    assert memory["split_layer_fraction"] == pytest.approx(1 / tensor, abs=0.02)


@pytest.mark.mpi(min_size=3)
def test_a_degree_that_does_not_divide_the_ranks_is_one_error():
    tensor = next(t for t in range(2, SIZE) if SIZE % t)
    with pytest.raises(UserError, match=f"--tensor-parallel {tensor} must divide the "
                                        f"number of ranks \\({SIZE}\\)"):
        train(tensor_parallel=tensor, **EXACT, hidden=(8,))


def test_model_objects_split_when_they_are_the_built_in_mlp():
    options = {k: v for k, v in EXACT.items() if k != "model"}
    expected = train(model=MLP(hidden=(10,)), **options).flat
    got = train(model=MLP(hidden=(10,)), tensor_parallel=SIZE, **options).flat
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    with pytest.raises(UserError) as info:
        train(model=Softmax(), tensor_parallel=SIZE, **options)
    assert str(info.value) == (f"--tensor-parallel {SIZE} splits the hidden layers of the "
                               "built-in mlp; mpitrain.models.dense:Softmax has none to split")
