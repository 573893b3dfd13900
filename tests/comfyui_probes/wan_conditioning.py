"""Probe (run inside the vendored ComfyUI): the image conditioning of ComfyUI's own Wan nodes.

``wan_conditioning.py VAE IMAGES OUT WIDTH HEIGHT LENGTH``: VAE is a Wan 2.1 VAE file (ComfyUI
layout), IMAGES a safetensors file with ``start`` and ``end`` (ComfyUI IMAGE, ``[1, H, W, 3]`` in
[0, 1]) and ``latent22`` (what a stub Wan 2.2 VAE returns: ComfyUI cannot build the tiny 2.2 VAE,
its size is fixed there). OUT gets, in ComfyUI's own tensors:

- ``i2v_y`` / ``flf2v_y``: the ``y`` ComfyUI's Wan DiT receives from ``WanImageToVideo`` /
  ``WanFirstLastFrameToVideo`` (``comfy.model_base.WAN21.concat_cond`` on their
  ``concat_latent_image`` and ``concat_mask``), ``[1, 4 + 16, F_lat, H/8, W/8]``;
- ``i2v_latent``: ``WanImageToVideo``'s empty latent;
- ``ti2v_samples`` / ``ti2v_noise_mask``: ``Wan22ImageToVideoLatent``'s LATENT (ComfyUI's latent
  format) and its ``noise_mask``, and ``ti2v_model_latent``: the samples as the model sees them
  (``comfy.latent_formats.Wan22().process_in``).
"""

import sys
import types

from comfy.cli_args import args

args.cpu = True  # as `main.py --cpu`; set before comfy.model_management is imported

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import comfy.latent_formats  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402
from comfy_extras.nodes_wan import (Wan22ImageToVideoLatent, WanFirstLastFrameToVideo,  # noqa: E402
                                    WanImageToVideo)

vae_path, images_path, out_path, width, height, length = sys.argv[1:]
width, height, length = int(width), int(height), int(length)
images = load_file(images_path)
vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae_path))
cond = [[torch.zeros(1, 1, 1), {}]]


def dit_y(conditioning, latent):
    """``WAN21.concat_cond`` of an I2V model (36 input channels) for this conditioning."""
    wan21 = comfy.latent_formats.Wan21()
    model = types.SimpleNamespace(
        diffusion_model=types.SimpleNamespace(
            patch_embedding=types.SimpleNamespace(weight=torch.empty(1, 36, 1, 2, 2))),
        latent_format=wan21, process_latent_in=wan21.process_in, image_to_video=True)
    extra = conditioning[0][1]
    return comfy.model_base.WAN21.concat_cond(
        model, noise=torch.zeros_like(latent), device=torch.device("cpu"),
        concat_latent_image=extra["concat_latent_image"], concat_mask=extra["concat_mask"])


positive, _, latent = WanImageToVideo.execute(cond, cond, vae, width, height, length, 1,
                                              start_image=images["start"]).result
out = {"i2v_y": dit_y(positive, latent["samples"]), "i2v_latent": latent["samples"]}
positive, _, latent = WanFirstLastFrameToVideo.execute(
    cond, cond, vae, width, height, length, 1, start_image=images["start"],
    end_image=images["end"]).result
out["flf2v_y"] = dit_y(positive, latent["samples"])


class StubVAE22:
    """Returns ``latent22`` for the one start frame it is given."""

    def encode(self, pixels):
        assert pixels.shape[0] == 1, pixels.shape
        return images["latent22"].clone()


(latent,) = Wan22ImageToVideoLatent.execute(StubVAE22(), width, height, length, 1,
                                            start_image=images["start"]).result
out |= {"ti2v_samples": latent["samples"], "ti2v_noise_mask": latent["noise_mask"],
        "ti2v_model_latent": comfy.latent_formats.Wan22().process_in(latent["samples"])}
save_file({k: v.float().contiguous() for k, v in out.items()}, out_path)
