"""Optimizers: apply the averaged gradient to the flat parameter buffer on every rank.

The update itself is a numba kernel (``mpitrain.kernels.optimizers``); this module holds the state
buffers (same flat layout as the parameters) and the hyper-parameters, so every rank applies
the identical update and checkpoints can save and restore the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mpitrain.kernels import optimizers as updates

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass(kw_only=True)
class Optimizer:
    """Update rule plus its state; ``apply`` updates ``params`` in place."""

    name: str
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    steps: int = 0
    state: dict[str, np.ndarray] = field(default_factory=dict)

    def allocate(self, params: np.ndarray) -> None:
        """Create zeroed state buffers shaped like ``params``."""
        names = {"sgd": (), "momentum": ("velocity",), "adam": ("m", "v")}[self.name]
        self.state = {name: np.zeros_like(params) for name in names}

    def apply(self, params: np.ndarray, grad: np.ndarray, *, scale: float, lr: float) -> None:
        """params -= lr * rule(grad * scale + weight_decay * params); grad may be longer."""
        self.steps += 1
        if self.name == "sgd":
            updates.sgd_update(params, grad, scale, lr, self.weight_decay)
        elif self.name == "momentum":
            updates.momentum_update(params, grad, self.state["velocity"], scale, lr,
                                    self.momentum, self.weight_decay, self.nesterov)
        else:
            updates.adam_update(params, grad, self.state["m"], self.state["v"], scale, lr,
                                self.beta1, self.beta2, self.eps, self.weight_decay,
                                self.steps)


def make_optimizer(name: str, params: np.ndarray, *, weight_decay: float = 0.0,
                   momentum: float = 0.9, nesterov: bool = False, beta1: float = 0.9,
                   beta2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """An optimizer with state allocated for ``params``."""
    optimizer = Optimizer(name=name, weight_decay=weight_decay, momentum=momentum,
                          nesterov=nesterov, beta1=beta1, beta2=beta2, eps=eps)
    optimizer.allocate(params)
    return optimizer
