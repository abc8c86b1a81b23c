"""The Strategy interface: everything the loop, checkpoints and outputs may ask of a way of
training, and nothing else.

The loop (:mod:`mpitrain.loop`) is the same for every strategy. Per unit (a step or a
round): ``contribute`` does this rank's local work and puts it in the strategy's message,
``reduce`` combines the messages of all ranks (one collective, or one exchange) and says
whether any rank asked to stop, ``apply`` updates the model from the combined message;
after the last unit of a period (an epoch, or a group of rounds) ``evaluate`` reports
metrics. Like Flower's configure/aggregate hooks, but over MPI collectives.

Stopping: the loop hands ``contribute`` a ``stop_requested`` callable, which the strategy
calls exactly once per unit, when its message is about to leave this rank (after its
local work, or before it when parts of the message are sent during the work); the vote
travels with the message, so ``reduce`` returns the same answer on every rank.

A new way of training is one subclass (these hooks, plus ``build``, ``kernels`` and
optionally ``validate``) and one line in :data:`mpitrain.strategies.STRATEGIES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from mpi4py import MPI

    from ..config import TrainConfig
    from ..data import Dataset
    from ..models import BoundModel, Layout


@dataclass(frozen=True, slots=True)
class Unit:
    """One pass of the loop: ``index`` counts units from the start of training."""

    index: int
    period: int  # epoch (sync) or round (federated)
    step: int  # step within the epoch (0 for rounds)
    period_end: bool  # evaluate and record metrics after this unit


StopRequested = Callable[[], bool]


class Strategy(ABC):
    """A way of training with every rank of ``comm`` (see the module docstring).

    Class attributes say how the run is counted, for progress lines, metrics, checkpoint
    checks and messages; instance attributes are the model every rank holds.
    """

    unit_name: ClassVar[str]  # what one unit is: "step", "round"
    period_name: ClassVar[str]  # what one metrics line covers: "epoch", "round"
    length_option: ClassVar[str]  # the config field giving the number of periods
    #: checkpointed arrays with one row per unit (trees): a resumed run with a larger
    #: length_option may hold more rows than the checkpoint (restore copies the first ones)
    per_unit_arrays: ClassVar[bool] = False
    options: ClassVar[Collection[str]] = ()  # mode-only options it honours (config.MODE_ONLY)

    comm: MPI.Comm
    layout: Layout
    params: np.ndarray  # the global model, flat; the same on every rank after ``apply``

    # -- construction ------------------------------------------------------------------------
    @classmethod  # noqa: B027 - optional hook, nothing to check by default
    def validate(cls, config: TrainConfig) -> None:
        """Raise UserError for option combinations this strategy cannot run (no MPI: called
        while the config is resolved). Nothing by default."""

    @classmethod
    @abstractmethod
    def kernels(cls, config: TrainConfig, *, ranks: int) -> frozenset[str]:
        """Names of the numba kernels a run calls, compiled or loaded once at start-up: the
        model's hooks (:data:`mpitrain.models.bound.HOOK_NAMES`: ``step``, ``split``,
        ``gradient``, ``loss``, ``predict``) and optimizers etc.
        (:data:`mpitrain.kernels.warmup.KERNELS`)."""

    @classmethod
    @abstractmethod
    def build(cls, config: TrainConfig, *, model: BoundModel, params: np.ndarray,
              dataset: Dataset, comm: MPI.Comm) -> Strategy:
        """Collective: the strategy for ``config``, training ``params`` (the flat buffer of
        ``model``) on ``dataset``; bad input raises the same UserError on every rank."""

    # -- the loop's hooks --------------------------------------------------------------------
    @property
    @abstractmethod
    def total_units(self) -> int:
        """Units in the whole run."""

    @abstractmethod
    def units(self, start: int) -> Iterator[Unit]:
        """The units still to run, starting at unit index ``start``."""

    @abstractmethod
    def contribute(self, unit: Unit, stop_requested: StopRequested) -> None:
        """Local work into the message, with this rank's stop vote (one call of
        ``stop_requested``)."""

    @abstractmethod
    def reduce(self, unit: Unit) -> bool:
        """Collective: combine the messages of all ranks; True when any rank voted to stop."""

    @abstractmethod
    def apply(self, unit: Unit) -> None:
        """Update the model from the combined message."""

    @abstractmethod
    def evaluate(self, unit: Unit) -> dict[str, Any]:
        """Collective: metrics of the period that ``unit`` ends (one JSON line); the key
        :attr:`period_name` counts periods from 1, ``samples`` the rows trained on."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Collective: release communication resources once the loop has ended (nothing by
        default). Only called when every rank got there (normal end, stop, agreed error)."""

    # -- checkpoints and outputs -------------------------------------------------------------
    @abstractmethod
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays (parameters, optimizer state, ...) and JSON-able metadata that, with the
        unit index, let :meth:`restore_state` continue the run exactly."""

    @abstractmethod
    def restore_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Load what :meth:`checkpoint_state` returned (possibly on another rank count)."""

    @property
    def checkpoint_slice(self) -> tuple[int, int] | None:
        """None: :meth:`checkpoint_state` is the whole state, the same on every rank (rank
        0 writes it). ``(start, stop)``: it is this rank's slice ``[start, stop)`` of
        every array of the flat model's length (sharded training), and every rank writes
        its own (:mod:`mpitrain.checkpoint.policy`)."""
        return None

    def summary(self) -> dict[str, Any]:
        """Sections this strategy adds to summary.json (none by default; the same on every
        rank)."""
        return {}

    def header(self) -> str | None:
        """A line for the run's header (rank 0 prints it before the first period, unless
        --quiet), or None. No communication."""
        return None


def vote(message: np.ndarray, stop_requested: StopRequested) -> None:
    """Write this rank's stop vote into the last slot of ``message`` (summed by the
    reduction, so any rank's vote stops every rank)."""
    message[-1] = 1.0 if stop_requested() else 0.0


def voted(message: np.ndarray) -> bool:
    """Whether any rank voted to stop, from a reduced message."""
    return bool(message[-1] > 0)
