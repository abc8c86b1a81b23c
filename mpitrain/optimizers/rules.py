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


    @property
    def exact_on_rows(self) -> bool:
        """Whether :meth:`apply_rows` gives the dense update's bits: plain SGD without
        weight decay, where a weight whose gradient is 0 does not change. (Momentum and
        Adam keep moving every weight whose state is non-zero, and weight decay every
        weight, so updating only some rows would need each skipped step replayed: no
        saving.)"""
        return exact_on_rows(self.name, weight_decay=self.weight_decay)

    def apply_rows(self, params: np.ndarray, grad: np.ndarray, *, rows: np.ndarray,
                   width: int, dense_start: int, scale: float, lr: float) -> None:
        """:meth:`apply` where ``grad``'s block ``[:dense_start]`` is zero outside the rows
        ``rows`` (distinct, ``width`` elements each): only those rows and the rest from
        ``dense_start`` on are updated, in time that grows with them rather than with
        ``params`` (only when :attr:`exact_on_rows`: the same bits as :meth:`apply`)."""
        if not self.exact_on_rows:
            raise ValueError(f"{self.name} (weight decay {self.weight_decay}) has no exact "
                             "row-wise update; use apply()")
        self.steps += 1
        updates.sgd_update_rows(params, grad, rows, rows.size, width, dense_start, scale, lr,
                                self.weight_decay)


def exact_on_rows(name: str, *, weight_decay: float) -> bool:
    """Whether the update rule ``name`` with ``weight_decay`` leaves a weight whose gradient
    is 0 unchanged (:attr:`Optimizer.exact_on_rows`), known before any state exists."""
    return name == "sgd" and weight_decay == 0.0


def make_optimizer(name: str, params: np.ndarray, *, weight_decay: float = 0.0,
                   momentum: float = 0.9, nesterov: bool = False, beta1: float = 0.9,
                   beta2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """An optimizer with state allocated for ``params``."""
    optimizer = Optimizer(name=name, weight_decay=weight_decay, momentum=momentum,
                          nesterov=nesterov, beta1=beta1, beta2=beta2, eps=eps)
    optimizer.allocate(params)
    return optimizer
