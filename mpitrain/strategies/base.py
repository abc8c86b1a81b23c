"""The Strategy interface: what happens in one unit (a step or a round) of the loop.

The loop (:mod:`mpitrain.loop`) is the same for every strategy: ``contribute`` fills this
rank's message, ``reduce`` combines the messages of all ranks (one collective), ``apply``
updates the model from the combined message, and after the last unit of a period (an epoch,
or a group of rounds) ``evaluate`` reports metrics. Like Flower's configure/aggregate hooks,
but over MPI collectives.

Message layout: ``payload | tail``; the LAST element is the stop flag, written by the loop
(a rank asked to stop sets it to 1, and after the sum every rank sees it): after
``contribute``, or before it when the strategy sets ``stop_flag_first`` (it then never
writes that slot itself, and may start reducing parts of the message inside ``contribute``).
The loop reads the ``message`` attribute at each use, so a strategy may point it at another
buffer of the same layout from one hook to the next (e.g. a shared-memory slot).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from mpi4py import MPI

from ..collectives import allreduce


@dataclass(frozen=True, slots=True)
class Unit:
    """One pass of the loop: ``index`` counts units from the start of training."""

    index: int
    period: int  # epoch (sync) or round (federated)
    step: int  # step within the epoch (0 for rounds)
    period_end: bool  # evaluate and record metrics after this unit


class Strategy(ABC):
    """Hooks called by :func:`mpitrain.loop.run_loop`."""

    message: np.ndarray
    comm: MPI.Comm
    reduce_algorithm: str = "auto"
    shared_memory: bool = True  # may the reduction wait in shared memory (not in MPI)?
    stop_flag_first: bool = False  # see the module docstring

    @abstractmethod
    def units(self, start: int) -> Iterator[Unit]:
        """The units still to run, starting at unit index ``start``."""

    @abstractmethod
    def contribute(self, unit: Unit) -> None:
        """Local work: fill ``message`` (all but the stop flag)."""

    def reduce(self, unit: Unit) -> None:
        """Combine the messages of all ranks: one sum allreduce by default."""
        allreduce(self.message, self.comm, algorithm=self.reduce_algorithm, op="sum",
                  shared_memory=self.shared_memory)

    @abstractmethod
    def apply(self, unit: Unit) -> None:
        """Update the model from the combined message."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Collective: release communication resources once the loop has ended (nothing by
        default). Only called when every rank got there (normal end, stop, agreed error)."""

    @abstractmethod
    def evaluate(self, unit: Unit) -> dict[str, Any]:
        """Collective: metrics of the period that ``unit`` ends (one JSON line)."""

    @property
    @abstractmethod
    def total_units(self) -> int:
        """Units in the whole run."""

    @abstractmethod
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays (parameters, optimizer state, ...) and JSON-able metadata that, with the
        unit index, let :meth:`restore_state` continue the run exactly."""

    @abstractmethod
    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Load what :meth:`checkpoint_state` returned (possibly on another rank count)."""
