"""The wheel ships every subpackage: pyproject's explicit list matches the folders."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"wanrt"} | {
        "wanrt." + ".".join(p.parent.relative_to(ROOT).parts)
        for p in ROOT.rglob("__init__.py")
        if p.parent != ROOT and not ({"tests", ".venv", "bench", "build"} & set(p.relative_to(ROOT).parts))
    }
    assert listed == found
