"""Optimizers: how the reduced gradient updates the flat parameter buffer on every rank.

:mod:`.rules` holds the update rules (sgd, momentum, adam; the arithmetic is in
:mod:`mpitrain.kernels.optimizers`) and their state buffers; :mod:`.schedules` the
learning rate of each step. May import :mod:`mpitrain.kernels` only.
"""

from .rules import OPTIMIZERS, Optimizer, exact_on_rows, make_optimizer
from .schedules import SCHEDULES, learning_rate

__all__ = ["OPTIMIZERS", "SCHEDULES", "Optimizer", "exact_on_rows", "learning_rate",
           "make_optimizer"]
