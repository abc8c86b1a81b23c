"""Models: the model protocol (:class:`Model`, :mod:`.protocol`) every model implements,
the built-in dense networks on it (:mod:`.dense`), which model a name means
(:mod:`.registry`), a model bound to its data (:class:`BoundModel`: layout of the one flat
buffer with named views, spec, kernels), where a batch's gradient is computed
(:mod:`.gradient`), and saved models with their predictions (:mod:`.saved`,
:mod:`.predict`). May import :mod:`mpitrain.kernels` and numpy; no MPI.
"""

from .bound import BoundModel, ModelError, builtin_name
from .dense import MLP, MODELS, DenseNetwork, Linear, Logistic, Softmax
from .layout import Layout
from .protocol import TASKS, Model, model_name
from .registry import is_model_path, make_model, parse_options
from .saved import SavedModel, load_model, save_model, trained_model

__all__ = ["MLP", "MODELS", "TASKS", "BoundModel", "DenseNetwork", "Layout", "Linear",
           "Logistic", "Model", "ModelError", "SavedModel", "Softmax", "builtin_name",
           "is_model_path", "load_model", "make_model", "model_name", "parse_options",
           "save_model", "trained_model"]
