"""Tiny random Wan DiTs in every real checkpoint layout (tests and the offline demo).

Every variant has dim 256 (2 heads of 128, so the ``dim // 128`` head rule holds), ffn 512 and 2
blocks, and the real channel layouts (16/16 T2V, 36/16 I2V/FLF2V, 48/48 TI2V). The text and CLIP
widths, which loaders read off the weights, are shrunk to the tiny text encoder and CLIP models:
``TEXT_DIM`` and ``IMAGE_DIM``, ``IMAGE_TOKENS`` tokens per image. Each variant has its own
deterministic weights; all files of one variant hold the same weights cast or quantised as the
file name says.

Written under ``outdir``::

    diffusion_models/<ComfyUI file names>.safetensors
    official/Wan2.1-T2V-1.3B/, official/Wan2.2-TI2V-5B/ (sharded),
    official/Wan2.2-I2V-A14B/{high,low}_noise_model/
    diffusers/Wan2.1-I2V-14B-480P-Diffusers/transformer/,
    diffusers/Wan2.1-FLF2V-14B-720P-Diffusers/transformer/
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..dit import DiTConfig, WanModel, init_random_
from ..dit.formats import COMFY_PREFIX, official_to_diffusers

TEXT_DIM = 64
IMAGE_DIM = 64
IMAGE_TOKENS = 5  # CLIP tokens per image of the tiny CLIP: (28 / 14)^2 patches + class token


def _config(in_dim: int = 16, out_dim: int = 16, image: bool = False, flf: bool = False):
    return DiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, in_dim=in_dim,
                     out_dim=out_dim, text_dim=TEXT_DIM,
                     image_dim=IMAGE_DIM if image or flf else None,
                     image_tokens=2 * IMAGE_TOKENS if flf else None)


# Weight sets: one per released checkpoint (the A14B pairs are two experts each).
VARIANTS: dict[str, DiTConfig] = {
    "wan2.1_t2v_1.3B": _config(),
    "wan2.1_t2v_14B": _config(),
    "wan2.1_i2v_480p_14B": _config(36, image=True),
    "wan2.1_i2v_720p_14B": _config(36, image=True),
    "wan2.1_flf2v_720p_14B": _config(36, flf=True),
    "wan2.2_ti2v_5B": _config(48, 48),
    "wan2.2_t2v_high_noise_14B": _config(),
    "wan2.2_t2v_low_noise_14B": _config(),
    "wan2.2_i2v_high_noise_14B": _config(36),
    "wan2.2_i2v_low_noise_14B": _config(36),
}

# ComfyUI files: (variant, storage, prefixed with model.diffusion_model.)
COMFY_FILES: dict[str, tuple[str, str, bool]] = {
    "wan2.1_t2v_1.3B_fp16": ("wan2.1_t2v_1.3B", "fp16", False),
    "wan2.1_t2v_14B_fp16": ("wan2.1_t2v_14B", "fp16", False),
    "wan2.1_t2v_14B_bf16": ("wan2.1_t2v_14B", "bf16", True),
    "wan2.1_t2v_14B_fp8_e4m3fn": ("wan2.1_t2v_14B", "fp8_e4m3fn", False),
    "wan2.1_i2v_480p_14B_fp16": ("wan2.1_i2v_480p_14B", "fp16", False),
    "wan2.1_i2v_480p_14B_fp8_scaled": ("wan2.1_i2v_480p_14B", "fp8_scale_weight", True),
    "wan2.1_i2v_720p_14B_fp16": ("wan2.1_i2v_720p_14B", "fp16", True),
    "wan2.1_flf2v_720p_14B_fp16": ("wan2.1_flf2v_720p_14B", "fp16", False),
    "wan2.2_ti2v_5B_fp16": ("wan2.2_ti2v_5B", "fp16", False),
    "wan2.2_t2v_high_noise_14B_fp16": ("wan2.2_t2v_high_noise_14B", "fp16", False),
    "wan2.2_t2v_low_noise_14B_fp16": ("wan2.2_t2v_low_noise_14B", "fp16", False),
    "wan2.2_t2v_high_noise_14B_fp8_scaled": ("wan2.2_t2v_high_noise_14B", "fp8_weight_scale",
                                             False),
    "wan2.2_t2v_low_noise_14B_fp8_scaled": ("wan2.2_t2v_low_noise_14B", "fp8_weight_scale",
                                            False),
    "wan2.2_i2v_high_noise_14B_fp16": ("wan2.2_i2v_high_noise_14B", "fp16", False),
    "wan2.2_i2v_low_noise_14B_fp16": ("wan2.2_i2v_low_noise_14B", "fp16", False),
    "wan2.2_i2v_high_noise_14B_fp8_scaled": ("wan2.2_i2v_high_noise_14B", "fp8_weight_scale",
                                             False),
    "wan2.2_i2v_low_noise_14B_fp8_scaled": ("wan2.2_i2v_low_noise_14B", "fp8_weight_scale",
                                            False),
}

# Official Wan-AI folders: folder -> (variant, dtype, shards). The real files are fp32; bf16 here
# (except the 1.3B) keeps the set small.
OFFICIAL_FOLDERS: dict[str, tuple[str, torch.dtype, int]] = {
    "Wan2.1-T2V-1.3B": ("wan2.1_t2v_1.3B", torch.float32, 1),
    "Wan2.2-TI2V-5B": ("wan2.2_ti2v_5B", torch.bfloat16, 2),
    "Wan2.2-I2V-A14B/high_noise_model": ("wan2.2_i2v_high_noise_14B", torch.bfloat16, 1),
    "Wan2.2-I2V-A14B/low_noise_model": ("wan2.2_i2v_low_noise_14B", torch.bfloat16, 1),
}

DIFFUSERS_FOLDERS: dict[str, str] = {
    "Wan2.1-I2V-14B-480P-Diffusers": "wan2.1_i2v_480p_14B",
    "Wan2.1-FLF2V-14B-720P-Diffusers": "wan2.1_flf2v_720p_14B",
}

_QUANTISED = re.compile(r"blocks\.\d+\.(self_attn|cross_attn|ffn)\.\w+\.weight$")


def weights(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The fp32 weights (official names) of a tiny variant."""
    index = list(VARIANTS).index(variant)
    with torch.device("meta"):
        model = WanModel(VARIANTS[variant])
    model = init_random_(model.to_empty(device="cpu"), seed=1000 * seed + index)
    return {k: v.float() for k, v in model.state_dict().items()}


