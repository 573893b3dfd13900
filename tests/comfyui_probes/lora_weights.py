"""Probe (run inside the vendored ComfyUI): the weights ComfyUI's own LoRA code gives.

``lora_weights.py BASE OUT LORA STRENGTH [LORA STRENGTH ...]``: BASE is a Wan DiT state dict with
official names (safetensors); each LoRA is stacked at its strength as ``LoraLoaderModelOnly``
does: ``comfy.lora_convert.convert_lora``, ``comfy.lora.load_lora`` with the key map of
``comfy.lora.model_lora_keys_unet``, the patches of ``ModelPatcher.add_patches`` and
``comfy.lora.calculate_weight`` in fp32 (``ModelPatcher.patch_weight_to_device``). OUT gets the
patched tensors (official names, fp32); each name ComfyUI did not load is printed on a line
``not loaded: NAME``.
"""

import logging
import sys

from comfy.cli_args import args

args.cpu = True  # as `main.py --cpu`; set before comfy.model_management is imported

import comfy.lora  # noqa: E402
import comfy.lora_convert  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

base_path, out_path, *pairs = sys.argv[1:]
base = {"diffusion_model." + k: v for k, v in load_file(base_path).items()}


class WanModel:
    """What ``model_lora_keys_unet`` reads of ComfyUI's Wan model (``comfy.model_base.WAN21``,
    which has no Wan-specific branch there): its state dict, ``diffusion_model.``-prefixed, and
    its config, which has no UNet layout to translate."""

    class model_config:
        unet_config = {"image_model": "wan2.1"}

    def state_dict(self):
        return base


class NotLoaded(logging.Handler):
    def emit(self, record):
        message = record.getMessage()
        if message.startswith("lora key not loaded: "):
            print("not loaded:", message[len("lora key not loaded: "):])


logging.getLogger().addHandler(NotLoaded())
key_map = comfy.lora.model_lora_keys_unet(WanModel(), {})
patches = {}
for path, strength in zip(pairs[::2], pairs[1::2]):
    lora = comfy.lora_convert.convert_lora(load_file(path))
    for key, patch in comfy.lora.load_lora(lora, key_map).items():
        patches.setdefault(key, []).append((float(strength), patch, 1.0, None, None))
save_file({key[len("diffusion_model."):]: comfy.lora.calculate_weight(
    patch, base[key].float().clone(), key).contiguous() for key, patch in patches.items()},
    out_path)
