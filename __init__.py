"""WanRT: fast Wan 2.1 / 2.2 video generation as a ComfyUI node pack and a headless runner.

ComfyUI imports this folder as a custom-node package and reads ``NODE_CLASS_MAPPINGS``.
Nothing here imports ComfyUI at import time.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
