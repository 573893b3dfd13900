"""WanRT's ComfyUI nodes (classic API), one module per concept; nothing imports ComfyUI here.

A text-to-video graph (Compile and Step Cache optional):
    Load Diffusion Model → Compile → Step Cache ─┐
    Load Text Encoder → Text Encode ─────────────┼→ Sampler → VAE Decode → Save Video
    Load VAE → Empty Latent Video ───────────────┘
Image-to-video swaps Empty Latent Video for Image To Video (start / end image, CLIP vision).
LoRAs go between Load Diffusion Model and Compile (Load LoRA; chain them to stack). Inside
ComfyUI, WanRT Accelerate runs ComfyUI's own Wan MODEL through WanRT's kernels.
"""

from . import accelerate, compilation, conditioning, files, latents, loaders, lora, sampling, step_cache

_MODULES = (loaders, lora, compilation, step_cache, conditioning, latents, sampling, files, accelerate)

NODE_CLASS_MAPPINGS: dict[str, type] = {name: cls for m in _MODULES for name, cls in m.NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: title for m in _MODULES
                                              for name, title in m.DISPLAY_NAMES.items()}


def runner_node_classes() -> dict[str, type]:
    """What ``wanrt run`` and ``wanrt serve`` run: the pack's nodes and ComfyUI's core Wan nodes
    (``nodes.core``; inside ComfyUI its own serve, so they are not in NODE_CLASS_MAPPINGS). Read
    at each call, so nodes registered later are seen."""
    from .core import CORE_NODE_CLASS_MAPPINGS

    return {**CORE_NODE_CLASS_MAPPINGS, **NODE_CLASS_MAPPINGS}


def runner_display_names() -> dict[str, str]:
    from .core import CORE_NODE_DISPLAY_NAME_MAPPINGS

    return {**CORE_NODE_DISPLAY_NAME_MAPPINGS, **NODE_DISPLAY_NAME_MAPPINGS}
