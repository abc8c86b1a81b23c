"""``--model kmeans``: Lloyd's k-means with one allreduce per iteration, the same centers
for any number of ranks.

Build: ``--n-init`` k-means|| initialisations (:mod:`mpitrain.clustering.init`, each
seeded by (seed, run)). One unit is one Lloyd iteration of every run still iterating (its
message and update: :class:`mpitrain.clustering.lloyd.LloydPass`): ``contribute`` assigns
this rank's rows to their nearest center of each run and sums them per center as
fixed-point integers in float64 (:mod:`mpitrain.exact`), with the counts, the
inertia and the stop vote, in one message (one pass over the rows for all runs);
``reduce`` sums it (one allreduce, exact in any order); ``apply`` moves the centers to the
means (an empty cluster keeps its center). A run stops when its centers move less than
``--tol`` times the mean feature variance (scikit-learn's rule); the fit ends when every
run has stopped or after ``--max-iter`` iterations, and keeps the run of lowest inertia
(the first on ties).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..clustering.init import kmeans_parallel
from ..clustering.lloyd import LloydPass, Scales
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
        runs, k, d, rows = config.n_init, config.clusters, dataset.n_features, train.n_total
        self.scales = Scales.agree(comm, train.X, rows=rows, tol=config.tol)
        self.centers = np.stack([
            kmeans_parallel(comm, train.X, k=k, first_row=train.start, rows=rows,
                            seed=config.seed, run=run) for run in range(runs)])
        self.lloyd = LloydPass(train.X, runs=runs, k=k)
        self.layout = Layout.of({"centers": (k, d)})
        self.active = np.ones(runs, dtype=bool)  # runs still iterating
        self.inertias = np.full(runs, np.nan)  # of each run's latest assignment
        self.finished, self.shift = False, float("nan")

    @property
    def best(self) -> int:
        """The run of lowest inertia (the first on ties; run 0 before any iteration)."""
        known = np.where(np.isnan(self.inertias), np.inf, self.inertias)
        return int(np.argmin(known))

    @property
    def inertia(self) -> float:
        return float(self.inertias[self.best])

    @property
    def params(self) -> np.ndarray:  # type: ignore[override]
        return self.centers[self.best].ravel()

    # -- the loop's hooks -------------------------------------------------------------------
    @property
    def total_units(self) -> int:
        return self.config.max_iter

    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        self.lloyd.fill(self.centers, self.active, self.scales, stop=stop_requested())

    def reduce(self, unit: Unit) -> bool:
        allreduce(self.lloyd.message, self.comm, algorithm=self.config.reduce)
        return bool(self.lloyd.message[-1] > 0)

    def apply(self, unit: Unit) -> None:
        self.centers, shifts, inertias = self.lloyd.update(self.lloyd.message, self.centers,
                                                           self.active, self.scales)
        self.inertias = np.where(self.active, inertias, self.inertias)
        self.shift = float(shifts[self.active].max())
        self.active &= shifts > self.scales.tolerance
        self.finished = not self.active.any()

    def evaluate(self, unit: Unit) -> dict[str, Any]:
        line = {"iteration": unit.index + 1, "inertia": self.inertia, "shift": self.shift,
                "samples": self.dataset.train.n_total}
        if len(self.active) > 1:  # --n-init: the best run so far, and how many still move
            line.update(run=self.best, active_runs=int(self.active.sum()))
        return line

    # -- checkpoints and outputs ------------------------------------------------------------
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({"centers": self.centers.copy(), "active": self.active.astype(np.int8),
                 "inertias": self.inertias.copy()}, {"converged": self.finished})

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        centers = np.array(arrays["centers"], dtype=np.float64)
        if centers.ndim == 2:  # written before --n-init: one run
            centers = centers[None]
        self.centers = centers
        runs = len(centers)
        self.active = (np.array(arrays["active"], dtype=bool) if "active" in arrays
                       else np.full(runs, not meta["converged"]))
        self.inertias = np.array(arrays.get("inertias", np.full(runs, np.nan)),
                                 dtype=np.float64)
        self.finished = bool(meta["converged"])

    def model_arrays(self) -> dict[str, np.ndarray]:
        return {"centers": self.centers[self.best]}

    def describe(self) -> dict[str, Any]:
        return {"name": "kmeans", "clusters": int(self.centers.shape[1]),
                "n_init": int(self.centers.shape[0]), "best_run": self.best,
                "inertia": self.inertia, "converged": self.finished}

    def summary(self) -> dict[str, Any]:
        return {"model": self.describe()}
