"""--shard optimizer|gradients under MPI (run by `make test` on 2, 3 and 4 ranks): the
same model as the unsharded run to 1e-12 (float64, --shuffle global) for sgd, momentum
and adam, the optimizer state cut to 1/P, and sharded checkpoints that resume."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitrain import train
from mpitrain.collectives.ring import chunk_offsets

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(240)]

EXACT = dict(data="synthetic", samples=403, features=7, classes=3, noise=2.0,
             dtype="float64", shuffle="global", epochs=3, batch_size=32, lr=0.05,
             model="mlp", hidden=(16, 8), quiet=True)
OPTIMIZERS = [dict(optimizer="sgd", weight_decay=1e-3),
              dict(optimizer="momentum", nesterov=True),
              dict(optimizer="adam", lr=0.01, lr_schedule="cosine")]


def same_everywhere(flat):
    comm = MPI.COMM_WORLD
    every = np.empty((comm.Get_size(), flat.size), dtype=flat.dtype)
    comm.Allgather(flat, every)
    assert (every == every[:1]).all(), "ranks hold different parameters"


@pytest.mark.parametrize("extra", OPTIMIZERS, ids=lambda e: e["optimizer"])
@pytest.mark.parametrize("shard", ["optimizer", "gradients"])
def test_sharded_is_the_unsharded_model(shard, extra):
    options = {**EXACT, **extra}
    for reduce in ("auto", "ring"):  # auto: MPI's Reduce_scatter at these sizes
        expected = train(reduce=reduce, **options).flat
        result = train(reduce=reduce, shard=shard, **options)
        np.testing.assert_allclose(result.flat, expected, rtol=1e-12, atol=1e-12,
                                   err_msg=f"--reduce {reduce}")
        same_everywhere(result.flat)


@pytest.mark.parametrize("shard", ["optimizer", "gradients"])
def test_optimizer_state_is_one_pth_per_rank(shard):
    size = MPI.COMM_WORLD.Get_size()
    result = train(shard=shard, **{**EXACT, "optimizer": "adam", "epochs": 1})
    memory = result.summary["memory"]
    n = result.flat.size
    largest = chunk_offsets(n, size)[1]  # rank 0's slice is the longest
    assert memory["shard"] == shard
    assert memory["optimizer_state_bytes_unsharded"] == 2 * n * 8
    assert memory["optimizer_state_bytes_per_rank"] == 2 * largest * 8
    assert memory["optimizer_state_fraction"] == pytest.approx(1 / size, rel=size / n + 1e-9)
    reduced = memory["reduced_gradient_bytes_per_rank"]
    if shard == "gradients":
        assert reduced == (largest + 4) * 8
    unsharded = train(**{**EXACT, "optimizer": "adam", "epochs": 1}).summary["memory"]
    assert unsharded["optimizer_state_bytes_per_rank"] == 2 * n * 8
