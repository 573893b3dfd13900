"""ComfyUI's own core node types that its Wan templates use, running on ``wan_core`` (no ComfyUI
import): same class names, inputs (names, order, defaults, combos) and output types as ComfyUI
0.33, so ComfyUI's Wan workflows run unchanged in ``wanrt run`` / ``wanrt serve``.

They travel as ComfyUI's types: ``MODEL`` a :class:`~.model.CoreModel`, ``CLIP`` / ``VAE`` /
``CLIP_VISION`` WanRT's encoders, ``CONDITIONING`` ``[[context [1, 512, 4096], {extras}]]``,
``LATENT`` ``{"samples": [B, C, T, H, W]}`` un-normalised (ComfyUI's Wan latent format).
Registered in the runner and the server only: inside ComfyUI, ComfyUI's own nodes serve.
"""

from . import conditioning, latents, loaders, logic, sampling, video

_MODULES = (loaders, conditioning, latents, sampling, video, logic)

CORE_NODE_CLASS_MAPPINGS: dict[str, type] = {name: cls for m in _MODULES for name, cls in m.NODES.items()}
CORE_NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: title for m in _MODULES
                                                   for name, title in m.DISPLAY_NAMES.items()}
