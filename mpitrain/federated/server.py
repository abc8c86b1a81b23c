"""Server optimizers: how the averaged client update moves the global model.

The clients' aggregate ``delta`` is the (weighted) mean of ``local - global``, i.e. minus a
pseudo-gradient. Rules as in Reddi et al., "Adaptive Federated Optimization" (ICLR 2021),
Algorithms 1 and 2 (no bias correction; ``v`` starts at tau²):

- ``fedavg``:     ``x += lr · delta`` (lr = 1 is McMahan et al.'s FedAvg)
- ``fedavgm``:    ``v = momentum · v + delta``; ``x += lr · v`` (Hsu et al. 2019)
- ``fedadagrad``: ``m = b1·m + (1-b1)·delta``; ``v += delta²``
- ``fedyogi``:    ``m`` as above; ``v -= (1-b2) · delta² · sign(v - delta²)``
- ``fedadam``:    ``m`` as above; ``v = b2·v + (1-b2) · delta²``

and for the three adaptive rules ``x += lr · m / (sqrt(v) + tau)``. Defaults (Reddi et al.):
b1 = 0.9, b2 = 0.99, tau = 1e-3. Every rank applies the identical update in place, with
preallocated state and scratch (no allocation per round).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
DEFAULT_SERVER_LR = {"fedavg": 1.0, "fedavgm": 1.0, "fedadam": 0.01, "fedyogi": 0.01,
                     "fedadagrad": 0.1}
ADAPTIVE = ("fedadam", "fedyogi", "fedadagrad")


@dataclass(kw_only=True)
class ServerOptimizer:
    """One server rule and its state (same flat layout as the parameters)."""

    name: str
    lr: float = 0.0  # 0: DEFAULT_SERVER_LR[name]
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    steps: int = 0
    state: dict[str, np.ndarray] = field(default_factory=dict)
    _scratch: np.ndarray = field(init=False, repr=False, default_factory=lambda: np.empty(0))

    def __post_init__(self) -> None:
        if self.name not in SERVER_OPTIMIZERS:
            raise ValueError(f"unknown server optimizer {self.name!r}")
        if self.lr <= 0.0:
            self.lr = DEFAULT_SERVER_LR[self.name]

    def allocate(self, params: np.ndarray) -> None:
        """Zeroed state (``v`` of the adaptive rules starts at tau²) and scratch."""
        self.state = {}
        if self.name == "fedavgm":
            self.state["velocity"] = np.zeros_like(params)
        elif self.name in ADAPTIVE:
            self.state["m"] = np.zeros_like(params)
            self.state["v"] = np.full_like(params, self.tau * self.tau)
        self._scratch = np.empty((2, params.size), dtype=params.dtype)

    def step(self, params: np.ndarray, delta: np.ndarray) -> None:
        """Apply one round's aggregated update ``delta`` to ``params`` (in place)."""
        self.steps += 1
        tmp, other = self._scratch
        if self.name == "fedavg":
            np.multiply(delta, self.lr, out=tmp)
            params += tmp
            return
        if self.name == "fedavgm":
            velocity = self.state["velocity"]
            velocity *= self.momentum
            velocity += delta
            np.multiply(velocity, self.lr, out=tmp)
            params += tmp
            return
        m, v = self.state["m"], self.state["v"]
        m *= self.beta1
        np.multiply(delta, 1.0 - self.beta1, out=tmp)
        m += tmp
        np.square(delta, out=tmp)  # delta²
        if self.name == "fedadagrad":
            v += tmp
        elif self.name == "fedadam":
            v *= self.beta2
            tmp *= 1.0 - self.beta2
            v += tmp
        else:  # fedyogi
            np.subtract(v, tmp, out=other)
            np.sign(other, out=other)
            tmp *= other
            tmp *= 1.0 - self.beta2
            v -= tmp
        np.sqrt(v, out=tmp)
        tmp += self.tau
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr
        params += tmp
