"""``--model gbdt``: gradient-boosted trees on histograms, the same trees for any P.

One unit is one boosting round (a tree, or one tree per class for softmax): ``contribute``
computes this rank's gradients and hessians (numba, :mod:`mpitrain.kernels.trees`) and
their maxima with the stop vote; ``reduce`` agrees the fixed-point scales (one small
collective) and grows the round's trees level by level, histograms reduce-scattered by
feature and the best splits agreed once per level (:mod:`mpitrain.trees.grow`); ``apply``
adds the new trees to the scores of the rank's training and test rows. Early stopping
(``--early-stopping N``) watches the test loss and keeps the trees up to its best round.
Checkpoints hold the trees; the scores are recomputed on resume, so a run resumes on any
number of ranks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import agree
from ..exact import exact_column_sums, fixed_scale, global_max
from ..kernels.trees import LOSSES, gradients, row_losses
from ..models.layout import Layout
from ..trees.grow import grow_trees
from .base import StopRequested, Unit
from .estimator import TreeEnsembleStrategy

if TYPE_CHECKING:
    from mpi4py import MPI

    from ..config import TrainConfig
    from ..data import Dataset

def loss_name(config: TrainConfig, n_classes: int) -> str:
    """``--loss`` resolved: auto means logistic for two classes, softmax for more."""
    if config.loss != "auto":
        return config.loss
    return "logistic" if n_classes == 2 else "softmax"


class BoostingStrategy(TreeEnsembleStrategy):
    """Gradient-boosted trees (LightGBM/XGBoost-style histograms) over MPI collectives."""

    kind = "gbdt"

    @classmethod
    def fit(cls, config: TrainConfig, *, dataset: Dataset, comm: MPI.Comm) -> BoostingStrategy:
        loss = loss_name(config, dataset.n_classes)
        agree(comm, f"--loss logistic needs two classes (the data has {dataset.n_classes}); "
              "use --loss softmax" if loss == "logistic" and dataset.n_classes != 2 else None)
        return cls(config, dataset=dataset, comm=comm, loss=loss)

    def __init__(self, config: TrainConfig, *, dataset: Dataset, comm: MPI.Comm,
                 loss: str) -> None:
        self.config, self.dataset, self.comm, self.loss = config, dataset, comm, loss
        self.loss_kind = LOSSES[loss]
        train, test = dataset.train, dataset.test
        self.bin_data(config, dataset, comm)
        self.y = np.ascontiguousarray(train.y, dtype=np.float64)
        self.test_y = np.ascontiguousarray(test.y, dtype=np.float64)
        self.columns = dataset.n_classes if loss == "softmax" else 1
        self.options = self.grow_options(config)
        self.base = self._base_scores()
        nodes = self.options.nodes
        count = config.trees * self.columns
        self.trees = self.empty_trees(count, nodes, None)
        self.layout = Layout.of({"value": (count, nodes)})
        self.done = 0  # rounds in the model
        self.best_loss, self.best_round, self.finished = np.inf, 0, False
        self._reset_scores()

    @property
    def params(self) -> np.ndarray:  # type: ignore[override]
        return self.trees["value"]

    def _base_scores(self) -> np.ndarray:
        """The constant first guess: the mean (squared), log-odds or log class shares."""
        train = self.dataset.train
        if self.loss == "squared":
            return exact_column_sums(self.comm, self.y[:, None], train.n_total) / train.n_total
        k = self.dataset.n_classes
        onehot = np.zeros((len(self.y), k))
        onehot[np.arange(len(self.y)), train.y.astype(np.int64)] = 1.0
        share = np.maximum(exact_column_sums(self.comm, onehot, train.n_total), 1.0)
        share /= share.sum()
        if self.loss == "logistic":
            return np.array([np.log(share[1] / share[0])])
        return np.log(share)

    def _reset_scores(self) -> None:
        self.raw = np.tile(self.base, (len(self.y), 1))
        self.test_raw = np.tile(self.base, (len(self.test_y), 1))
        for r in range(self.done):
            self._add_round(r)

    def _add_round(self, r: int) -> None:
        for c in range(self.columns):
            t = r * self.columns + c
            self.add_tree(self.codes, t, self.trees["value"][t], self.raw, c)
            self.add_tree(self.test_codes, t, self.trees["value"][t], self.test_raw, c)

    # -- the loop's hooks -------------------------------------------------------------------
    @property
    def total_units(self) -> int:
        return self.config.trees

    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        n = len(self.y)
        self.grad, self.hess = np.empty((n, self.columns)), np.empty((n, self.columns))
        gradients(self.loss_kind, self.raw, self.y, self.grad, self.hess)
        message = np.zeros(2 * self.columns + 1)
        message[:self.columns] = np.abs(self.grad).max(axis=0, initial=0.0)
        message[self.columns:-1] = self.hess.max(axis=0, initial=0.0)
        message[-1] = 1.0 if stop_requested() else 0.0
        self.message = message

    def reduce(self, unit: Unit) -> bool:
        top = global_max(self.comm, self.message)
        rows = self.dataset.train.n_total
        k = self.columns
        scales = (np.array([fixed_scale(m, rows) for m in top[:k]]),
                  np.array([fixed_scale(m, rows) for m in top[k:2 * k]]))
        self.grown, self.leaves = grow_trees(
            self.comm, codes=self.codes, grad=self.grad, hess=self.hess, scales=scales,
            bins=self.bins, n_bins=self.n_bins, options=self.options)
        return bool(top[-1] > 0)

    def apply(self, unit: Unit) -> None:
        for c, tree in enumerate(self.grown):
            t = unit.index * self.columns + c
            self.store_tree(t, tree)
            self.raw[:, c] += tree.value[self.leaves[c], 0]
            self.add_tree(self.test_codes, t, self.trees["value"][t], self.test_raw, c)
        self.done = unit.index + 1

    def evaluate(self, unit: Unit) -> dict[str, Any]:
        train, test = self.dataset.train, self.dataset.test
        metrics: dict[str, Any] = {"tree": unit.index + 1}
        for split, raw, y, rows in (("train", self.raw, self.y, train.n_total),
                                    ("test", self.test_raw, self.test_y, test.n_total)):
            if rows == 0:
                continue
            losses, correct = np.empty(len(y)), np.empty(len(y))
            row_losses(self.loss_kind, raw, y, losses, correct)
            total = exact_column_sums(self.comm, np.column_stack([losses, correct]), rows)
            metrics[f"{split}_loss"] = float(total[0] / rows)
            if self.loss != "squared":
                metrics[f"{split}_accuracy"] = float(total[1] / rows)
        patience = self.config.early_stopping
        if patience > 0 and "test_loss" in metrics:
            if metrics["test_loss"] < self.best_loss:
                self.best_loss, self.best_round = metrics["test_loss"], self.done
            elif self.done - self.best_round >= patience:
                self.finished = True
        metrics["samples"] = train.n_total
        return metrics

    # -- checkpoints and outputs ------------------------------------------------------------
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        best = None if not np.isfinite(self.best_loss) else float(self.best_loss)
        return ({name: value.copy() for name, value in self.trees.items()},
                {"rounds_done": self.done, "best_loss": best, "best_round": self.best_round,
                 "finished": self.finished})

    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.restore_trees(arrays)
        self.done = int(meta["rounds_done"])
        best = meta["best_loss"]
        self.best_loss = np.inf if best is None else float(best)
        self.best_round, self.finished = int(meta["best_round"]), bool(meta["finished"])
        self._reset_scores()

    def kept_rounds(self) -> int:
        """Rounds in the saved model: up to the best test loss when early stopping ended
        the run, else all."""
        return self.best_round if self.finished else self.done

    def model_arrays(self) -> dict[str, np.ndarray]:
        count = self.kept_rounds() * self.columns
        arrays = self.saved_trees(count)
        arrays["value"] = self.trees["value"][:count, :, None]  # one output per tree
        arrays["column"] = np.tile(np.arange(self.columns, dtype=np.int64),
                                   self.kept_rounds())
        arrays["base"] = self.base
        return arrays

    def describe(self) -> dict[str, Any]:
        return {"name": "gbdt", "loss": self.loss, "rounds": self.kept_rounds(),
                "trees": self.kept_rounds() * self.columns, "max_depth": self.config.max_depth,
                "max_leaves": self.config.max_leaves, "bins": self.n_bins}
