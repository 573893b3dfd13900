"""``load_text_encoder``: any UMT5-XXL encoder file -> :class:`TextEncoder`.

Layouts (weights are renamed to the official ``T5Encoder`` names, §5.4 of wan_formats.md):

- official ``models_t5_umt5-xxl-enc-bf16.pth`` and Kijai's safetensors: official names;
- ComfyUI ``umt5_xxl_*.safetensors``: HF names + ``spiece_model`` (the tokenizer), fp16 / bf16 /
  fp8 ``scaled_fp8`` + ``.scale_weight`` (dequantised on load); optional all-in-one prefix;
- HF transformers / diffusers ``text_encoder/`` folders: HF names, sharded or not.

Sizes come from shapes: vocab and width from the embedding, heads and buckets from a block's
relative-position table ``[buckets, heads]``, head width from ``q`` rows / heads, FFN width from
``fc1``, depth from the block count. So tiny test models load through the same code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..checkpoint import Checkpoint, CheckpointError, assign_weights, fp8_scales, open_checkpoint
from .model import TextEncoder, UMT5Config, UMT5Encoder
from .tokenizer import find_tokenizer

_HF_TO_OFFICIAL = [  # (pattern, replacement) applied in order to HF names
    (r"^(?:shared|encoder\.embed_tokens)\.", "token_embedding."),
    (r"^encoder\.final_layer_norm\.", "norm."),
    (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.", r"blocks.\1.norm1."),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.",
     r"blocks.\1.pos_embedding.embedding."),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.", r"blocks.\1.attn."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"blocks.\1.norm2."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.", r"blocks.\1.ffn.gate.0."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.", r"blocks.\1.ffn.fc1."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.", r"blocks.\1.ffn.fc2."),
]


def _hf_to_official(key: str) -> str:
    for pattern, replacement in _HF_TO_OFFICIAL:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return new
    return key


def to_official_names(ckpt: Checkpoint) -> Checkpoint:
    """HF / ComfyUI names -> official ones; drops a decoder, the LM head and the tied duplicate
    ``encoder.embed_tokens.weight``. Official names pass through."""
    if "shared.weight" not in ckpt and not any(k.startswith("encoder.block.") for k in ckpt):
        return ckpt
    drop = ("decoder.", "lm_head.") + (("encoder.embed_tokens.",) if "shared.weight" in ckpt else ())
    return ckpt.renamed(lambda k: None if k.startswith(drop) else _hf_to_official(k))


def detect_config(ckpt: Checkpoint) -> UMT5Config:
    """Sizes from tensor shapes (official names)."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in ckpt:
            raise CheckpointError(f"{ckpt.description}: not a UMT5 encoder checkpoint: tensor "
                                  f"{key!r} (HF: 'shared.weight', 'encoder.block.0...') is missing")
        return ckpt[key].shape

    vocab_size, dim = shape("token_embedding.weight")
    num_buckets, num_heads = shape("blocks.0.pos_embedding.embedding.weight")
    num_layers = len({k.split(".")[1] for k in ckpt if k.startswith("blocks.")})
    if num_layers > 1 and "blocks.1.pos_embedding.embedding.weight" not in ckpt:
        raise CheckpointError(f"{ckpt.description}: this is a T5 (one shared position-bias table), "
                              f"not UMT5 (one per block); Wan uses UMT5-XXL")
    return UMT5Config(vocab_size=vocab_size, dim=dim, num_heads=num_heads,
                      head_dim=shape("blocks.0.attn.q.weight")[0] // num_heads,
                      ffn_dim=shape("blocks.0.ffn.fc1.weight")[0], num_layers=num_layers,
                      num_buckets=num_buckets)


def _compute_dtype(dtype: torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if dtype not in (torch.bfloat16, torch.float32):
        raise ValueError(f"dtype must be torch.bfloat16 or torch.float32 (T5 activations overflow "
                         f"float16), got {dtype}")
    return dtype


def load_text_encoder(path: str | os.PathLike, *, tokenizer: str | os.PathLike | None = None,
                      dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> TextEncoder:
    """Load a UMT5 encoder file / folder and its tokenizer (see the module docstring).

    ``dtype`` is the compute and weight dtype: bf16 (default on accelerators) or fp32 (default on
    CPU); fp16 and fp8 files are converted. ``device`` defaults to CPU.
    """
    path = Path(path)
    device = torch.device(device or "cpu")
    dtype = _compute_dtype(dtype, device)
    ckpt = open_checkpoint(path, stem="model" if path.is_dir() else None)
    ckpt = ckpt.without_prefix("text_encoders.umt5xxl.transformer.")
    embedded = bytes(ckpt.load("spiece_model").numpy()) if "spiece_model" in ckpt else None
    ckpt = to_official_names(ckpt.renamed(lambda k: None if k == "spiece_model" else k))
    ckpt, scales = fp8_scales(ckpt)
    cfg = detect_config(ckpt)
    with torch.device("meta"):
        model = UMT5Encoder(cfg)
    assign_weights(model, ckpt, what="UMT5 encoder", dtype=dtype, device=device, scales=scales)
    return TextEncoder(model, find_tokenizer(path, tokenizer, embedded))
