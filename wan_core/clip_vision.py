"""CLIP ViT-H/14 vision tower as Wan 2.1 I2V / FLF2V use it: image -> ``[B, 257, 1280]``.

Official ``wan/modules/clip.py`` ``VisionTransformer(use_31_block=True)``: patch conv (no bias),
``[CLS]`` + patches + position embedding, pre-LayerNorm, then all blocks but the last (no
post-norm, no head). Each block is pre-norm: ``x += attn(norm1(x)); x += mlp(norm2(x))`` with
exact GELU. Parameter names are the official ones without ``visual.``.

Files: ComfyUI ``clip_vision_h.safetensors`` / diffusers ``image_encoder/`` (transformers
``CLIPVisionModel[WithProjection]`` names, q/k/v fused here on load) and the official
``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (``visual.*``; ``textual.*`` and
``log_scale`` ignored). Sizes come from shapes; the head count is not visible in the weights and
is read from a ``config.json`` in a model folder, else 16 (ViT-H/14).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import Checkpoint, CheckpointError, TensorInfo, assign_weights, open_checkpoint
from .parallel import once

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPVisionConfig:
    image_size: int = 224
    patch_size: int = 14
    dim: int = 1280
    num_heads: int = 16
    mlp_dim: int = 5120
    num_layers: int = 31  # blocks run: the checkpoint's 32 minus the last
    eps: float = 1e-5


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, C] -> [B, L, C]``."""
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class AttentionBlock(nn.Module):
    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.attn = SelfAttention(cfg.dim, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_dim), nn.GELU(),
                                 nn.Linear(cfg.mlp_dim, cfg.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CLIPVisionEncoder(nn.Module):
    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        self.cfg = cfg
        num_tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
        self.patch_embedding = nn.Conv2d(3, cfg.dim, cfg.patch_size, cfg.patch_size, bias=False)
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, num_tokens, cfg.dim))
        self.pre_norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.transformer = nn.Sequential(*(AttentionBlock(cfg) for _ in range(cfg.num_layers)))

    @property
    def dtype(self) -> torch.dtype:
        return self.pos_embedding.dtype

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels ``[B, 3, S, S]`` -> penultimate-block features ``[B, 1 + (S/p)^2, C]``."""
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_embedding.expand(x.shape[0], -1, -1), x], dim=1)
        return self.transformer(self.pre_norm(x + self.pos_embedding))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Wan's preprocessing: ``[B, 3, H, W]`` in [0, 1] -> bicubic stretch to ``S x S`` (no crop,
        no antialias), CLIP mean/std normalisation; fp32, on the model's device."""
        if (not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3
                or not images.is_floating_point() or images.numel() == 0):
            raise ValueError("images must be a non-empty float tensor [B, 3, H, W] in [0, 1], got "
                             + (f"shape {tuple(images.shape)} {images.dtype}"
                                if isinstance(images, torch.Tensor) else type(images).__name__))
        lo, hi = images.aminmax()
        if not (lo >= -1e-3 and hi <= 1 + 1e-3):  # also catches NaN
            raise ValueError(f"images must be in [0, 1], got values in [{lo.item():.3g}, "
                             f"{hi.item():.3g}] (frames in [-1, 1] need x * 0.5 + 0.5 first)")
        size = self.cfg.image_size
        x = F.interpolate(images.to(self.pos_embedding.device, torch.float32), size=(size, size),
                          mode="bicubic", align_corners=False)
        mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
        return (x - mean) / std

    @torch.no_grad()
    @once
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] -> ``[B, 257, 1280]`` in the model's dtype."""
        return self(self.preprocess(images).to(self.dtype))


# ---------------------------------------------------------------------------------------------
# Loading

_HF_TO_OFFICIAL = [  # HF CLIPVisionModel names -> official VisionTransformer names
    (r"^vision_model\.embeddings\.patch_embedding\.", "patch_embedding."),
    (r"^vision_model\.pre_layrnorm\.", "pre_norm."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"transformer.\1.norm1."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"transformer.\1.norm2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"transformer.\1.attn.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.", r"transformer.\1.mlp.0."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.", r"transformer.\1.mlp.2."),
]
_HF_QKV = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)$")


