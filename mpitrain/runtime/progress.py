"""The human progress line rank 0 prints after each epoch (sync) or evaluated round."""

from __future__ import annotations

from typing import Any


def progress_line(metrics: dict[str, Any], *, unit: str, total: int) -> str:
    """``epoch 3/20  train loss ... acc ...  test loss ...  12,345 samples/s  0.52s``;
    ``unit`` is the metrics key that counts periods ("epoch" or "round")."""
    parts = [f"{unit} {metrics[unit]}/{total}"]
    for split in ("train", "test"):
        if f"{split}_loss" not in metrics:
            continue
        text = f"{split} loss {metrics[f'{split}_loss']:.4f}"
        if f"{split}_accuracy" in metrics:
            text += f" acc {metrics[f'{split}_accuracy']:.4f}"
        if f"{split}_r2" in metrics:
            text += f" r2 {metrics[f'{split}_r2']:.4f}"
        parts.append(text)
    if "client_accuracy_min" in metrics:
        parts.append("clients acc min/med/max {:.3f}/{:.3f}/{:.3f}".format(
            metrics["client_accuracy_min"], metrics["client_accuracy_median"],
            metrics["client_accuracy_max"]))
    if "staleness_mean" in metrics:
        parts.append(f"staleness mean {metrics['staleness_mean']:.2f} max "
                     f"{metrics['staleness_max']}")
    if "epsilon" in metrics:
        parts.append(f"ε {metrics['epsilon']:.3f}")
    if "samples_per_second" in metrics:
        parts.append(f"{metrics['samples_per_second']:,.0f} samples/s")
    parts.append(f"{metrics['seconds']:.2f}s")
    return "  ".join(parts)
