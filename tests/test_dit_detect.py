"""Variant detection from tensor names and shapes, at the real sizes of every released DiT.

The tensor tables are written from the documented official layout (wan_formats.md §2.1); the
tensor and parameter counts are the ones measured on the official classes (§2.1, §9.1).
"""

import json
from pathlib import Path

import pytest
import torch

from wanrt.wan_core.checkpoint import Checkpoint, CheckpointError, TensorInfo
from wanrt.wan_core.dit import WanModel, detect_config


def official_shapes(dim, ffn, layers, in_dim, out_dim, clip=False, flf=False):
    """``{name: shape}`` of an official WanModel state dict."""
    s = {"patch_embedding.weight": (dim, in_dim, 1, 2, 2), "patch_embedding.bias": (dim,),
         "text_embedding.0.weight": (dim, 4096), "text_embedding.0.bias": (dim,),
         "text_embedding.2.weight": (dim, dim), "text_embedding.2.bias": (dim,),
         "time_embedding.0.weight": (dim, 256), "time_embedding.0.bias": (dim,),
         "time_embedding.2.weight": (dim, dim), "time_embedding.2.bias": (dim,),
         "time_projection.1.weight": (6 * dim, dim), "time_projection.1.bias": (6 * dim,),
         "head.modulation": (1, 2, dim), "head.head.weight": (4 * out_dim, dim),
         "head.head.bias": (4 * out_dim,)}
    for i in range(layers):
        b = f"blocks.{i}."
        s[b + "modulation"] = (1, 6, dim)
        for attn in ("self_attn", "cross_attn"):
            for p in ("q", "k", "v", "o"):
                s[f"{b}{attn}.{p}.weight"], s[f"{b}{attn}.{p}.bias"] = (dim, dim), (dim,)
            s[f"{b}{attn}.norm_q.weight"] = s[f"{b}{attn}.norm_k.weight"] = (dim,)
        s[b + "norm3.weight"] = s[b + "norm3.bias"] = (dim,)
        s[b + "ffn.0.weight"], s[b + "ffn.0.bias"] = (ffn, dim), (ffn,)
        s[b + "ffn.2.weight"], s[b + "ffn.2.bias"] = (dim, ffn), (dim,)
        if clip:
            for p in ("k_img", "v_img"):
                s[f"{b}cross_attn.{p}.weight"], s[f"{b}cross_attn.{p}.bias"] = (dim, dim), (dim,)
            s[b + "cross_attn.norm_k_img.weight"] = (dim,)
    if clip:
        s.update({"img_emb.proj.0.weight": (1280,), "img_emb.proj.0.bias": (1280,),
                  "img_emb.proj.1.weight": (1280, 1280), "img_emb.proj.1.bias": (1280,),
                  "img_emb.proj.3.weight": (dim, 1280), "img_emb.proj.3.bias": (dim,),
                  "img_emb.proj.4.weight": (dim,), "img_emb.proj.4.bias": (dim,)})
    if flf:
        s["img_emb.emb_pos"] = (1, 514, 1280)
    return s


def fake_checkpoint(shapes, name="model.safetensors"):
    infos = {k: TensorInfo(torch.bfloat16, tuple(v), Path(name)) for k, v in shapes.items()}
    return Checkpoint(infos, {}, name)


# variant: (shape table, tensors, parameters, heads)
RELEASED = {
    "t2v-1.3B": (official_shapes(1536, 8960, 30, 16, 16), 825, 1_418_996_800, 12),
    "t2v-14B": (official_shapes(5120, 13824, 40, 16, 16), 1095, 14_288_491_584, 40),
    "i2v-14B": (official_shapes(5120, 13824, 40, 36, 16, clip=True), 1303, 16_394_878_784, 40),
    "flf2v-14B": (official_shapes(5120, 13824, 40, 36, 16, clip=True, flf=True), 1304,
                  16_395_536_704, 40),
    "ti2v-5B": (official_shapes(3072, 14336, 30, 48, 48), 825, 4_999_787_712, 24),
    "i2v-A14B": (official_shapes(5120, 13824, 40, 36, 16), 1095, 14_288_901_184, 40),
}


@pytest.mark.parametrize("variant", list(RELEASED))
def test_detects_every_released_variant(variant):
    shapes, tensors, params, heads = RELEASED[variant]
    assert len(shapes) == tensors
    config = detect_config(fake_checkpoint(shapes))
    assert config.variant == variant
    assert config.num_heads == heads and config.head_dim == 128
    assert config.y_dim == {"i2v": 20, "flf2v": 20}.get(config.model_type, 0)
    with torch.device("meta"):
        model = WanModel(config)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    assert sum(p.numel() for p in model.parameters()) == params


def test_config_json_sets_heads_and_must_agree_with_the_weights(tmp_path):
    shapes = RELEASED["t2v-1.3B"][0]
    (tmp_path / "config.json").write_text(json.dumps({"dim": 1536, "num_heads": 24}))
    assert detect_config(fake_checkpoint(shapes), tmp_path / "config.json").num_heads == 24
    (tmp_path / "config.json").write_text(json.dumps({"dim": 1536, "num_layers": 40}))
    with pytest.raises(CheckpointError, match=r"config.json: says num_layers=40 but the weights "
                                              r"have num_layers=30"):
        detect_config(fake_checkpoint(shapes), tmp_path / "config.json")


@pytest.mark.parametrize("key, name", [
    ("vace_patch_embedding.weight", "VACE"), ("control_adapter.conv.weight", "Fun camera"),
    ("face_adapter.fuser_blocks.0.k_norm.weight", "Animate"),
    ("casual_audio_encoder.encoder.final_linear.weight", "S2V"),
    ("audio_proj.audio_proj_glob_1.layer.bias", "HuMo")])
def test_unsupported_wan_variants_are_named(key, name):
    shapes = {**RELEASED["t2v-14B"][0], key: (8,)}
    message = rf"model.safetensors: this is a .*{name}.* checkpoint \(tensor '{key}'\); it is not"
    with pytest.raises(CheckpointError, match=message):
        detect_config(fake_checkpoint(shapes))


def test_unknown_channel_layout_is_rejected():
    shapes = official_shapes(1536, 8960, 2, 20, 16)
    with pytest.raises(CheckpointError, match="20 input / 16 output channels is not a Wan"):
        detect_config(fake_checkpoint(shapes))


def test_missing_core_tensor_is_named():
    shapes = dict(RELEASED["t2v-1.3B"][0])
    del shapes["head.head.weight"]
    with pytest.raises(CheckpointError, match="tensor 'head.head.weight' is missing"):
        detect_config(fake_checkpoint(shapes))
