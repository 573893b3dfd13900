"""ComfyUI's own core node types that its Wan templates use, running on ``wan_core`` (no ComfyUI
import): same class names, inputs (names, order, defaults, combos) and output types as ComfyUI
0.33, so ComfyUI's Wan workflows run unchanged in ``wanrt run`` / ``wanrt serve``.

They travel as ComfyUI's types: ``MODEL`` a :class:`~.model.CoreModel`, ``CLIP`` / ``VAE`` /
``CLIP_VISION`` WanRT's encoders, ``CONDITIONING`` ``[[context [1, 512, 4096], {extras}]]``,
``LATENT`` ``{"samples": [B, C, T, H, W]}`` un-normalised (ComfyUI's Wan latent format).
Registered in the runner and the server only: inside ComfyUI, ComfyUI's own nodes serve.

Not ComfyUI-identical (yet):

- KSampler / KSamplerAdvanced list all of ComfyUI's samplers and schedulers but run euler,
  euler_ancestral, uni_pc, uni_pc_bh2, dpmpp_2m, dpmpp_2m_sde, lcm, res_multistep with simple,
  normal, karras, exponential, sgm_uniform, beta; the others are rejected at validation. No model
  patches besides the shift and merged LoRAs; no latent previews; ``batch_index`` is ignored.
- A latent's ``noise_mask`` (Wan22ImageToVideoLatent with a start image) holds the kept frames
  and gives them timestep 0, as ComfyUI's WAN22 model does; not parity-tested.
- UNETLoader: every fp8 ``weight_dtype`` keeps an fp8 file's weights fp8; other files are not
  quantised. On the CPU models run in fp32 (as ComfyUI's). CLIPLoader loads ``type="wan"`` only.
- Images are encoded with WanRT's VAE / CLIP vision (parity with the official Wan code);
  CLIPVisionEncode ``center`` crops with WanRT's resize.
- LoadImage's MASK is empty (alpha is dropped); CreateVideo takes no audio and 8 bits only;
  SaveVideo writes H.264 mp4 (format auto/mp4, codec auto/h264), no ``%date%``-style prefixes.
- ComfyMathExpression evaluates arithmetic, comparisons, ``x if c else y`` and floor, ceil,
  round, abs, min, max, sqrt, int, float (ComfyUI uses simpleeval).
- Sizes a Wan DiT cannot patchify (not multiples of 16; 32 for the Wan 2.2 VAE) are rejected
  where ComfyUI would pad them.
"""

from . import conditioning, latents, loaders, logic, sampling, video

_MODULES = (loaders, conditioning, latents, sampling, video, logic)

CORE_NODE_CLASS_MAPPINGS: dict[str, type] = {name: cls for m in _MODULES for name, cls in m.NODES.items()}
CORE_NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: title for m in _MODULES
                                                   for name, title in m.DISPLAY_NAMES.items()}
