"""Measurements around a training run that need no change to it: process and launcher start
times, resident memory, and allocations inside a window of steps.

All hook into ``train(stop_requested=...)``, which is polled exactly once per step, when
the step's message is about to be reduced: after this rank's gradient is computed, or, with
``--overlap`` (whose first bucket is sent during the backward pass), before it. So the n-th
call (0-based) marks the end of step n's local computation (its start with ``--overlap``),
and the calls n and n + w bracket w whole steps, whichever the phase.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_LAUNCHERS = ("mpiexec", "mpirun", "hydra", "srun", "slurmstepd", "prterun", "orterun")


def _stat(pid: int | str) -> tuple[str, int, float] | None:
    """(command name, parent pid, start time in seconds after boot) from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): ppid is field 4, starttime field 22
    return name, int(fields[1]), int(fields[19]) / _CLOCK_TICKS


def _uptime() -> float | None:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class StartClock:
    """Seconds since this process (and its launcher, e.g. mpiexec) started, from /proc.

    Linux only (None elsewhere); /proc times have 10 ms resolution. The launcher is the
    oldest ancestor within three generations whose name looks like an MPI or Slurm
    launcher (mpiexec → hydra_pmi_proxy → python).
    """

    process_start: float | None = None  # seconds after boot
    launcher_start: float | None = None
    launcher: str | None = None
    _offset: float | None = None  # uptime - perf_counter at construction

    def __post_init__(self) -> None:
        own = _stat("self")
        uptime = _uptime()
        if own is None or uptime is None:
            return
        self._offset = uptime - time.perf_counter()
        self.process_start = own[2]
        parent = own[1]
        for _ in range(3):
            info = _stat(parent)
            if info is None or parent <= 1:
                break
            name, grandparent, started = info
            if any(word in name for word in _LAUNCHERS):
                self.launcher, self.launcher_start = name, started
            parent = grandparent

    def since_process_start(self, perf: float) -> float | None:
        """Seconds from process start to the ``time.perf_counter()`` value ``perf``."""
        if self._offset is None or self.process_start is None:
            return None
        return perf + self._offset - self.process_start

    def since_launch(self, perf: float) -> float | None:
        """Seconds from the launcher's start (or the process's, without one) to ``perf``."""
        if self._offset is None:
            return None
        start = self.launcher_start if self.launcher_start is not None else self.process_start
        return None if start is None else perf + self._offset - start


def rss_bytes() -> int:
    """Resident set size of this process (0 where /proc is missing)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class StepProbe:
    """``stop_requested`` callable that records when step 0's local computation ends (when
    it starts, with ``--overlap``), RSS at the first step of every epoch after the first
    (after the previous epoch and its evaluation), and the allocations made between the
    polls of steps ``window_start`` and ``window_start + window``: ``window`` steps' worth of
    every part of a step (tracemalloc: every Python object and numpy buffer; kernels are
    checked separately). Never asks to stop.
    """

    steps_per_epoch: int
    window_start: int
    window: int
    first_step: float | None = None  # perf_counter at step 0's poll
    rss_at_epoch_start: list[int] = field(default_factory=list)  # at epochs 2, 3, ...
    traced_net_bytes: int | None = None
    traced_peak_bytes: int | None = None
    _calls: int = 0
    _traced0: int = 0
    _started_tracing: bool = False

    def __call__(self) -> bool:
        step = self._calls
        self._calls += 1
        if step == 0:
            self.first_step = time.perf_counter()
        elif step % self.steps_per_epoch == 0:
            self.rss_at_epoch_start.append(rss_bytes())
        if self.window > 0 and step == self.window_start:
            self._started_tracing = not tracemalloc.is_tracing()
            if self._started_tracing:
                tracemalloc.start()
            tracemalloc.reset_peak()
            self._traced0 = tracemalloc.get_traced_memory()[0]
        elif self.window > 0 and step == self.window_start + self.window:
            current, peak = tracemalloc.get_traced_memory()
            if self._started_tracing:
                tracemalloc.stop()
            self.traced_net_bytes = current - self._traced0
            self.traced_peak_bytes = peak - self._traced0
        return False

    @property
    def steps(self) -> int:
        """Steps polled so far (steps whose message was about to be reduced)."""
        return self._calls
