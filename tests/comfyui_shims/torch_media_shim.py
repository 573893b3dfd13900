"""Import shims for ``torchvision`` and ``torchaudio`` inside the vendored ComfyUI (tests only).

ComfyUI imports both at start-up (``comfy/ldm/cascade``, the audio VAE), but the Wan path never
calls them, and PyPI's Linux wheels of both need the CUDA build of torch (7 GB) instead of the
CPU build CI installs. This finder serves every ``torchvision.*`` / ``torchaudio.*`` module as an
empty package whose attributes are placeholders: importing and subclassing work, calling one
raises, so a Wan test that reached them would fail loudly rather than pass on a stub.
``WANRT_COMFYUI_SHIMS`` (comma-separated) replaces the list: the GPU machine, which lacks PyAV and
cannot take its 35 MB wheel beside comfy-kitchen's, runs ``bench/comfyui_accelerate.py`` with
``torchvision,torchaudio,av`` (PyAV is ComfyUI's video file I/O, never the Wan sampling path).
"""

import importlib.abc
import importlib.machinery
import os
import sys
import types

SHIMMED = tuple(os.environ.get("WANRT_COMFYUI_SHIMS", "torchvision,torchaudio").split(","))


class Absent:
    """A placeholder attribute: usable as a base class or a default, never callable."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> "Absent":
        return Absent(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} was called, but {SHIMMED} are test shims here")

    def __mro_entries__(self, bases):
        return (object,)


class ShimModule(types.ModuleType):
    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Absent(f"{self.__name__}.{attr}")


class ShimFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in SHIMMED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = ShimModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0+shim"
        return module

    def exec_module(self, module):
        pass


def install() -> None:
    if not any(isinstance(finder, ShimFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, ShimFinder())
