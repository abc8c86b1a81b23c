"""Optional packages that some data formats need, and the extra that installs each."""

from __future__ import annotations

import importlib
from types import ModuleType

from mpitrain.errors import UserError


def import_optional(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``; when missing, a UserError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"{what} needs {module.split('.')[0]}, which is not installed "
            f"(pip install 'mpitrain[{extra}]', or '.[{extra}]' from a checkout)"
        ) from None
