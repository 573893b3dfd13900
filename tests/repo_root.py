"""pytest plugin: the repository root is the package ``wanrt``, never a place for top-level imports.

The root has an ``__init__.py`` (ComfyUI loads the checkout as a custom-node folder) and folders
named ``kernels``, ``nodes``, ``server``, ``runner``: on ``sys.path`` they would shadow installed
distributions (PyPI's ``kernels``, which transformers imports) and ComfyUI's own ``nodes``.

- ``python -m pytest`` puts the working directory first on ``sys.path``; when that is the root,
  this plugin takes it off again before any test module or third-party package is imported.
- Left to itself pytest would collect the root as a package named after the checkout folder and
  import its ``__init__.py`` bare; it is collected as a plain directory. Tests import the
  installed ``wanrt`` instead.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _is_root(entry: str) -> bool:
    return Path(entry or os.getcwd()).resolve() == ROOT


sys.path[:] = [entry for entry in sys.path if not _is_root(entry)]


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path, parent):
    if path == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
