"""CLIP vision tower: parity with transformers' CLIPVisionModel (``hidden_states[-2]``, which is
Wan's ``use_31_block`` output), Wan's preprocessing, every file layout, bad input.

Tiny model (dim 64, 3 blocks of which 2 run, 28 px images), CPU, fp32. Tolerance 1e-5: same fp32
weights and pixels, only kernel summation order may differ.
"""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from wanrt.wan_core import CheckpointError, load_clip_vision
from wanrt.wan_core.clip_vision import CLIPVisionConfig, CLIPVisionEncoder
from wanrt.wan_core.tiny import clip_vision as tiny
from wanrt.wan_core.tiny.text_encoder import DIFFUSERS_PIPELINES

TOL = 1e-5
DIFFUSERS = f"diffusers/{DIFFUSERS_PIPELINES[0]}"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    tiny.write(out, seed=0)
    return out


@pytest.fixture
def images():
    return torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))


def test_matches_transformers_penultimate_hidden_state(tiny_dir, images):
    from transformers import CLIPVisionModel

    clip = load_clip_vision(tiny_dir / "clip_vision/clip_vision_h.safetensors")
    hf = CLIPVisionModel.from_pretrained(tiny_dir / DIFFUSERS / "image_encoder",
                                                       dtype=torch.float32).eval()
    pixels = clip.preprocess(images)
    with torch.no_grad():
        ref = hf(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    out = clip.encode(images)
    assert out.shape == (2, 5, 64) and clip.cfg.num_layers == tiny.CONFIG.num_layers - 1
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)


def test_preprocessing_is_wans(tiny_dir, images):
    """Official ``CLIPModel.visual``: frames in [-1, 1] -> bicubic to 224^2 (here 28^2), no crop,
    ``x * 0.5 + 0.5``, CLIP mean/std. We resize the [0, 1] images directly (bicubic is linear);
    rounding of the [-1, 1] round trip, amplified by 1/std, stays below 1e-5."""
    frames = images * 2 - 1
    x = F.interpolate(frames, size=(28, 28), mode="bicubic", align_corners=False).mul(0.5).add(0.5)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    clip = load_clip_vision(tiny_dir / "clip_vision/clip_vision_h.safetensors")
    torch.testing.assert_close(clip.preprocess(images), (x - mean) / std, atol=TOL, rtol=0)


def test_every_layout_loads_the_same_tower(tiny_dir, tmp_path, images):
    """ComfyUI fp16 file, diffusers folder (fp32) and the official full-CLIP .pth (fused qkv,
    ``textual.*``) hold the same fp16-exact weights: outputs must be identical."""
    reference = load_clip_vision(tiny_dir / "clip_vision/clip_vision_h.safetensors").encode(images)
    for path in (tiny_dir / DIFFUSERS / "image_encoder",
                 tiny_dir / "official/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"):
        assert torch.equal(load_clip_vision(path).encode(images), reference), path


def test_bad_images_are_rejected(tiny_dir):
    clip = load_clip_vision(tiny_dir / "clip_vision/clip_vision_h.safetensors")
    bad = {"3-D": torch.rand(3, 28, 28), "1 channel": torch.rand(1, 1, 28, 28),
           "integer": torch.randint(0, 255, (1, 3, 28, 28)), "empty": torch.rand(0, 3, 28, 28)}
    for name, x in bad.items():
        with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
            clip.encode(x)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        clip.encode(torch.rand(1, 3, 28, 28) * 2 - 1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        clip.encode(torch.full((1, 3, 28, 28), float("nan")))


def test_not_a_clip_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.block.0.layer.0.layer_norm.weight": torch.ones(4)}, path)
    with pytest.raises(CheckpointError, match="not a CLIP vision checkpoint"):
        load_clip_vision(path)


def test_full_size_config_is_vit_h_minus_last_block():
    """632,076,800 visual params (official count) minus head, post-norm and the unused 32nd block."""
    with torch.device("meta"):
        model = CLIPVisionEncoder(CLIPVisionConfig())
    block = sum(p.numel() for p in model.transformer[0].parameters())
    head_and_post_norm = 1280 * 1024 + 2 * 1280
    assert sum(p.numel() for p in model.parameters()) + block + head_and_post_norm == 632_076_800
