"""Whether a sync run overlaps its gradient reduction with the backward pass (``--overlap``),
and why: the one place the default is decided, reported in the run header and in
``summary.json``'s ``overlap`` section.

The rule, from measurements on the 2-vCPU development machine (``benchmarks/overlap.py``;
README "Performance", docs/tuning.md): overlap is **off unless asked for**. ``--overlap``
starts each layer's reduction as soon as the layer's gradient is written and tests the
requests between the layer kernels, but MPICH moves data only inside MPI calls, so nothing
moves while a numba layer kernel runs: the big layers' reductions still run after the
kernels, and the split step plus one request per layer cost about what the overlap saves
(0.93-1.05× the plain ``--reduce mpi`` step for MLPs of 1.9 M and 6.3 M parameters, 64-256
rows per rank, 2 ranks). A progress engine that does move data during compute needs a core
of its own: MPICH's progress thread (``MPIR_CVAR_ASYNC_PROGRESS=1``, with mpi4py's
``MPI_THREAD_MULTIPLE``) spins on the core the rank computes on when every core runs a
rank, and made the 1.9 M-parameter step's kernels 2.6× slower here. So overlap can only
pay where every rank has a spare core for that thread; :func:`decide_overlap` says so in
its reason when that is the case, but does not turn overlap on by itself (not measured:
no such machine here), and never changes what the user asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ASYNC_PROGRESS_ENV = "MPIR_CVAR_ASYNC_PROGRESS"
"""MPICH's switch for its asynchronous progress thread (needs ``MPI_THREAD_MULTIPLE``)."""


@dataclass(frozen=True)
class OverlapDecision:
    """Whether the step's reduction overlaps the backward pass, who chose, and why."""

    enabled: bool
    source: str  # "given" (--overlap) or "default"
    reason: str
    #: Worth a line in the run header: only the case where trying --overlap may pay (the
    #: others are in summary.json; a header line on every run would be noise).
    suggest: bool = False

    def report(self) -> dict[str, Any]:
        """``summary.json``'s ``overlap`` section."""
        return {"enabled": self.enabled, "source": self.source, "reason": self.reason}

    def header(self) -> str:
        """The run header's line about overlap."""
        state = "on" if self.enabled else "off"
        how = "as given" if self.source == "given" else "by default"
        return f"overlap: {state} {how}: {self.reason}"


def async_progress(env: dict[str, str] | Any) -> bool:
    """Is MPICH's asynchronous progress thread asked for in ``env``?"""
    return env.get(ASYNC_PROGRESS_ENV, "0").strip() not in ("", "0")


def decide_overlap(*, given: bool, can_split: bool, ranks: int, ranks_on_node: int,
                   cores_on_node: int, progress_thread: bool) -> OverlapDecision:
    """The overlap of a sync run: ``given`` is ``--overlap``; ``can_split``: the model has
    per-layer kernels; ``ranks``: the communicator's size; ``ranks_on_node`` and
    ``cores_on_node``: this node's ranks and the CPUs they may use; ``progress_thread``:
    MPICH's asynchronous progress thread was asked for (:func:`async_progress`)."""
    if given:
        return OverlapDecision(True, "given", "each layer's gradient reduction starts "
                               "during the backward pass (--overlap)")
    if ranks == 1:
        return OverlapDecision(False, "default", "one rank: nothing to reduce")
    if not can_split:
        return OverlapDecision(False, "default", "the model has no per-layer kernels")
    spare = cores_on_node >= 2 * ranks_on_node
    if not progress_thread or not spare:
        missing = ("no core is left for a progress thread "
                   f"({ranks_on_node} ranks on {cores_on_node} cores)" if not spare else
                   f"MPICH moves data only inside MPI calls ({ASYNC_PROGRESS_ENV} is not set)")
        return OverlapDecision(False, "default", f"it does not pay here: {missing}, so "
                               "nothing is sent while the layer kernels run")
    return OverlapDecision(False, "default", "MPICH's progress thread has a spare core "
                           "per rank here, so --overlap may pay: measure it with "
                           "benchmarks/overlap.py", suggest=True)
