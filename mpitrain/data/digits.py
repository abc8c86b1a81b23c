"""scikit-learn's bundled data sets: handwritten digits (1797 rows, 64 features, 10
classes) and iris (150 rows, 4 features, 3 classes)."""

from __future__ import annotations

import numpy as np

from mpitrain.data.base import Block, Source, take_rows

#: Built-in name → (scikit-learn loader, classes).
BUNDLED = {"digits": ("load_digits", 10), "iris": ("load_iris", 3)}


class BundledSource(Source):
    """``--data digits`` or ``--data iris``: small enough that every rank loads it and
    keeps only its rows."""

    def __init__(self, name: str, *, option: str) -> None:
        super().__init__(option, name, f"'{name}'")
        loader, self.declared_classes = BUNDLED[name]
        try:
            import sklearn.datasets
        except ImportError:
            raise self.error(
                f"'{name}' needs scikit-learn, which is not installed "
                "(pip install mpitrain[datasets])"
            ) from None
        X, y = getattr(sklearn.datasets, loader)(return_X_y=True)
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64)
        self.n_rows, self.n_features = self.X.shape

    def read(self, rows: np.ndarray) -> Block:
        return Block(X=take_rows(self.X, rows), y=take_rows(self.y, rows), rows=rows)

