"""The one training loop: contribute → reduce (one collective) → apply, unit after unit.

Strategies (:mod:`mpitrain.strategies`) fill in what a unit means; the loop owns timing,
stopping (it asks the strategy to carry each rank's stop vote, and ends when the reduction
says any rank voted) and the per-period metrics callback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from mpitrain.runtime.watchdog import Watchdog

from .strategies.base import StopRequested, Strategy, Unit


@dataclass(frozen=True)
class LoopResult:
    """How the loop ended: ``next_unit`` is where a resumed run starts."""

    next_unit: int
    stopped: bool  # True when a rank asked to stop (e.g. SIGTERM) before the end


def run_loop(strategy: Strategy, *, start: int = 0,
             on_period: Callable[[dict[str, Any]], None] | None = None,
             stop_requested: StopRequested = lambda: False,
             after_unit: Callable[[Unit, bool], None] | None = None,
             watchdog: Watchdog | None = None) -> LoopResult:
    """Run ``strategy`` from unit ``start`` to the end or until any rank asks to stop.

    ``on_period`` receives each period's metrics plus seconds, samples_per_second,
    compute_seconds and comm_seconds (the time in ``reduce``: the wait for the collective,
    including waiting for slower ranks; with ``--overlap`` the reductions started inside
    ``contribute`` count as compute). ``after_unit(unit, stopping)`` runs on every rank
    after each unit (checkpoints hook in here). ``watchdog`` watches every collective.
    ``stop_requested`` is called once per unit, by the strategy (see
    :meth:`~mpitrain.strategies.base.Strategy.contribute`).
    """
    compute = comm = 0.0
    period_start = perf_counter()
    next_unit = start
    # Kept lean on purpose: this body runs once per step, next to a ~150 us kernel.
    for unit in strategy.units(start):
        t0 = perf_counter()
        strategy.contribute(unit, stop_requested)
        t1 = perf_counter()
        if watchdog is not None:
            watchdog.enter(f"the collective of unit {unit.index + 1} (period "
                           f"{unit.period + 1})")
        stopping = strategy.reduce(unit)
        if watchdog is not None:
            watchdog.leave()
        t2 = perf_counter()
        strategy.apply(unit)
        t3 = perf_counter()
        compute += (t1 - t0) + (t3 - t2)
        comm += t2 - t1
        next_unit = unit.index + 1
        if unit.period_end:
            seconds = perf_counter() - period_start
            if watchdog is not None:
                watchdog.enter(f"the evaluation after unit {unit.index + 1}")
            metrics = strategy.evaluate(unit)
            if watchdog is not None:
                watchdog.leave()
            samples = metrics.pop("samples", 0)
            metrics.update(seconds=seconds, samples_per_second=samples / seconds,
                           compute_seconds=compute, comm_seconds=comm)
            if on_period is not None:
                on_period(metrics)
            compute = comm = 0.0
            period_start = perf_counter()
        if after_unit is not None:
            after_unit(unit, stopping)
        if stopping:
            return LoopResult(next_unit, stopped=True)
    return LoopResult(next_unit, stopped=False)
