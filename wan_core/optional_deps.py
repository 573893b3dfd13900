"""Packages the pack needs that a stock ComfyUI does not install, imported where first used.

A plain ``git clone`` into ``custom_nodes/`` must still import and register every node; the node
that needs one of these packages says exactly what to install when it runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"


def require(module: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the pip command that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = package or module
        raise ImportError(
            f"{purpose} needs the package '{package}', which is not installed (ComfyUI does not "
            f"install it). Install the pack's requirements into this Python: "
            f"`python -m pip install -r {REQUIREMENTS}` (or `python -m pip install {package}`)."
        ) from error
