"""Which clients take part in a round: keyed by (seed, round) only, so the same on every rank
and for any number of ranks.

Without DP a round samples exactly ``max(1, round(C·K))`` clients without replacement (as
McMahan et al. 2017). With DP (``poisson=True``) every client joins independently with
probability C, the sampling the RDP accountant of :mod:`.privacy` analyses (DP-FedAvg,
McMahan et al. 2018).
"""

from __future__ import annotations

import numpy as np

SAMPLE_STREAM = 0x5A3F


def clients_per_round(clients: int, fraction: float) -> int:
    """``max(1, round(C·K))``: the clients of one round without DP."""
    return max(1, round(fraction * clients))


def sample_clients(*, seed: int, round_index: int, clients: int, fraction: float,
                   poisson: bool = False) -> np.ndarray:
    """Sorted int64 ids of the clients of round ``round_index`` (0-based)."""
    rng = np.random.default_rng([seed, SAMPLE_STREAM, round_index])
    if poisson:
        return np.flatnonzero(rng.random(clients) < fraction).astype(np.int64)
    chosen = rng.choice(clients, size=clients_per_round(clients, fraction), replace=False)
    return np.sort(chosen).astype(np.int64)
