"""The checkout never shadows installed distributions: PyPI's ``kernels`` stays PyPI's.

``kernels`` (Hugging Face's kernel hub, pulled in by transformers 5) is installed from the test
constraints; our ``kernels`` folder must only ever be reachable as ``wanrt.kernels``.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_inside_pytest_import_kernels_is_the_installed_distribution():
    import kernels

    import wanrt.kernels

    assert Path(kernels.__file__).resolve().parent.parent.name == "site-packages"
    assert Path(wanrt.kernels.__file__).resolve().parent == ROOT / "kernels"
    assert hasattr(wanrt.kernels, "current_platform")


def test_python_m_from_the_repository_root_does_not_shadow_kernels():
    """``python -m wanrt`` started in the checkout takes it off sys.path before importing anything else."""
    code = ("import wanrt.__main__ as m; m.isolate_sys_path(); import kernels, wanrt.kernels; "
            "print(kernels.__file__); print(wanrt.kernels.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    assert "site-packages" in Path(out[0]).parts
    assert Path(out[1]).resolve().parent == ROOT / "kernels"


def test_without_isolation_the_checkout_would_shadow_it():
    """The hazard the two tests above guard against is real in this environment."""
    out = subprocess.run([sys.executable, "-c", "import kernels; print(kernels.__file__)"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out).resolve().parent == ROOT / "kernels"


def test_pytest_started_with_python_m_from_the_root_imports_transformers(tmp_path):
    """transformers 5 imports ``kernels``; under ``python -m pytest`` in the checkout it must get PyPI's."""
    test = tmp_path / "test_probe.py"
    test.write_text("def test_probe():\n    import transformers.integrations.hub_kernels as h, kernels\n"
                    "    assert 'site-packages' in kernels.__file__\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), str(test)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
