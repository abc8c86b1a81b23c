"""model.npz: named parameter arrays plus metadata, readable with allow_pickle=False."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .layout import Layout


@dataclass(frozen=True, kw_only=True)
class SavedModel:
    """A trained model as stored in model.npz."""

    model: str
    dims: tuple[int, ...]
    params: dict[str, np.ndarray]
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    version: str = ""
    #: Class names (str) when the training labels were names: output i means classes[i].
    classes: np.ndarray | None = None


def save_model(path: Path, *, model: str, layout: Layout, flat: np.ndarray,
               mean: np.ndarray | None, std: np.ndarray | None, version: str,
               classes: np.ndarray | None = None) -> None:
    """Write parameters (W0, b0, ...) and metadata (meta_*) to ``path``; ``classes``
    (names of the classes, stored as a str array ``meta_classes``) when labels were names."""
    arrays: dict[str, np.ndarray] = {name: view.copy() for name, view in
                                     layout.views(flat).items()}
    arrays["meta_model"] = np.array(model)
    arrays["meta_dims"] = layout.dims_array
    arrays["meta_version"] = np.array(version)
    if mean is not None and std is not None:
        arrays["meta_mean"] = np.asarray(mean)
        arrays["meta_std"] = np.asarray(std)
    if classes is not None:
        arrays["meta_classes"] = np.asarray(classes, dtype=str)
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def load_model(path: str | Path) -> SavedModel:
    """Read a model.npz written by :func:`save_model`."""
    with np.load(path, allow_pickle=False) as data:
        dims = tuple(int(d) for d in data["meta_dims"])
        layout = Layout(dims)
        params = {name: data[name] for name, _, _ in layout.tensors}
        return SavedModel(
            model=str(data["meta_model"]), dims=dims, params=params,
            mean=data["meta_mean"] if "meta_mean" in data else None,
            std=data["meta_std"] if "meta_std" in data else None,
            version=str(data["meta_version"]),
            classes=data["meta_classes"] if "meta_classes" in data else None)
