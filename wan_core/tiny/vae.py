"""Tiny random Wan 2.1 / 2.2 VAEs in the official, ComfyUI and diffusers layouts.

Widths are shrunk (2.1: dim 8; 2.2: dim 16, decoder 32) while the latent widths (16 / 48), the
stage layout and so every tensor name stay real: 194 / 196 tensors. Values are drawn in float32
and rounded to bfloat16, so the 16-bit ComfyUI files and the float32 official / diffusers files
hold exactly the same weights.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..vae.config import LATENT_MEAN, LATENT_STD, VAEConfig
from ..vae.loader import diffusers_name
from ..vae.model import WanVAE

TINY_VAE21 = VAEConfig("2.1", dim=8, dec_dim=8, z_dim=16)
TINY_VAE22 = VAEConfig("2.2", dim=16, dec_dim=32, z_dim=48)

# version config, ComfyUI name, official name, diffusers folder
FILES = (
    (TINY_VAE21, "wan_2.1_vae.safetensors", "Wan2.1_VAE.pth", "Wan2.1-VAE"),
    (TINY_VAE22, "wan2.2_vae.safetensors", "Wan2.2_VAE.pth", "Wan2.2-VAE"),
)


def random_state_dict(config: VAEConfig, seed: int) -> OrderedDict[str, torch.Tensor]:
    """Official names → float32 tensors (bf16-representable): convs ~ N(0, 1/fan_in), norm
    gains ~ 1 ± 0.1, biases ~ ±0.05; the output conv is scaled so decoded pixels mostly stay
    inside [-1, 1] (so the clamp does not hide differences in tests)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanVAE(config).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=g)
        if name.endswith(".gamma"):
            t = 1 + 0.1 * t
        elif name.endswith(".bias"):
            t = 0.05 * t
        else:
            t = t * shape[1:].numel() ** -0.5 * (0.6 if name.startswith("decoder.head.2") else 1.0)
        sd[name] = t.to(torch.bfloat16).float()
    return sd


def diffusers_config(config: VAEConfig) -> dict:
    """``vae/config.json`` of ``AutoencoderKLWan`` for ``config``."""
    cfg = {"_class_name": "AutoencoderKLWan", "_diffusers_version": "0.35.0",
           "base_dim": config.dim, "z_dim": config.z_dim, "dim_mult": list(config.dim_mult),
           "num_res_blocks": config.num_res_blocks, "attn_scales": [],
           "temperal_downsample": list(config.temporal_downsample), "dropout": 0.0,
           "latents_mean": list(LATENT_MEAN[config.z_dim]),
           "latents_std": list(LATENT_STD[config.z_dim])}
    if config.version == "2.2":
        cfg.update(decoder_base_dim=config.dec_dim, is_residual=True, in_channels=12,
                   out_channels=12, patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4)
    return cfg


def write(outdir: Path, seed: int = 0) -> list[Path]:
    """Write ``vae/`` (ComfyUI, bf16), ``official/`` (.pth, fp32) and ``diffusers/<name>/vae/``."""
    outdir = Path(outdir)
    written = []
    for i, (config, comfy_name, official_name, diffusers_folder) in enumerate(FILES):
        sd = random_state_dict(config, seed + i)
        comfy = outdir / "vae" / comfy_name
        official = outdir / "official" / official_name
        folder = outdir / "diffusers" / diffusers_folder / "vae"
        for d in (comfy.parent, official.parent, folder):
            d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, comfy)
        torch.save(sd, official)
        save_file({diffusers_name(k, config.num_res_blocks): v for k, v in sd.items()},
                  folder / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(diffusers_config(config), indent=2))
        written += [comfy, official, folder / "config.json",
                    folder / "diffusion_pytorch_model.safetensors"]
    return written
