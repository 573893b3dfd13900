"""The wheel ships every subpackage: pyproject's explicit list matches the folders."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    top = [d for d in ROOT.iterdir() if (d / "__init__.py").is_file() and d.name != "tests"]
    found = {"wanrt"} | {"wanrt." + ".".join(p.parent.relative_to(ROOT).parts)
                         for d in top for p in d.rglob("__init__.py")}
    assert listed == found
