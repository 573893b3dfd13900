"""Wan 2.1 / 2.2 VAE: parity with the official code and diffusers, every file layout, bad input.

All on CPU in float32 with the tiny random VAEs of ``make-tiny`` (2.1: dim 8; 2.2: dim 16 /
decoder 32; real latent widths 16 / 48). Tolerance 1e-5 abs + rel everywhere: both sides run the
same float32 math; only the conv summation order differs (our spatial padding is inside the conv,
the temporal history is assembled differently). Measured: ≤ 1.2e-6.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from reference import official_module
from wanrt.wan_core import CheckpointError, load_vae
from wanrt.wan_core.tiny.vae import TINY_VAE21, TINY_VAE22, write

TOL = dict(atol=1e-5, rtol=1e-5)
# version → (tiny config, official module, pixel size of the test video, frames)
CASES = {"2.1": (TINY_VAE21, "modules/vae2_1", 16, 9), "2.2": (TINY_VAE22, "modules/vae2_2", 32, 5)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_vae")
    write(root, seed=0)
    return root


def paths(root, version):
    comfy = {"2.1": "wan_2.1_vae.safetensors", "2.2": "wan2.2_vae.safetensors"}[version]
    return {"official": root / "official" / f"Wan{version}_VAE.pth",
            "comfyui": root / "vae" / comfy,
            "diffusers": root / "diffusers" / f"Wan{version}-VAE"}


def video(size, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, size, size, generator=g) * 2 - 1


def official_wrapper(monkeypatch, version, pth):
    """The official ``Wan2_1_VAE`` / ``Wan2_2_VAE`` wrapper (its latent statistics, normalisation
    and clamp) around the official ``WanVAE_`` built at the tiny widths."""
    config, module_name, _, _ = CASES[version]
    module = official_module(module_name)

    def tiny_video_vae(pretrained_path, z_dim, **_):
        widths = dict(dim=config.dim, z_dim=z_dim)
        if version == "2.2":
            widths["dec_dim"] = config.dec_dim
        model = module.WanVAE_(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                               temperal_downsample=[False, True, True], **widths)
        model.load_state_dict(torch.load(pretrained_path, weights_only=True))
        return model

    monkeypatch.setattr(module, "_video_vae", tiny_video_vae)
    wrapper = module.Wan2_1_VAE if version == "2.1" else module.Wan2_2_VAE
    return wrapper(vae_pth=str(pth), dtype=torch.float32, device="cpu")


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_matches_official_wrapper(tiny, monkeypatch, version):
    _, _, size, frames = CASES[version]
    ours = load_vae(paths(tiny, version)["official"])
    ref = official_wrapper(monkeypatch, version, paths(tiny, version)["official"])
    x = video(size, frames)
    with warnings.catch_warnings():   # torch.cuda.amp.autocast on a CPU-only machine
        warnings.simplefilter("ignore")
        ref_latents = ref.encode([x[0]])[0][None]
        latents = torch.randn(ref_latents.shape, generator=torch.Generator().manual_seed(1))
        ref_video = ref.decode([latents[0]])[0][None]
    encoded = ours.encode(x)
    s, z = ours.spatial_compression, ours.z_dim
    assert encoded.shape == (1, z, (frames - 1) // 4 + 1, size // s, size // s)
    torch.testing.assert_close(encoded, ref_latents, **TOL)
    decoded = ours.decode(latents)
    assert decoded.shape == x.shape and decoded.dtype == torch.float32
    torch.testing.assert_close(decoded, ref_video, **TOL)
    assert decoded.abs().max() <= 1


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_matches_diffusers(tiny, version):
    from diffusers import AutoencoderKLWan

    _, _, size, frames = CASES[version]
    folder = paths(tiny, version)["diffusers"]
    ref = AutoencoderKLWan.from_pretrained(folder / "vae").eval()
    ours = load_vae(folder)
    mean = torch.tensor(ref.config.latents_mean).view(1, -1, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(ref.config.latents_std).view(1, -1, 1, 1, 1)
    x = video(size, frames, seed=2)
    with torch.no_grad():   # diffusers pipelines normalise the latents outside the VAE
        ref_latents = (ref.encode(x).latent_dist.mode() - mean) * inv_std
        latents = torch.randn(ref_latents.shape, generator=torch.Generator().manual_seed(3))
        ref_video = ref.decode(latents / inv_std + mean).sample
    torch.testing.assert_close(ours.encode(x), ref_latents, **TOL)
    torch.testing.assert_close(ours.decode(latents), ref_video, **TOL)


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_every_layout_loads_the_same_weights(tiny, version):
    p = paths(tiny, version)
    sources = [p["official"], p["comfyui"], p["diffusers"], p["diffusers"] / "vae",
               p["diffusers"] / "vae" / "diffusion_pytorch_model.safetensors"]
    loaded = [load_vae(src, dtype=torch.float32) for src in sources]
    reference = loaded[0].state_dict()
    assert len(reference) == (194 if version == "2.1" else 196)
    for src, vae in zip(sources, loaded):
        assert (vae.version, vae.z_dim, vae.spatial_compression, vae.temporal_compression) == \
            (version, 16 if version == "2.1" else 48, 8 if version == "2.1" else 16, 4), src
        sd = vae.state_dict()
        assert sd.keys() == reference.keys(), src
        assert all(torch.equal(sd[k], reference[k]) for k in reference), src
    assert load_vae(p["comfyui"]).conv2.weight.dtype == torch.bfloat16   # dtype=None: as stored


def test_all_in_one_file_with_vae_prefix(tiny, tmp_path):
    sd = load_file(paths(tiny, "2.1")["comfyui"])
    bundle = {f"vae.{k}": v for k, v in sd.items()}
    bundle["model.diffusion_model.patch_embedding.weight"] = torch.zeros(4, 16, 1, 2, 2)
    save_file(bundle, tmp_path / "all_in_one.safetensors")
    vae = load_vae(tmp_path / "all_in_one.safetensors")
    assert vae.version == "2.1"
    assert torch.equal(vae.conv2.weight, sd["conv2.weight"])


@pytest.mark.parametrize("keys, looks_like", [
    (["patch_embedding.weight", "blocks.0.self_attn.q.weight", "head.modulation"], "DiT"),
    (["model.diffusion_model.blocks.0.self_attn.q.weight"], "DiT"),
    (["shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight", "spiece_model"],
     "text-encoder"),
    (["token_embedding.weight", "blocks.0.attn.q.weight"], "text-encoder"),
])
def test_other_models_are_named(tmp_path, keys, looks_like):
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(2) for k in keys}, path)
    with pytest.raises(CheckpointError, match=f"not a Wan VAE checkpoint; it looks like .*{looks_like}"):
        load_vae(path)


def test_incomplete_vae_names_the_missing_tensor(tiny, tmp_path):
    sd = load_file(paths(tiny, "2.1")["comfyui"])
    del sd["decoder.middle.1.proj.weight"]
    save_file(sd, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="decoder.middle.1.proj.weight"):
        load_vae(tmp_path / "broken.safetensors")


def test_bad_input_is_rejected(tiny):
    vae = load_vae(paths(tiny, "2.1")["comfyui"], dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        vae.encode(torch.zeros(1, 4, 5, 16, 16))
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        vae.encode(torch.zeros(3, 5, 16, 16))
    with pytest.raises(ValueError, match="float tensor"):
        vae.encode(torch.zeros(1, 3, 5, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"4n\+1.*got 6; nearest valid: 5 or 9"):
        vae.encode(torch.zeros(1, 3, 6, 16, 16))
    with pytest.raises(ValueError, match="multiples of 8, got 20×16"):
        vae.encode(torch.zeros(1, 3, 5, 20, 16))
    with pytest.raises(ValueError, match=r"latents must be \[B, 16, T, H, W\]"):
        vae.decode(torch.zeros(1, 48, 2, 2, 2))
    with pytest.raises(ValueError, match="tile_overlap"):
        vae.decode(torch.zeros(1, 16, 2, 2, 2), tiled=True, tile_size=64, tile_overlap=64)
