"""mpitrain: data-parallel and federated training over MPI with numba kernels."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
