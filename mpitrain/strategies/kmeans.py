"""``--model kmeans``: Lloyd's k-means with one allreduce per iteration, the same centers
for any number of ranks.

Build: k-means|| initialisation (:mod:`mpitrain.clustering.init`). One unit is one Lloyd
iteration (its message and update: :mod:`mpitrain.clustering.lloyd`): ``contribute``
assigns this rank's rows to their nearest center and sums them per center as fixed-point
integers in float64 (:mod:`mpitrain.collectives.fixed`), with the counts, the inertia and
the stop vote, in one message; ``reduce`` sums it (one allreduce, exact in any order);
``apply`` moves the centers to the means (an empty cluster keeps its center). Stops when
the centers move less than ``--tol`` times the mean feature variance (scikit-learn's rule)
or after ``--max-iter`` iterations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..clustering.init import kmeans_parallel
from ..clustering.lloyd import Scales, fill_message, message_size, update
from ..collectives import allreduce
from ..errors import agree
from ..models.layout import Layout
from .base import StopRequested, Unit
from .estimator import EstimatorStrategy

if TYPE_CHECKING:
    from mpi4py import MPI

    from ..config import TrainConfig
    from ..data import Dataset


class KMeansStrategy(EstimatorStrategy):
    """Distributed k-means (Lloyd) over MPI collectives."""

    kind = "kmeans"
    unit_name: ClassVar[str] = "iteration"
    period_name: ClassVar[str] = "iteration"
    length_option: ClassVar[str] = "max_iter"

    @classmethod
    def data_options(cls, config: TrainConfig) -> dict[str, Any]:
        return {"task": "regression", "standardize": config.standardize}  # labels unused

    @classmethod
    def fit(cls, config: TrainConfig, *, dataset: Dataset, comm: MPI.Comm) -> KMeansStrategy:
        rows = dataset.train.n_total
        agree(comm, f"--clusters must be at most the {rows} training rows (got "
              f"{config.clusters})" if config.clusters > rows else None)
        return cls(config, dataset=dataset, comm=comm)

    def __init__(self, config: TrainConfig, *, dataset: Dataset, comm: MPI.Comm) -> None:
        self.config, self.dataset, self.comm = config, dataset, comm
        train = dataset.train
        self.X = train.X
        k, d, rows = config.clusters, dataset.n_features, train.n_total
        self.scales = Scales.agree(comm, self.X, rows=rows, tol=config.tol)
        self.centers = kmeans_parallel(comm, self.X, k=k, first_row=train.start, rows=rows,
                                       seed=config.seed)
        self.layout = Layout.of({"centers": (k, d)})
        self.finished, self.inertia, self.shift = False, float("nan"), float("nan")
        self.message = np.zeros(message_size(k, d))

    @property
    def params(self) -> np.ndarray:  # type: ignore[override]
        return self.centers.ravel()

    # -- the loop's hooks -------------------------------------------------------------------
    @property
    def total_units(self) -> int:
        return self.config.max_iter

    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        fill_message(self.X, self.centers, self.scales, self.message, stop=stop_requested())

    def reduce(self, unit: Unit) -> bool:
        allreduce(self.message, self.comm, algorithm=self.config.reduce)
        return bool(self.message[-1] > 0)

    def apply(self, unit: Unit) -> None:
        self.centers, self.shift, self.inertia = update(self.message, self.centers,
                                                        self.scales)
        self.finished = self.shift <= self.scales.tolerance

    def evaluate(self, unit: Unit) -> dict[str, Any]:
        return {"iteration": unit.index + 1, "inertia": self.inertia, "shift": self.shift,
                "samples": self.dataset.train.n_total}

    # -- checkpoints and outputs ------------------------------------------------------------
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"centers": self.centers.copy()}, {"converged": self.finished}

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.centers = np.array(arrays["centers"], dtype=np.float64)
        self.finished = bool(meta["converged"])

    def model_arrays(self) -> dict[str, np.ndarray]:
        return {"centers": self.centers}

    def describe(self) -> dict[str, Any]:
        return {"name": "kmeans", "clusters": int(self.centers.shape[0]),
                "inertia": self.inertia, "converged": self.finished}

    def summary(self) -> dict[str, Any]:
        return {"model": self.describe()}
