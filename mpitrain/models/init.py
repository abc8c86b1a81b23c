"""Deterministic initialisation: identical on every rank because it depends on the seed only."""

from __future__ import annotations

import numpy as np

from .layout import Layout

INIT_STREAM = 0x1A17  # distinguishes the init stream from data and shuffle streams


def init_params(layout: Layout, *, seed: int, dtype: np.dtype | str) -> np.ndarray:
    """Flat parameter buffer: weights and biases uniform in ±1/sqrt(fan_in).

    The default of PyTorch's ``nn.Linear``: users comparing against DDP get the same
    starting scale, and it converges faster than He-normal on short runs.
    """
    rng = np.random.default_rng([seed, INIT_STREAM])
    flat = np.empty(layout.size, dtype=dtype)
    for layer in range(len(layout.dims) - 1):
        bound = 1.0 / np.sqrt(layout.dims[layer])
        views = layout.views(flat)
        for name in (f"W{layer}", f"b{layer}"):
            views[name][...] = rng.uniform(-bound, bound, views[name].shape)
    return flat
