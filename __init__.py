"""WanRT: fast Wan 2.1 / 2.2 video generation as a ComfyUI node pack and a headless runner.

ComfyUI imports this folder as a custom-node package and reads ``NODE_CLASS_MAPPINGS``.
Nothing here imports ComfyUI at import time, and importing the package alone imports nothing
heavy: the node mappings (and with them torch) load on first access, so ``python -m wanrt``
can set up the process (``__main__``) before torch starts.
"""

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]


def __getattr__(name: str):
    if name in __all__:
        from . import nodes
        return getattr(nodes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
