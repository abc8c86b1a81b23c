"""scikit-learn's bundled handwritten digits (1797 rows, 64 features, 10 classes)."""

from __future__ import annotations

import numpy as np

from mpitrain.data.base import Block, Source, take_rows


class DigitsSource(Source):
    """``--data digits``: small enough that every rank loads it and keeps only its rows."""

    declared_classes = 10

    def __init__(self, *, option: str) -> None:
        super().__init__(option, "digits", "'digits'")
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise self.error(
                "'digits' needs scikit-learn, which is not installed "
                "(pip install mpitrain[datasets])"
            ) from None
        X, y = load_digits(return_X_y=True)
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64)
        self.n_rows, self.n_features = self.X.shape

    def read(self, rows: np.ndarray) -> Block:
        return Block(X=take_rows(self.X, rows), y=take_rows(self.y, rows), rows=rows)
