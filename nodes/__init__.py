"""WanRT's ComfyUI nodes (classic API), one module per concept; nothing imports ComfyUI here.

A text-to-video graph: Load Diffusion Model → Compile ─┐
                       Load Text Encoder → Text Encode ─┼→ Sampler → VAE Decode → Save Video
                       Load VAE → Empty Latent Video ───┘
Image-to-video swaps Empty Latent Video for Image To Video (start / end image, CLIP vision).
Inside ComfyUI, WanRT Accelerate runs ComfyUI's own Wan MODEL through WanRT's kernels.
"""

from . import accelerate, compilation, conditioning, files, latents, loaders, sampling

_MODULES = (loaders, compilation, conditioning, latents, sampling, files, accelerate)

NODE_CLASS_MAPPINGS: dict[str, type] = {name: cls for m in _MODULES for name, cls in m.NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: title for m in _MODULES
                                              for name, title in m.DISPLAY_NAMES.items()}
