"""Deterministic synthetic data whose rows depend only on (seed, row index).

Rows are produced in fixed chunks of :data:`CHUNK_ROWS`; chunk ``c`` comes from a
Generator keyed by ``(seed, ROWS, c)`` and the model parameters (class centres or true
weights) from ``(seed, PARAMS)``. A rank generates only the chunks that hold its rows, so
the data never depends on the number of ranks, and a row never depends on ``samples``.

Classification draws ``classes × clusters`` seeded Gaussian centres; a row picks a centre k
uniformly and gets label ``k mod classes`` (scikit-learn's ``n_clusters_per_class``). With
one cluster per class the classes are Gaussian blobs, nearly linearly separable; with
several, each class is a union of centres scattered among the other classes' centres, so a
linear model cannot separate them and a network needs many more steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mpitrain.data.base import Block, Source
from mpitrain.errors import UserError

#: Rows per generator chunk; part of the data definition (changing it changes the rows).
CHUNK_ROWS = 1024
#: Stream tags keyed into the generators together with the seed.
PARAMS, ROWS = 0, 1
#: Per-coordinate scale of the class centres over sqrt(features): centres are about
#: 2.8 apart whatever the dimension, so unit noise gives overlapping but learnable classes.
CENTRE_SCALE = 2.0


@dataclass(frozen=True, kw_only=True)
class SyntheticSpec:
    """Options of ``--data synthetic``."""

    samples: int = 10000
    features: int = 20
    classes: int = 2  # ignored for regression
    noise: float = 1.0
    clusters: int = 1  # Gaussian centres per class; ignored for regression

    def check(self, task: str) -> None:
        """Raise UserError naming the first bad value."""
        rules = {"samples": (_is_int, 2), "features": (_is_int, 1), "noise": (_is_real, 0)}
        if task == "classification":
            rules["classes"] = (_is_int, 2)
            rules["clusters"] = (_is_int, 1)
        for name, (kind, least) in rules.items():
            value = getattr(self, name)
            if not (kind(value) and value >= least):
                what = "an integer" if kind is _is_int else "a number"
                raise UserError(
                    f"--data synthetic: {name} must be {what} >= {least} (got {value!r})"
                )

    def describe(self, task: str) -> str:
        """Short name for summaries, e.g. ``synthetic(10000x20, 2 classes, noise 1.0)`` or
        ``synthetic(10000x20, 2 classes x 4 clusters, noise 1.0)``."""
        classes = ""
        if task == "classification":
            clusters = f" x {self.clusters} clusters" if self.clusters > 1 else ""
            classes = f", {self.classes} classes{clusters}"
        return f"synthetic({self.samples}x{self.features}{classes}, noise {self.noise:g})"


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float | np.floating) and math.isfinite(value))


class SyntheticSource(Source):
    """Gaussian classes around seeded centres (one or more per class), or a noisy seeded
    linear model."""

    def __init__(self, spec: SyntheticSpec, *, task: str, seed: int, option: str,
                 dtype: np.dtype | type = np.float64) -> None:
        spec.check(task)
        #: The features' dtype of :meth:`read`: rows are drawn in float64 chunk by chunk
        #: and stored rounded to it (the same values as converting afterwards, without a
        #: float64 copy of the whole block).
        self.dtype = np.dtype(dtype)
        super().__init__(option, spec.describe(task), "'synthetic'")
        self.spec = spec
        self.task = task
        self.seed = seed
        self.n_rows = spec.samples
        self.n_features = spec.features
        params = np.random.default_rng([seed, PARAMS])
        d = spec.features
        if task == "classification":
            self.declared_classes = spec.classes
            # centre k belongs to class k mod classes (one per class: today's blobs, same bits)
            self.n_centres = spec.classes * spec.clusters
            self.centres = (params.standard_normal((self.n_centres, d))
                            * (CENTRE_SCALE / math.sqrt(d)))
        else:
            self.w_true = params.standard_normal(d) / math.sqrt(d)

    def chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """All rows of chunk ``c``: features (CHUNK_ROWS, d) and float64 labels/targets."""
        rng = np.random.default_rng([self.seed, ROWS, c])
        d, noise = self.spec.features, float(self.spec.noise)
        if self.task == "classification":
            centre = rng.integers(0, self.n_centres, size=CHUNK_ROWS)
            X = self.centres[centre] + noise * rng.standard_normal((CHUNK_ROWS, d))
            return X, (centre % self.spec.classes).astype(np.float64)
        X = rng.standard_normal((CHUNK_ROWS, d))
        y = X @ self.w_true + noise * rng.standard_normal(CHUNK_ROWS)
        return X, y

    def read(self, rows: np.ndarray) -> Block:
        """Generate only the chunks that hold ``rows`` and keep those rows."""
        X = np.empty((len(rows), self.spec.features), dtype=self.dtype)
        y = np.empty(len(rows))
        chunk_of = rows // CHUNK_ROWS
        for c in np.unique(chunk_of):
            lo, hi = np.searchsorted(chunk_of, [c, c + 1])
            Xc, yc = self.chunk(int(c))
            local = rows[lo:hi] - c * CHUNK_ROWS
            X[lo:hi] = Xc[local]
            y[lo:hi] = yc[local]
        return Block(X=X, y=y, rows=rows)
