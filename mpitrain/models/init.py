"""Deterministic initialisation: identical on every rank because it depends on the seed only."""

from __future__ import annotations

import numpy as np

from .layout import Layout

INIT_STREAM = 0x1A17  # distinguishes the init stream from data and shuffle streams


def init_params(layout: Layout, *, seed: int, dtype: np.dtype | str) -> np.ndarray:
    """Flat parameter buffer: He-normal weights before ReLU, 1/sqrt(fan_in) at the output,
    zero biases."""
    rng = np.random.default_rng([seed, INIT_STREAM])
    flat = np.zeros(layout.size, dtype=dtype)
    views = layout.views(flat)
    last = len(layout.dims) - 2
    for layer in range(last + 1):
        fan_in = layout.dims[layer]
        gain = 1.0 if layer == last else 2.0
        weights = views[f"W{layer}"]
        weights[...] = rng.standard_normal(weights.shape) * np.sqrt(gain / fan_in)
    return flat
