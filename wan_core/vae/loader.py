"""``load_vae``: official ``.pth``, ComfyUI / Kijai safetensors and diffusers ``AutoencoderKLWan``
files → :class:`WanVAE`; the version (2.1 / 2.2) and widths come from the tensors, not the name."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..checkpoint import Checkpoint, CheckpointError, assign_weights, open_checkpoint
from .config import LATENT_MEAN, VAEConfig
from .model import WanVAE

# Tensors whose shapes give the config, under official and diffusers names.
_PROBES = {
    "official": ("encoder.conv1.weight", "conv2.weight", "decoder.head.2.weight"),
    "diffusers": ("encoder.conv_in.weight", "post_quant_conv.weight", "decoder.conv_out.weight"),
}
_VERSION_BY_INPUT = {3: "2.1", 12: "2.2"}  # encoder input channels: RGB, or RGB patchified 2×2

_RESNET = {"residual.0.": "norm1.", "residual.2.": "conv1.", "residual.3.": "norm2.",
           "residual.6.": "conv2.", "shortcut.": "conv_shortcut."}


def _resnet(rest: str) -> str:
    for official, diffusers in _RESNET.items():
        if rest.startswith(official):
            return diffusers + rest[len(official):]
    return rest  # Resample tensors (resample.1.*, time_conv.*) keep their names


def diffusers_name(key: str, num_res_blocks: int = 2) -> str:
    """Official VAE tensor name → diffusers ``AutoencoderKLWan`` name (Wan 2.1 and 2.2 layouts)."""
    for official, diffusers in (("conv1.", "quant_conv."), ("conv2.", "post_quant_conv.")):
        if key.startswith(official):
            return diffusers + key[len(official):]
    part, rest = key.split(".", 1)
    if m := re.fullmatch(r"conv1\.(.+)", rest):
        rest = f"conv_in.{m[1]}"
    elif m := re.fullmatch(r"head\.([02])\.(.+)", rest):
        rest = f"{'norm_out' if m[1] == '0' else 'conv_out'}.{m[2]}"
    elif m := re.fullmatch(r"middle\.1\.(.+)", rest):
        rest = f"mid_block.attentions.0.{m[1]}"
    elif m := re.fullmatch(r"middle\.([02])\.(.+)", rest):
        rest = f"mid_block.resnets.{int(m[1]) // 2}.{_resnet(m[2])}"
    elif m := re.fullmatch(r"downsamples\.(\d+)\.downsamples\.(\d+)\.(.+)", rest):   # 2.2 stages
        s, r = int(m[1]), int(m[2])
        rest = (f"down_blocks.{s}.resnets.{r}.{_resnet(m[3])}" if r < num_res_blocks
                else f"down_blocks.{s}.downsampler.{m[3]}")
    elif m := re.fullmatch(r"downsamples\.(\d+)\.(.+)", rest):                       # 2.1 flat
        rest = f"down_blocks.{m[1]}.{_resnet(m[2])}"
    elif m := re.fullmatch(r"upsamples\.(\d+)\.upsamples\.(\d+)\.(.+)", rest):       # 2.2 stages
        s, r = int(m[1]), int(m[2])
        rest = (f"up_blocks.{s}.resnets.{r}.{_resnet(m[3])}" if r <= num_res_blocks
                else f"up_blocks.{s}.upsampler.{m[3]}")
    elif m := re.fullmatch(r"upsamples\.(\d+)\.(.+)", rest):                         # 2.1 flat
        s, r = divmod(int(m[1]), num_res_blocks + 2)  # per stage: resnets, then the upsampler
        rest = (f"up_blocks.{s}.resnets.{r}.{_resnet(m[2])}" if r <= num_res_blocks
                else f"up_blocks.{s}.upsamplers.0.{m[2]}")
    return f"{part}.{rest}"


def _open(path: Path) -> Checkpoint:
    """A file, a diffusers ``vae/`` folder, or a diffusers pipeline folder that holds ``vae/``."""
    if path.is_dir() and not any(path.glob("*.safetensors")) and (path / "vae").is_dir():
        path = path / "vae"
    if path.is_dir() and any(path.glob("diffusion_pytorch_model*.safetensors")):
        return open_checkpoint(path, stem="diffusion_pytorch_model")
    ckpt = open_checkpoint(path)
    if any(k.startswith("vae.") for k in ckpt):   # all-in-one file: keep only the VAE
        ckpt = ckpt.renamed(lambda k: k[len("vae."):] if k.startswith("vae.") else None)
    return ckpt


def _looks_like(ckpt: Checkpoint) -> str:
    keys = list(ckpt)

    def has(*parts: str) -> bool:
        return any(p in k for k in keys for p in parts)

    if has("vision_model.", "visual."):
        return "a CLIP vision checkpoint (use load_clip_vision)"
    if has("SelfAttention.", "shared.weight", "token_embedding.weight", "spiece_model"):
        return "a UMT5 text-encoder checkpoint (use load_text_encoder)"
    if has("self_attn.", "patch_embedding.", "condition_embedder.", "attn1."):
        return "a Wan DiT / diffusion-model checkpoint (use load_dit)"
    return f"an unknown model (first keys: {', '.join(keys[:3]) or 'none'})"


def _config(ckpt: Checkpoint, layout: str) -> VAEConfig:
    encoder_in, post_quant, decoder_out = (ckpt[k].shape for k in _PROBES[layout])
    version = _VERSION_BY_INPUT.get(encoder_in[1])
    if version is None:
        raise CheckpointError(f"{ckpt.description}: the VAE encoder takes {encoder_in[1]} input "
                              f"channels; Wan VAEs take 3 (2.1) or 12 (2.2, patchified)")
    z_dim = post_quant[0]
    if z_dim not in LATENT_MEAN:
        raise CheckpointError(f"{ckpt.description}: latent width {z_dim}; Wan VAEs have 16 (2.1) "
                              f"or 48 (2.2) latent channels")
    return VAEConfig(version, dim=encoder_in[0], dec_dim=decoder_out[1], z_dim=z_dim)


def read_vae_config(path: str | os.PathLike) -> VAEConfig:
    """The config of the VAE in ``path`` from tensor shapes alone (no weights read from
    safetensors files): what validation needs to know before any work, e.g. its size step."""
    ckpt = _open(Path(path))
    layout = _layout(ckpt)
    return _config(ckpt, layout)


def _layout(ckpt: Checkpoint) -> str:
    layout = next((name for name, probes in _PROBES.items() if all(k in ckpt for k in probes)), None)
    if layout is None:
        raise CheckpointError(f"{ckpt.description}: not a Wan VAE checkpoint; it looks like "
                              f"{_looks_like(ckpt)}")
    return layout


def load_vae(path: str | os.PathLike, *, dtype: torch.dtype | None = None,
             device: torch.device | str | None = None) -> WanVAE:
    """Load a Wan 2.1 or 2.2 VAE from any known layout.

    ``path``: official ``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth``; ComfyUI ``wan_2.1_vae.safetensors``
    / ``wan2.2_vae.safetensors`` (also all-in-one files with a ``vae.`` prefix); a diffusers
    ``vae/`` folder (or its ``diffusion_pytorch_model.safetensors``, or the pipeline folder).
    ``dtype``: compute/storage dtype (default: as stored; bf16 is the fast choice on GPUs).
    """
    ckpt = _open(Path(path))
    layout = _layout(ckpt)
    config = _config(ckpt, layout)
    with torch.device("meta"):
        model = WanVAE(config)
    if layout == "diffusers":
        official = {diffusers_name(k, config.num_res_blocks): k for k in model.state_dict()}
        ckpt = ckpt.renamed(lambda k: official.get(k, k))
    device = torch.device(device or "cpu")
    assign_weights(model, ckpt, what=f"Wan {config.version} VAE", dtype=dtype, device=device)
    return model.laid_out_for(device)
