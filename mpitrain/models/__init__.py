"""Models: which network a model name means, its flat parameter layout, and initialisation."""

from .init import init_params
from .layout import Layout, loss_kind, network_dims, task_of
from .saved import SavedModel, load_model, save_model

__all__ = ["Layout", "SavedModel", "init_params", "load_model", "loss_kind", "network_dims",
           "save_model", "task_of"]
