"""Predictions from a saved model.npz, for scripts and notebooks (no MPI needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpitrain.kernels.network import network_predict, workspace_size
from mpitrain.models import Layout, SavedModel, load_model, loss_kind

PREDICT_ROWS = 4096


def predict(model: SavedModel | str | Path, X: np.ndarray) -> np.ndarray:
    """Regression values, probability of class 1 (logistic) or class indices (softmax/mlp).

    ``X`` holds raw features; the model's stored standardisation is applied first.
    """
    saved = model if isinstance(model, SavedModel) else load_model(model)
    layout = Layout(saved.dims)
    dtype = next(iter(saved.params.values())).dtype
    flat = np.concatenate([saved.params[name].ravel() for name, _, _ in layout.tensors])
    X = np.asarray(X, dtype=dtype)
    if saved.mean is not None and saved.std is not None:
        X = (X - saved.mean.astype(dtype)) / saved.std.astype(dtype)
    X = np.ascontiguousarray(X)
    out = np.empty(len(X), dtype=dtype)
    rows = max(1, min(PREDICT_ROWS, len(X)))
    work = np.empty(workspace_size(layout.dims, rows), dtype=dtype)
    network_predict(flat.astype(dtype), layout.dims_array, loss_kind(saved.model), X, out,
                    work, rows)
    if saved.model in ("softmax", "mlp"):
        return out.astype(np.int64)
    return out
