"""The DiT configuration, detected from tensor names and shapes (never from file names).

Official names are expected (``formats`` renames diffusers keys first). What the weights say:

====================  ============================================================
``dim``, ``in_dim``   ``patch_embedding.weight`` ``[dim, in_dim, 1, 2, 2]``
``out_dim``           ``head.head.weight.shape[0] // 4``
``ffn_dim``           ``blocks.0.ffn.0.weight.shape[0]``
``num_layers``        number of distinct ``blocks.<n>.``
``num_heads``         ``config.json`` if there is one, else ``dim // 128`` (every release)
``text_dim``          ``text_embedding.0.weight.shape[1]`` (4096 = UMT5-XXL)
``image_dim``         ``img_emb.proj.0.weight`` (CLIP width 1280; Wan 2.1 I2V / FLF2V only)
``image_tokens``      ``img_emb.emb_pos.shape[1]`` (FLF2V: 2 x 257 = 514)
====================  ============================================================
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..checkpoint import Checkpoint, CheckpointError

_SIZE_BY_DIM = {1536: "1.3B", 3072: "5B", 5120: "14B"}

# Tensors of Wan-family models this runtime does not implement: key prefix -> model name.
UNSUPPORTED = {
    "vace_": "Wan VACE",
    "control_adapter.": "Wan Fun camera-control",
    "ref_conv.": "Wan Fun reference",
    "face_adapter.": "Wan 2.2 Animate",
    "motion_encoder.": "Wan 2.2 Animate",
    "pose_patch_embedding.": "Wan 2.2 Animate",
    "casual_audio_encoder.": "Wan 2.2 S2V",
    "audio_injector.": "Wan 2.2 S2V",
    "audio_proj.": "HuMo",
    "patch_embedding_mask.": "SCAIL",
    "patch_embedding_pose.": "SCAIL",
    "patch_embedding_global.": "WanDancer",
}


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of one Wan DiT (one expert, for the A14B pairs)."""

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int
    out_dim: int
    text_dim: int = 4096
    freq_dim: int = 256
    image_dim: int | None = None  # CLIP feature width: the model has the image cross-attention
    image_tokens: int | None = None  # FLF2V: learned position embedding over first||last tokens
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def y_dim(self) -> int:
        """Channels of the conditioning ``y`` concatenated to the noise (I2V: 4 mask + 16
        image latent)."""
        return self.in_dim - self.out_dim

    @property
    def model_type(self) -> str:
        """``t2v``, ``i2v``, ``flf2v`` or ``ti2v``."""
        if self.image_tokens:
            return "flf2v"
        if self.image_dim or self.y_dim > 0:
            return "i2v"
        return "ti2v" if self.out_dim == 48 else "t2v"

    @property
    def variant(self) -> str:
        """E.g. ``t2v-1.3B``, ``i2v-14B``, ``ti2v-5B``, ``i2v-A14B`` (I2V without CLIP branch).

        T2V-14B and a Wan 2.2 T2V-A14B expert have identical weights layouts: both are
        ``t2v-14B``. Unreleased widths are named by their dim (``t2v-256d``).
        """
        size = _SIZE_BY_DIM.get(self.dim, f"{self.dim}d")
        if self.model_type == "i2v" and not self.image_dim:
            size = "A" + size
        return f"{self.model_type}-{size}"


def _shape(ckpt: Checkpoint, key: str, required: bool = True) -> tuple[int, ...] | None:
    if key in ckpt:
        return ckpt[key].shape
    if required:
        raise CheckpointError(f"{ckpt.description}: not a complete Wan DiT checkpoint: "
                              f"tensor {key!r} is missing")
    return None


def detect_config(ckpt: Checkpoint, config_json: Path | None = None) -> DiTConfig:
    """Read the architecture off ``ckpt`` (official names); cross-check a ``config.json``."""
    for key in ckpt:
        for prefix, name in UNSUPPORTED.items():
            if key.startswith(prefix):
                raise CheckpointError(f"{ckpt.description}: this is a {name} checkpoint (tensor "
                                      f"{key!r}); it is not supported, only the Wan 2.1/2.2 "
                                      f"T2V, I2V, FLF2V and TI2V DiTs are")
    patch_weight = _shape(ckpt, "patch_embedding.weight")
    if len(patch_weight) != 5:
        raise CheckpointError(f"{ckpt.description}: tensor 'patch_embedding.weight' has shape "
                              f"{patch_weight}, expected [dim, in_dim, 1, 2, 2]")
    dim, in_dim, *patch = patch_weight
    blocks = {int(m.group(1)) for k in ckpt if (m := re.match(r"blocks\.(\d+)\.", k))}
    image_proj = _shape(ckpt, "img_emb.proj.0.weight", required=False)
    image_pos = _shape(ckpt, "img_emb.emb_pos", required=False)
    config = DiTConfig(
        dim=dim,
        in_dim=in_dim,
        out_dim=_shape(ckpt, "head.head.weight")[0] // math.prod(patch),
        ffn_dim=_shape(ckpt, "blocks.0.ffn.0.weight")[0],
        num_layers=max(blocks) + 1,
        num_heads=max(dim // 128, 1),
        text_dim=_shape(ckpt, "text_embedding.0.weight")[1],
        freq_dim=_shape(ckpt, "time_embedding.0.weight")[1],
        image_dim=image_proj[0] if image_proj else None,
        image_tokens=image_pos[1] if image_pos else None,
        patch_size=tuple(patch),
    )
    if config_json is not None and config_json.is_file():
        config = _apply_config_json(config, config_json)
    if config.dim % config.num_heads or config.head_dim % 2:
        raise CheckpointError(f"{ckpt.description}: dim {config.dim} does not split into "
                              f"{config.num_heads} heads of an even size")
    if (config.in_dim, config.out_dim) not in ((16, 16), (36, 16), (48, 48)):
        raise CheckpointError(f"{ckpt.description}: {config.in_dim} input / {config.out_dim} "
                              f"output channels is not a Wan 2.1/2.2 layout (expected 16/16 T2V, "
                              f"36/16 I2V or FLF2V, 48/48 TI2V)")
    return config


# config.json field -> DiTConfig field, for the official (WanModel) and diffusers layouts.
_JSON_FIELDS = {
    "dim": "dim", "ffn_dim": "ffn_dim", "num_layers": "num_layers", "in_dim": "in_dim",
    "out_dim": "out_dim", "text_dim": "text_dim", "freq_dim": "freq_dim",
    "in_channels": "in_dim", "out_channels": "out_dim", "image_dim": "image_dim",
    "pos_embed_seq_len": "image_tokens",
}


def _apply_config_json(config: DiTConfig, path: Path) -> DiTConfig:
    """Take ``num_heads`` from the json; every other field it states must match the weights."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable config.json: {e}") from e
    if "num_attention_heads" in data and "attention_head_dim" in data:  # diffusers
        data["dim"] = data["num_attention_heads"] * data["attention_head_dim"]
    for field, attr in _JSON_FIELDS.items():
        if data.get(field) is not None and data[field] != getattr(config, attr):
            raise CheckpointError(f"{path}: says {field}={data[field]} but the weights have "
                                  f"{attr}={getattr(config, attr)}")
    heads = data.get("num_heads", data.get("num_attention_heads"))
    if isinstance(heads, int) and heads > 0:
        config = replace(config, num_heads=heads)
    return config
