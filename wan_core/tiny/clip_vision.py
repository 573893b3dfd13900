"""Tiny random CLIP vision tower (Wan 2.1 I2V / FLF2V image encoder) in its real file layouts.

Sizes: image 28, patch 14 (4 patches + CLS = 5 tokens), dim 64, 16 heads (the loader's default
head count, as no head count is stored in single files), MLP 256, 3 blocks (2 run), projection 32.
Weights are fp16 values, so the fp16 ComfyUI file and the fp32 official / diffusers files hold the
same numbers.

Writes ``clip_vision/clip_vision_h.safetensors`` (transformers ``CLIPVisionModelWithProjection``
names, fp16, with ``position_ids``), ``diffusers/<pipeline>/image_encoder/`` (``CLIPVisionModel``
folder, fp32, in each of the tiny DiT's diffusers pipelines)
and ``official/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (``visual.*`` with fused
``to_qkv``, plus a stub ``textual.*`` and ``log_scale`` as in the full XLM-R CLIP file).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..clip_vision import CLIPVisionConfig
from .text_encoder import DIFFUSERS_PIPELINES

CONFIG = CLIPVisionConfig(image_size=28, patch_size=14, dim=64, num_heads=16, mlp_dim=256,
                          num_layers=3)  # here: blocks stored; Wan runs num_layers - 1
PROJECTION_DIM = 32


def official_state_dict(seed: int, cfg: CLIPVisionConfig = CONFIG) -> dict[str, torch.Tensor]:
    """Random fp32 weights (fp16-exact) with the official ``visual.*`` names."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, std=1.0, mean=0.0):
        return (mean + std * torch.randn(*shape, generator=g)).half().float()

    c, tokens = cfg.dim, (cfg.image_size // cfg.patch_size) ** 2 + 1
    sd = {"visual.patch_embedding.weight": rand(c, 3, cfg.patch_size, cfg.patch_size, std=0.05),
          "visual.cls_embedding": rand(1, 1, c, std=c ** -0.5),
          "visual.pos_embedding": rand(1, tokens, c, std=c ** -0.5),
          "visual.pre_norm.weight": rand(c, std=0.1, mean=1.0), "visual.pre_norm.bias": rand(c, std=0.1)}
    for i in range(cfg.num_layers):
        p = f"visual.transformer.{i}."
        sd |= {p + "norm1.weight": rand(c, std=0.1, mean=1.0), p + "norm1.bias": rand(c, std=0.1),
               p + "attn.to_qkv.weight": rand(3 * c, c, std=c ** -0.5),
               p + "attn.to_qkv.bias": rand(3 * c, std=0.1),
               p + "attn.proj.weight": rand(c, c, std=c ** -0.5), p + "attn.proj.bias": rand(c, std=0.1),
               p + "norm2.weight": rand(c, std=0.1, mean=1.0), p + "norm2.bias": rand(c, std=0.1),
               p + "mlp.0.weight": rand(cfg.mlp_dim, c, std=c ** -0.5),
               p + "mlp.0.bias": rand(cfg.mlp_dim, std=0.1),
               p + "mlp.2.weight": rand(c, cfg.mlp_dim, std=cfg.mlp_dim ** -0.5),
               p + "mlp.2.bias": rand(c, std=0.1)}
    sd |= {"visual.post_norm.weight": rand(c, std=0.1, mean=1.0), "visual.post_norm.bias": rand(c),
           "visual.head": rand(c, PROJECTION_DIM, std=c ** -0.5)}
    return sd


_OFFICIAL_TO_HF = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj",
                   "mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2"}


def hf_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official names -> transformers ``CLIPVisionModelWithProjection`` names (§6.3)."""
    hf = {}
    for key, t in official.items():
        name = key.removeprefix("visual.")
        if name == "patch_embedding.weight":
            hf["vision_model.embeddings.patch_embedding.weight"] = t
        elif name == "cls_embedding":
            hf["vision_model.embeddings.class_embedding"] = t.flatten()
        elif name == "pos_embedding":
            hf["vision_model.embeddings.position_embedding.weight"] = t[0]
            hf["vision_model.embeddings.position_ids"] = torch.arange(t.shape[1])[None]
        elif name.startswith(("pre_norm.", "post_norm.")):
            norm, param = name.split(".")
            hf[f"vision_model.{'pre_layrnorm' if norm == 'pre_norm' else 'post_layernorm'}.{param}"] = t
        elif name == "head":
            hf["visual_projection.weight"] = t.T.contiguous()
        else:
            _, i, rest = name.split(".", 2)
            module, param = rest.rsplit(".", 1)
            layer = f"vision_model.encoder.layers.{i}."
            if module == "attn.to_qkv":
                for proj, part in zip("qkv", t.chunk(3)):
                    hf[f"{layer}self_attn.{proj}_proj.{param}"] = part.contiguous()
            else:
                hf[f"{layer}{_OFFICIAL_TO_HF[module]}.{param}"] = t
    return hf


def hf_config(cfg: CLIPVisionConfig = CONFIG) -> dict:
    return {"architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model",
            "hidden_size": cfg.dim, "intermediate_size": cfg.mlp_dim,
            "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
            "image_size": cfg.image_size, "patch_size": cfg.patch_size,
            "projection_dim": PROJECTION_DIM, "hidden_act": "gelu", "layer_norm_eps": cfg.eps,
            "num_channels": 3, "torch_dtype": "float32"}


def write(outdir: Path, seed: int) -> list[Path]:
    outdir = Path(outdir)
    official = official_state_dict(seed)
    hf = hf_state_dict(official)
    comfy = outdir / "clip_vision" / "clip_vision_h.safetensors"
    full_clip = outdir / "official" / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
    for p in (comfy, full_clip):
        p.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half() if v.is_floating_point() else v for k, v in hf.items()}, comfy)
    textual = {"textual.token_embedding.weight": torch.zeros(8, 16),
               "textual.head.0.weight": torch.zeros(16, 16), "log_scale": torch.tensor(4.6052)}
    torch.save(official | textual, full_clip)
    written = [comfy, full_clip]
    for pipeline in DIFFUSERS_PIPELINES:
        folder = outdir / "diffusers" / pipeline / "image_encoder"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(hf_config(), indent=1))
        save_file({k: v for k, v in hf.items() if not k.startswith("visual_projection")},
                  folder / "model.safetensors", metadata={"format": "pt"})
        written += [folder / "config.json", folder / "model.safetensors"]
    return written
