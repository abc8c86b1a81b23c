"""Which model a name means: a built-in (``mlp``) or a user's class (``package.module:Class``
or ``path/to/file.py:Class``), built with its constructor options.

Imports happen on every rank (each rank calls :func:`make_model`); problems raise
:class:`~mpitrain.models.bound.ModelError` with one line naming the class and the reason.
"""

from __future__ import annotations

import importlib
import json
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .bound import ModelError
from .dense import BUILTIN, MLP
from .protocol import Model


def is_model_path(name: str) -> bool:
    """Does ``name`` look like ``module:Class`` (a user's model) rather than a built-in?"""
    module, sep, attr = name.rpartition(":")
    return bool(sep and module and attr)


def parse_options(text: str | None) -> dict[str, Any]:
    """Constructor options from ``--model-options``: a JSON object (``{"rank": 8}``) or
    TOML (``{rank = 8}`` or ``rank = 8``)."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
        for candidate in (f"options = {text}", text):
            try:
                value = tomllib.loads(candidate)
            except tomllib.TOMLDecodeError:
                continue
            value = value.get("options", value) if candidate != text else value
            break
    if not isinstance(value, dict):
        raise ModelError(f"--model-options must be a JSON object like '{{\"rank\": 8}}' or a "
                         f"TOML table like '{{rank = 8}}' (got {text!r})")
    return value


def load_class(name: str) -> type[Model]:
    """Import the class ``module:Class`` or ``file.py:Class``."""
    module_name, _, attr = name.rpartition(":")
    try:
        if module_name.endswith(".py"):
            module = _load_file(Path(module_name))
        else:
            module = importlib.import_module(module_name)
    except ModelError:
        raise
    except Exception as exc:  # the user's module may raise anything while importing
        raise ModelError(f"--model {name}: cannot import {module_name!r} "
                         f"({type(exc).__name__}: {exc})") from None
    cls = module
    for part in attr.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise ModelError(f"--model {name}: module {module_name!r} has no {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ModelError(f"--model {name}: {attr} is not a subclass of mpitrain.models.Model")
    return cls


def _load_file(path: Path) -> ModuleType:
    """Import a model file by path: its folder goes first on ``sys.path`` and the module
    is imported under its own name (so numba's cache and pickles see one module)."""
    path = path.resolve()
    if not path.is_file():
        raise ModelError(f"--model {path}: file does not exist")
    loaded = sys.modules.get(path.stem)
    if loaded is not None:
        where = getattr(loaded, "__file__", None)
        if where is not None and Path(where).resolve() == path:
            return loaded
        raise ModelError(f"--model {path}: a different module named {path.stem!r} is already "
                         f"imported (from {where}); rename the file")
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    return importlib.import_module(path.stem)


def canonical_name(name: str) -> str:
    """``name`` with a model file's path made absolute (so model.npz finds it again)."""
    module, _, attr = name.rpartition(":")
    if is_model_path(name) and module.endswith(".py"):
        return f"{Path(module).resolve()}:{attr}"
    return name


def make_model(name: str, *, options: dict[str, Any] | None = None,
               hidden: tuple[int, ...] = (128,)) -> Model:
    """The model object ``name`` means, built with ``options`` (``hidden`` is the
    ``--hidden`` flag, for ``mlp`` when its options do not set it)."""
    options = dict(options or {})
    if name in BUILTIN:
        cls: type[Model] = BUILTIN[name]
        if cls is MLP:
            options.setdefault("hidden", hidden)
            options["hidden"] = tuple(options["hidden"])
    elif is_model_path(name):
        cls = load_class(name)
    else:
        raise ModelError(f"--model must be one of {', '.join(BUILTIN)} or a class "
                         f"'package.module:Class' (got {name!r})")
    return construct(cls, options, name=name)


def construct(cls: type[Model], options: dict[str, Any], *, name: str) -> Model:
    """``cls(**options)`` with a clear message for options it does not take."""
    valid = cls._param_names()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ModelError(f"--model {name}: unknown option {unknown[0]!r} in --model-options "
                         f"(its options: {', '.join(valid) or 'none'})")
    try:
        return cls(**options)
    except Exception as exc:
        raise ModelError(f"--model {name}: {cls.__name__}({_shown(options)}) failed: "
                         f"{type(exc).__name__}: {exc}") from None


def options_text(model: Model) -> str:
    """A model's constructor options as JSON (what config.toml and model.npz store)."""
    return json.dumps(_plain(model.get_params()))


def _plain(value: Any) -> Any:
    """JSON-ready copy of constructor options (tuples and numpy values become plain)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _shown(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())
