"""Training strategies: hooks around the one step/round loop in :mod:`mpitrain.loop`."""

from .base import Strategy, Unit
from .sync import SyncStrategy

__all__ = ["Strategy", "SyncStrategy", "Unit"]
