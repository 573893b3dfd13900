"""pytest plugin: collect the repository root as a plain directory.

The root is the package ``wanrt`` (it has an ``__init__.py`` so ComfyUI can load the checkout as a
custom-node folder). Left to itself pytest would treat it as a package named after the checkout
folder and import that ``__init__.py`` bare, which fails when the folder's name is not a Python
identifier (e.g. ``tmp.x1y2``). Tests import the installed ``wanrt`` instead.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path, parent):
    if path == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