def _comfy(sd: dict[str, torch.Tensor], storage: str) -> dict[str, torch.Tensor]:
    """Cast to fp16/bf16, or quantise the block Linear weights to fp8 the way ComfyUI files do."""
    if storage in ("fp16", "bf16"):
        return {k: v.to(getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[storage]))
                for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    if storage == "fp8_scale_weight":
        out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    for k, v in sd.items():
        if not (_QUANTISED.search(k) and v.dim() == 2):
            out[k] = v.half()
        elif storage == "fp8_e4m3fn":
            out[k] = v.to(torch.float8_e4m3fn)
        else:
            layer = k[: -len(".weight")]
            scale = v.abs().max() / 448
            out[k] = (v / scale).to(torch.float8_e4m3fn)
            if storage == "fp8_scale_weight":  # legacy ComfyUI layout
                out[f"{layer}.scale_weight"] = scale
                out[f"{layer}.scale_input"] = torch.ones(())
            else:  # newer layout
                out[f"{layer}.weight_scale"] = scale
                out[f"{layer}.comfy_quant"] = torch.tensor(
                    list(json.dumps({"format": "float8_e4m3fn"}).encode()), dtype=torch.uint8)
    return out


def _official_config(config: DiTConfig) -> dict:
    model_type = "i2v" if config.model_type == "flf2v" else config.model_type
    return {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": config.dim,
            "eps": config.eps, "ffn_dim": config.ffn_dim, "freq_dim": config.freq_dim,
            "in_dim": config.in_dim, "model_type": model_type, "num_heads": config.num_heads,
            "num_layers": config.num_layers, "out_dim": config.out_dim, "text_dim": config.text_dim,
            "text_len": 512}


def _diffusers_config(config: DiTConfig) -> dict:
    return {"_class_name": "WanTransformer3DModel", "_diffusers_version": "0.42.1",
            "patch_size": list(config.patch_size), "num_attention_heads": config.num_heads,
            "attention_head_dim": config.head_dim, "in_channels": config.in_dim,
            "out_channels": config.out_dim, "text_dim": config.text_dim,
            "freq_dim": config.freq_dim, "ffn_dim": config.ffn_dim,
            "num_layers": config.num_layers, "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads", "eps": config.eps,
            "image_dim": config.image_dim,
            "added_kv_proj_dim": config.dim if config.image_dim else None,
            "rope_max_seq_len": 1024, "pos_embed_seq_len": config.image_tokens}


def _save(sd: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"format": "pt"})
    return path


def _save_json(data: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def write(outdir: Path, seed: int = 0) -> list[Path]:
    """Write every tiny DiT file; returns the paths written."""
    outdir = Path(outdir)
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def sd(variant: str) -> dict[str, torch.Tensor]:
        if variant not in cache:
            cache[variant] = weights(variant, seed)
        return cache[variant]

    written = []
    for name, (variant, storage, prefixed) in COMFY_FILES.items():
        tensors = _comfy(sd(variant), storage)
        if prefixed:
            tensors = {COMFY_PREFIX + k: v for k, v in tensors.items()}
        written.append(_save(tensors, outdir / "diffusion_models" / f"{name}.safetensors"))

    for folder, (variant, dtype, shards) in OFFICIAL_FOLDERS.items():
        root = outdir / "official" / folder
        written.append(_save_json(_official_config(VARIANTS[variant]), root / "config.json"))
        tensors = {k: v.to(dtype) for k, v in sd(variant).items()}
        if shards == 1:
            written.append(_save(tensors, root / "diffusion_pytorch_model.safetensors"))
            continue
        keys = list(tensors)
        weight_map = {}
        for i in range(shards):
            shard = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = keys[i * len(keys) // shards:(i + 1) * len(keys) // shards]
            written.append(_save({k: tensors[k] for k in part}, root / shard))
            weight_map.update(dict.fromkeys(part, shard))
        total = sum(v.numel() * v.element_size() for v in tensors.values())
        written.append(_save_json({"metadata": {"total_size": total}, "weight_map": weight_map},
                                  root / "diffusion_pytorch_model.safetensors.index.json"))

    for folder, variant in DIFFUSERS_FOLDERS.items():
        root = outdir / "diffusers" / folder / "transformer"
        written.append(_save_json(_diffusers_config(VARIANTS[variant]), root / "config.json"))
        tensors = {official_to_diffusers(k): v.to(torch.bfloat16) for k, v in sd(variant).items()}
        written.append(_save(tensors, root / "diffusion_pytorch_model.safetensors"))
    return written
