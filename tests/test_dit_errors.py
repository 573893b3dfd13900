"""Bad checkpoints and bad inputs give a clear error that names the file / argument and the key."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from wanrt.kernels import platforms
from wanrt.wan_core import CheckpointError, load_dit


@pytest.fixture(scope="module")
def t2v(dit_models):
    return dit_models / "diffusion_models" / "wan2.1_t2v_1.3B_fp16.safetensors"


def edited(t2v, tmp_path, edit):
    """A copy of the tiny T2V file with ``edit(state_dict)`` applied."""
    sd = load_file(t2v)
    edit(sd)
    path = tmp_path / "edited.safetensors"
    save_file(sd, path)
    return path


def test_truncated_file(t2v, tmp_path):
    path = tmp_path / "wan.safetensors"
    path.write_bytes(t2v.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=rf"{path}: file is truncated: tensor '.*'"):
        load_dit(path, device="cpu")


def test_corrupt_header(tmp_path):
    path = tmp_path / "wan.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match=rf"{path}: corrupt safetensors header"):
        load_dit(path, device="cpu")


@pytest.mark.parametrize("keys, component", [
    (["encoder.conv1.weight", "decoder.middle.0.residual.0.gamma"], "VAE"),
    (["decoder.conv_in.weight", "post_quant_conv.weight"], "VAE"),
    (["shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight"], "text encoder"),
    (["token_embedding.weight", "blocks.0.attn.q.weight"], "text encoder"),
    (["vision_model.embeddings.patch_embedding.weight"], "CLIP vision")])
def test_other_components_are_recognised(tmp_path, keys, component):
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(2) for k in keys}, path)
    with pytest.raises(CheckpointError, match=rf"{path}: this looks like a {component}"):
        load_dit(path, device="cpu")


def test_missing_tensor(t2v, tmp_path):
    path = edited(t2v, tmp_path, lambda sd: sd.pop("blocks.1.ffn.2.bias"))
    with pytest.raises(CheckpointError, match=rf"{path}: .* 1 expected tensors are missing, "
                                              r"first 'blocks.1.ffn.2.bias'"):
        load_dit(path, device="cpu")


def test_extra_tensor(t2v, tmp_path):
    path = edited(t2v, tmp_path, lambda sd: sd.update({"blocks.0.ffn.3.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=rf"{path}: 1 unexpected tensors .* first "
                                              r"'blocks.0.ffn.3.weight'"):
        load_dit(path, device="cpu")


def test_wrong_shape(t2v, tmp_path):
    path = edited(t2v, tmp_path,
                  lambda sd: sd.update({"blocks.1.cross_attn.o.weight": torch.zeros(256, 128)}))
    with pytest.raises(CheckpointError, match=r"tensor 'blocks.1.cross_attn.o.weight' has shape "
                                              r"\(256, 128\), expected \(256, 256\)"):
        load_dit(path, device="cpu")


def test_unsupported_quantisation_format(dit_models, tmp_path):
    def to_int8(sd):
        sd["blocks.0.ffn.0.comfy_quant"] = torch.tensor(
            list(json.dumps({"format": "int8_tensorwise"}).encode()), dtype=torch.uint8)
    fp8_scaled = dit_models / "diffusion_models" / "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
    path = edited(fp8_scaled, tmp_path, to_int8)
    with pytest.raises(CheckpointError, match="'blocks.0.ffn.0' uses quantisation format "
                                              "'int8_tensorwise'"):
        load_dit(path, device="cpu")


def test_pth_with_code_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"weights": torch.zeros(2), "hook": shutil.rmtree}, path)
    with pytest.raises(CheckpointError, match=rf"{path}: cannot read as a PyTorch checkpoint"):
        load_dit(path, device="cpu")


def test_keep_fp8_without_platform_fp8(dit_models, monkeypatch):
    monkeypatch.setenv("WANRT_PLATFORM", "mps")
    platforms._platform_for.cache_clear()
    try:
        path = dit_models / "diffusion_models" / "wan2.1_t2v_14B_fp8_e4m3fn.safetensors"
        with pytest.raises(CheckpointError, match=r"holds float8 weights .* the mps platform has "
                                                  r"no float8 dtype; load with keep_fp8=False"):
            load_dit(path, device="cpu", keep_fp8=True)
    finally:
        platforms._platform_for.cache_clear()


def test_a14b_root_folder_asks_for_one_expert(dit_models):
    with pytest.raises(CheckpointError, match=r"two experts .*high_noise_model/ and "
                                              r"low_noise_model/"):
        load_dit(dit_models / "official" / "Wan2.2-I2V-A14B", device="cpu")


def test_config_json_disagreeing_with_weights(dit_models, tmp_path):
    folder = tmp_path / "Wan2.1-T2V-1.3B"
    shutil.copytree(dit_models / "official" / "Wan2.1-T2V-1.3B", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "in_dim": 36}))
    with pytest.raises(CheckpointError, match=r"config.json: says in_dim=36 but the weights have "
                                              r"in_dim=16"):
        load_dit(folder, device="cpu")


def test_unknown_attention_backend(t2v):
    with pytest.raises(ValueError, match="unknown attention backend 'flash9'; available: .*sdpa"):
        load_dit(t2v, device="cpu", attention_backend="flash9")


@pytest.fixture(scope="module")
def i2v(dit_models):
    return load_dit(dit_models / "diffusion_models" / "wan2.1_i2v_480p_14B_fp16.safetensors",
                    dtype=torch.float32, device="cpu")


@pytest.fixture(scope="module")
def flf2v(dit_models):
    return load_dit(dit_models / "diffusion_models" / "wan2.1_flf2v_720p_14B_fp16.safetensors",
                    dtype=torch.float32, device="cpu")


X, Y, CTX = torch.zeros(1, 16, 2, 4, 4), torch.zeros(1, 20, 2, 4, 4), torch.zeros(1, 5, 64)
CLIP, T = torch.zeros(1, 5, 64), torch.tensor([10.0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=X, t=T, context=CTX, clip_fea=CLIP),
     r"this i2v-256d model takes x with 16 channels and y with 20 .*; got 16 channels in all"),
    (dict(x=X, t=T, context=CTX, y=Y),
     r"needs clip_fea \[1, N, 64\]; got None"),
    (dict(x=X, t=torch.zeros(1, 7), context=CTX, clip_fea=CLIP, y=Y),
     r"t must be \[1\] or, one per token, \[1, 8\]; got shape \(1, 7\)"),
    (dict(x=X, t=T, context=torch.zeros(1, 5, 4096), clip_fea=CLIP, y=Y),
     r"context must be \[1, L_text, 64\]"),
    (dict(x=torch.zeros(1, 16, 2, 5, 4), t=T, context=CTX, clip_fea=CLIP, y=Y),
     r"y must be \[1, C_y, 2, 5, 4\] like x, got shape \(1, 20, 2, 4, 4\)"),
    (dict(x=torch.zeros(1, 16, 2, 5, 4), t=T, context=CTX, clip_fea=CLIP,
          y=torch.zeros(1, 20, 2, 5, 4)),
     r"must be multiples of the patch size"),
])
def test_bad_forward_inputs(i2v, kwargs, message):
    with pytest.raises(ValueError, match=message):
        i2v(kwargs.pop("x"), kwargs.pop("t"), kwargs.pop("context"), **kwargs)


def test_flf2v_needs_first_and_last_image_tokens(flf2v):
    with pytest.raises(ValueError, match=r"flf2v-256d model needs clip_fea \[1, 10, 64\] "
                                         r"\(first\|\|last image tokens\); got \(1, 5, 64\)"):
        flf2v(X, T, CTX, clip_fea=CLIP, y=Y)
