"""The machine's ceiling for ``bench matrix``: single-rank training processes run side by side.

``bench matrix`` (rank 0) starts P of these workers as separate processes, outside the MPI
job (``python -m mpitrain.bench.ceiling``, launcher variables removed, so each is a
1-rank MPI singleton). Each reads one JSON command per line on stdin and answers one JSON
line on stdout:

- ``{"cmd": "data", "point": {...}, "rank": r, "ranks": P, "rows": n, "seed": s}``: make
  rank r's rows of the point (the same rows rank r of the job trains on); answer
  ``{"ok": true}``;
- ``{"cmd": "run", "options": {...}}``: train those rows on COMM_SELF with the
  :class:`~mpitrain.config.TrainConfig` fields ``options``; answer the run's figures
  (:func:`mpitrain.bench.matrix.run_figures`);
- ``{"cmd": "quit"}``: exit.

Rank 0 sends each command to every worker before reading any answer, so the runs start
together (each worker is blocked on its stdin until then): two independent runs of the
same per-rank work at the same time = what the hardware gives P ranks without mpitrain's
communication.

Each worker runs in its own session, as the launcher starts each rank (MPICH's hydra calls
``setsid``): with Linux's autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``)
a session is one scheduling group, so on a loaded machine two workers left in rank 0's
session shared one rank's CPU share and ran at half speed each (measured: 45 ms per step
each instead of 21 ms alone, while the job's two ranks ran at 21 ms each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

#: Launcher variables a worker must not inherit (it would try to join the job).
LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "HYDRA_", "HYDI_", "MPI_LOCAL", "OMPI_", "PRTE_",
                     "I_MPI_HYDRA", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP")


class Workers:
    """P ceiling workers started by rank 0; ``send`` one command to all, ``receive`` their
    answers in order. A worker that dies or answers with an error raises RuntimeError."""

    def __init__(self, count: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
        self._logs = [tempfile.TemporaryFile(mode="w+") for _ in range(count)]
        self._procs = [subprocess.Popen([sys.executable, "-m", "mpitrain.bench.ceiling"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=log, text=True, env=env, bufsize=1,
                                        start_new_session=True)
                       for log in self._logs]

    def send(self, commands: list[dict[str, Any]]) -> None:
        for proc, command in zip(self._procs, commands, strict=True):
            proc.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]

    def receive(self) -> list[dict[str, Any]]:
        answers = []
        for proc, log in zip(self._procs, self._logs, strict=True):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            answer = json.loads(line) if line.strip() else {"error": "exited"}
            if "error" in answer:
                log.seek(0)
                tail = log.read()[-800:].strip()
                raise RuntimeError(f"a ceiling worker failed ({answer['error']})"
                                   + (f": {tail}" if tail else ""))
            answers.append(answer)
        return answers

    def all(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send then receive: the workers run ``commands`` at the same time."""
        self.send(commands)
        return self.receive()

    def close(self) -> None:
        for proc in self._procs:
            try:
                if proc.poll() is None:
                    proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")  # type: ignore[union-attr]
                    proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()


def serve() -> None:
    """The worker's loop (see the module docstring)."""
    from mpi4py import MPI

    from mpitrain.bench.matrix import point_rows, run_figures, train_options

    rows: tuple[Any, Any] | None = None
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["cmd"] == "quit":
                return
            if command["cmd"] == "data":
                rows = point_rows(command["point"], rank=command["rank"],
                                  rows=command["rows"], seed=command["seed"])
                answer: dict[str, Any] = {"ok": True}
            else:
                from mpitrain.training import train

                assert rows is not None, "run before data"
                result = train(train_options(command["options"]), comm=MPI.COMM_SELF,
                               X=rows[0], y=rows[1])
                answer = run_figures(result.history)
        except Exception as exc:  # reported to rank 0, which raises
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    from mpitrain.runtime.launch import configure_threads

    configure_threads()
    serve()
