"""``--model kmeans`` under MPI (run by `make test` on 2, 3 and 4 ranks): the same centers
for any rank count with several initialisations (``--n-init``), float32 and float64."""

import numpy as np
import pytest
from mpi4py import MPI

from mpitrain import train

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(240)]

DATA = dict(data="synthetic", samples=901, features=7, noise=2.0, clusters_per_class=3,
            classes=3, quiet=True, model="kmeans", clusters=6, n_init=3, max_iter=12)


# float64, standardised and not: the standardisation statistics are exact sums
# (mpitrain/data/standardize.py), so the rows, hence the centers, are the same bits
@pytest.mark.parametrize("extra", [dict(tol=0.0), dict(dtype="float64", reduce="ring"),
                                   dict(dtype="float64", reduce="ring", standardize=False)])
def test_kmeans_n_init_same_model_for_any_number_of_ranks(extra):
    comm = MPI.COMM_WORLD
    one = train(comm=MPI.COMM_SELF, **DATA, **extra) if comm.Get_rank() == 0 else None
    expected = comm.bcast(None if one is None else (one.params["centers"], one.history,
                                                    one.summary["model"]), root=0)
    many = train(**DATA, **extra)
    np.testing.assert_array_equal(many.params["centers"], expected[0])
    assert many.history[-1]["inertia"] == expected[1][-1]["inertia"]
    assert many.summary["model"] == expected[2]