def _from_hf(ckpt: Checkpoint) -> Checkpoint:
    """HF names -> official: fuse ``q/k/v_proj`` into ``to_qkv``, reshape the embeddings, drop
    ``position_ids``, ``post_layernorm``, ``visual_projection`` and any text tower."""
    infos: dict[str, TensorInfo] = {}
    readers = {}

    def derive(name, sources, shape, combine):
        infos[name] = TensorInfo(ckpt[sources[0]].dtype, shape, ckpt[sources[0]].file)
        readers[name] = lambda: combine(*(ckpt.load(s) for s in sources))

    for key, info in ckpt.items():
        if key == "vision_model.embeddings.class_embedding":
            derive("cls_embedding", [key], (1, 1, *info.shape), lambda t: t.view(1, 1, -1))
        elif key == "vision_model.embeddings.position_embedding.weight":
            derive("pos_embedding", [key], (1, *info.shape), lambda t: t[None])
        elif m := _HF_QKV.match(key):
            sources = [key.replace(".q_proj.", f".{p}_proj.") for p in "qkv"]
            missing = [s for s in sources if s not in ckpt]
            if missing:
                raise CheckpointError(f"{ckpt.description}: {missing[0]!r} is missing")
            derive(f"transformer.{m[1]}.attn.to_qkv.{m[2]}", sources,
                   (3 * info.shape[0], *info.shape[1:]), lambda *t: torch.cat(t))
        for pattern, replacement in _HF_TO_OFFICIAL:
            new, n = re.subn(pattern, replacement, key)
            if n:
                derive(new, [key], info.shape, lambda t: t)
                break
    return Checkpoint(infos, readers, ckpt.description, ckpt.metadata)


def _num_heads(path: Path) -> int:
    config = path / "config.json" if path.is_dir() else None
    if config is not None and config.is_file():
        try:
            return int(json.loads(config.read_text()).get("num_attention_heads", 16))
        except (ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{config}: unreadable CLIP vision config: {e}") from e
    return 16


def load_clip_vision(path: str | os.PathLike, *, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> CLIPVisionEncoder:
    """Load the Wan CLIP vision tower from a ComfyUI / diffusers / official file or folder.

    ``dtype`` defaults to fp16 on accelerators (as the official code runs it) and fp32 on CPU;
    ``device`` defaults to CPU.
    """
    path = Path(path)
    device = torch.device(device or "cpu")
    dtype = dtype or (torch.float32 if device.type == "cpu" else torch.float16)
    ckpt = open_checkpoint(path, stem="model" if path.is_dir() else None)
    if any(k.startswith("vision_model.") for k in ckpt):
        ckpt = _from_hf(ckpt)
    elif any(k.startswith("visual.") for k in ckpt):
        ckpt = ckpt.renamed(lambda k: k[len("visual."):] if k.startswith("visual.") else None)
    else:
        raise CheckpointError(f"{ckpt.description}: not a CLIP vision checkpoint: expected "
                              f"'vision_model.*' (ComfyUI / transformers) or 'visual.*' (official) "
                              f"tensors, first key is {next(iter(ckpt), None)!r}")
    for key in ("patch_embedding.weight", "pos_embedding", "transformer.0.mlp.0.weight"):
        if key not in ckpt:
            raise CheckpointError(f"{ckpt.description}: CLIP vision tensor {key!r} is missing")
    dim, _, patch, _ = ckpt["patch_embedding.weight"].shape
    grid = round((ckpt["pos_embedding"].shape[1] - 1) ** 0.5)
    depth = len({k.split(".")[1] for k in ckpt if k.startswith("transformer.")})
    cfg = CLIPVisionConfig(image_size=grid * patch, patch_size=patch, dim=dim,
                           num_heads=_num_heads(path), num_layers=depth - 1,
                           mlp_dim=ckpt["transformer.0.mlp.0.weight"].shape[0])
    unused = ("head", "post_norm.", f"transformer.{depth - 1}.")
    ckpt = ckpt.renamed(lambda k: None if k.startswith(unused) else k)
    with torch.device("meta"):
        model = CLIPVisionEncoder(cfg)
    return assign_weights(model, ckpt, what="CLIP vision", dtype=dtype, device=device)
