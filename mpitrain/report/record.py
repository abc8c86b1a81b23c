"""What a run directory holds, read back: ``summary.json``, ``metrics.jsonl`` and the
checkpoints (written by :mod:`mpitrain.runtime.outputs` and :mod:`mpitrain.checkpoint`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpitrain.errors import UserError


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One run directory: its summary (``{}`` when summary.json is missing) and its metrics
    lines, in order."""

    path: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    @property
    def period(self) -> str:
        """The metrics key that counts periods: "epoch" (sync) or "round" (federated)."""
        if self.metrics and "round" in self.metrics[0]:
            return "round"
        mode = self.summary.get("config", {}).get("mode", "sync")
        return "epoch" if mode == "sync" else "round"

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.summary.get("config", {}))

    def elapsed(self) -> list[float]:
        """Wall-clock seconds at the end of each metrics line (the running sum of the
        periods' ``seconds``)."""
        total, out = 0.0, []
        for line in self.metrics:
            total += float(line.get("seconds", 0.0))
            out.append(total)
        return out


def read_run(path: str | Path, *, command: str) -> RunRecord:
    """Read run directory ``path``; a UserError (naming ``command``) when it is not one."""
    directory = Path(path)
    if not directory.exists():
        raise UserError(f"{command}: run directory {str(path)!r} does not exist")
    if not directory.is_dir():
        raise UserError(f"{command}: {str(path)!r} is not a directory (expected a run "
                        "directory written by 'mpitrain train --out')")
    summary_path, metrics_path = directory / "summary.json", directory / "metrics.jsonl"
    if not summary_path.exists() and not metrics_path.exists():
        raise UserError(f"{command}: {str(path)!r} is not a run directory (it holds neither "
                        "summary.json nor metrics.jsonl)")
    summary: dict[str, Any] = {}
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{command}: cannot read {summary_path}: {exc}") from None
        if not isinstance(summary, dict):
            raise UserError(f"{command}: {summary_path} does not hold a JSON object")
    metrics: list[dict[str, Any]] = []
    if metrics_path.exists():
        try:
            lines = metrics_path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UserError(f"{command}: cannot read {metrics_path}: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                if number == len(lines):  # a line cut short by a killed job
                    break
                raise UserError(f"{command}: {metrics_path} line {number} is not JSON") from None
            if isinstance(item, dict):
                metrics.append(item)
    return RunRecord(path=directory, summary=summary, metrics=metrics)
