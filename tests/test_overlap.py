"""--overlap: the default rule (mpitrain.strategies.overlap_rule) and, under MPI (`make test`
runs 2, 3 and 4 ranks), the same model overlapped and not, reported in summary.json."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from mpitrain.strategies.overlap_rule import ASYNC_PROGRESS_ENV, async_progress, decide_overlap

RULE = dict(given=False, can_split=True, ranks=2, ranks_on_node=2, cores_on_node=2,
            progress_thread=False)


def test_overlap_given_is_on_whatever_the_machine():
    decision = decide_overlap(**{**RULE, "given": True})
    assert (decision.enabled, decision.source) == (True, "given")
    assert decision.header().startswith("overlap: on as given: ")


@pytest.mark.parametrize("change,reason", [
    ({}, "it does not pay here: no core is left for a progress thread (2 ranks on 2 cores), "
         "so nothing is sent while the layer kernels run"),
    ({"progress_thread": True}, "no core is left for a progress thread (2 ranks on 2 cores)"),
    ({"cores_on_node": 8}, f"MPICH moves data only inside MPI calls ({ASYNC_PROGRESS_ENV} is "
                           "not set)"),
    ({"cores_on_node": 4, "progress_thread": True}, "may pay: measure it with "
                                                    "benchmarks/overlap.py"),
    ({"ranks": 1, "ranks_on_node": 1}, "one rank: nothing to reduce"),
    ({"can_split": False}, "the model has no per-layer kernels"),
])
def test_overlap_is_off_by_default_with_the_reason(change, reason):
    decision = decide_overlap(**{**RULE, **change})
    assert (decision.enabled, decision.source) == (False, "default")
    assert reason in decision.reason
    assert decision.report() == {"enabled": False, "source": "default",
                                 "reason": decision.reason}
    assert decision.header() == f"overlap: off by default: {decision.reason}"
    # the run header shows the line only where --overlap may pay (else: summary.json)
    assert decision.suggest is ("may pay" in reason)


@pytest.mark.parametrize("value,on", [(None, False), ("0", False), ("", False), ("1", True),
                                      (" 1 ", True)])
def test_async_progress_reads_mpichs_variable(value, on):
    env = {} if value is None else {ASYNC_PROGRESS_ENV: value}
    assert async_progress(env) is on


# ------------------------------------------------------------------------------------------
# MPI: overlapped and plain give the same model; the summary says which ran and why.

from mpitrain import train  # noqa: E402

BASE = dict(data="synthetic", samples=600, features=10, classes=4, noise=2.0, model="mlp",
            hidden=(24, 16, 12), shuffle="global", epochs=2, batch_size=40, lr=0.1,
            momentum=0.9, optimizer="momentum", quiet=True)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("algorithm", ["mpi", "ring"])
def test_overlapped_and_plain_steps_train_the_same_model(dtype, algorithm):
    plain = train(reduce=algorithm, dtype=dtype, **BASE)
    overlapped = train(reduce=algorithm, dtype=dtype, overlap=True, **BASE)
    if MPI.COMM_WORLD.Get_size() == 2:  # a + b either way round, whatever the buckets
        assert np.array_equal(overlapped.flat, plain.flat)
    else:  # buckets change only which elements a step sums together: rounding-level
        tol = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(overlapped.flat, plain.flat, rtol=tol, atol=tol)
    gathered = np.empty((MPI.COMM_WORLD.Get_size(), overlapped.flat.size),
                        dtype=overlapped.flat.dtype)
    MPI.COMM_WORLD.Allgather(overlapped.flat, gathered)
    assert (gathered == gathered[0]).all()
    assert overlapped.summary["overlap"]["enabled"] is True
    assert overlapped.summary["overlap"]["source"] == "given"
    assert plain.summary["overlap"]["enabled"] is False
    assert plain.summary["overlap"]["source"] == "default"
    assert "reduce" in plain.summary and "reduce" not in overlapped.summary
