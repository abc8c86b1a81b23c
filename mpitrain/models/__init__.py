"""Models: which network a model name means, its parameter layout in one flat buffer with
named views, initialisation, where a batch's gradient is computed (:mod:`.gradient`, over
the numba kernels), and saved models with their predictions (:mod:`.saved`,
:mod:`.predict`). May import :mod:`mpitrain.kernels` and numpy; no MPI.
"""

from .init import init_params
from .layout import MODELS, Layout, loss_kind, network_dims, task_of
from .saved import SavedModel, load_model, save_model

__all__ = ["MODELS", "Layout", "SavedModel", "init_params", "load_model", "loss_kind",
           "network_dims", "save_model", "task_of"]
