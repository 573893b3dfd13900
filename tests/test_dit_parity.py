"""Our Wan DiT equals the official Wan 2.2 ``WanModel`` and diffusers' ``WanTransformer3DModel``.

CPU, fp32, tiny checkpoints from ``make-tiny``. Tolerance: relative L2 error 1e-5. Both sides do
the same fp32 math; the remaining differences are summation order and the official float64 RoPE
(ours: fp32 cos/sin tables), measured around 1e-7.
"""

import pytest
import torch
from safetensors.torch import load_file

from dit_helpers import rel_l2
from reference import official_module
from wanrt.wan_core import load_dit
from wanrt.wan_core.tiny import dit as tiny

TOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:CUDA is not available")  # official autocast


def official_model(config, state_dict, text_len, model_type):
    ref = official_module("modules/model").WanModel(
        model_type=model_type, text_len=text_len, in_dim=config.in_dim, dim=config.dim,
        ffn_dim=config.ffn_dim, freq_dim=config.freq_dim, text_dim=config.text_dim,
        out_dim=config.out_dim, num_heads=config.num_heads, num_layers=config.num_layers)
    ref.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return ref.eval()


def official_forward(ref, x, t, context, y=None):
    seq_len = x.shape[2] * (x.shape[3] // 2) * (x.shape[4] // 2)
    if t.dim() == 1:  # what the official forward does itself, which only works for batch 1
        t = t[:, None].expand(-1, seq_len)
    out = ref(list(x), t, list(context), seq_len, y=None if y is None else list(y))
    return torch.stack(out)


def inputs(config, batch=2, grid=(3, 6, 8), text_len=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.out_dim, *grid, generator=g)
    context = torch.randn(batch, text_len, config.text_dim, generator=g)
    y = torch.randn(batch, config.y_dim, *grid, generator=g) if config.y_dim else None
    return x, context, y


@torch.no_grad()
def test_t2v_matches_official(dit_models):
    path = dit_models / "official" / "Wan2.1-T2V-1.3B"
    ours = load_dit(path, dtype=torch.float32, device="cpu")
    ref = official_model(ours.config, load_file(path / "diffusion_pytorch_model.safetensors"),
                         text_len=7, model_type="t2v")
    x, context, _ = inputs(ours.config)
    t = torch.tensor([999.0, 250.0])
    assert rel_l2(ours(x, t, context), official_forward(ref, x, t, context)) < TOL


@torch.no_grad()
@pytest.mark.parametrize("per_token", [True, False], ids=["t-per-token", "t-per-sample"])
def test_ti2v_matches_official(dit_models, per_token):
    path = dit_models / "diffusion_models" / "wan2.2_ti2v_5B_fp16.safetensors"
    ours = load_dit(path, dtype=torch.float32, device="cpu")
    ref = official_model(ours.config, load_file(path), text_len=7, model_type="ti2v")
    x, context, _ = inputs(ours.config, grid=(3, 4, 6))
    t = torch.tensor([800.0, 300.0])
    if per_token:  # TI2V image-to-video: tokens of the first latent frame (2 x 3) are clean
        t = t[:, None].repeat(1, 3 * 2 * 3)
        t[:, :2 * 3] = 0
    assert rel_l2(ours(x, t, context), official_forward(ref, x, t, context)) < TOL


@torch.no_grad()
def test_i2v_a14b_matches_official(dit_models):
    path = dit_models / "official" / "Wan2.2-I2V-A14B" / "low_noise_model"
    ours = load_dit(path, dtype=torch.float32, device="cpu")
    assert ours.config.variant.startswith("i2v-A")
    ref = official_model(ours.config, load_file(path / "diffusion_pytorch_model.safetensors"),
                         text_len=7, model_type="i2v")
    x, context, y = inputs(ours.config)
    t = torch.tensor([900.0, 901.0])
    assert rel_l2(ours(x, t, context, y=y),
                  official_forward(ref, x, t, context, y=y)) < TOL


@torch.no_grad()
@pytest.mark.parametrize("folder", list(tiny.DIFFUSERS_FOLDERS))
def test_clip_variants_match_diffusers(dit_models, folder):
    """Wan 2.1 I2V (257 CLIP tokens) and FLF2V (first||last, 514) against diffusers, reading the
    same diffusers folder. diffusers takes FLF2V's two images as ``[2B, N, C]`` and views them as
    ``[B, 2N, C]`` itself; ours takes ``[B, 2N, C]`` directly. Its I2V attention splits the
    context at ``len - 512``, so the text is padded to 512 tokens as Wan's text encoder does."""
    from diffusers import WanTransformer3DModel

    path = dit_models / "diffusers" / folder
    ours = load_dit(path, dtype=torch.float32, device="cpu")
    ref = WanTransformer3DModel.from_config(
        WanTransformer3DModel.load_config(path / "transformer")).eval()
    ref.load_state_dict(load_file(path / "transformer" / "diffusion_pytorch_model.safetensors"),
                        strict=True)
    cfg = ours.config
    x, context, y = inputs(cfg, text_len=512)
    clip = torch.randn(2, cfg.image_tokens or tiny.IMAGE_TOKENS, cfg.image_dim)
    t = torch.tensor([700.0, 10.0])
    expected = ref(torch.cat([x, y], 1), t, context,
                   encoder_hidden_states_image=clip.reshape(-1, tiny.IMAGE_TOKENS, cfg.image_dim),
                   return_dict=False)[0]
    assert rel_l2(ours(x, t, context, clip_fea=clip, y=y), expected) < TOL


@torch.no_grad()
def test_attention_backends_agree(dit_models):
    model = load_dit(dit_models / "diffusion_models" / "wan2.1_i2v_480p_14B_fp16.safetensors",
                     dtype=torch.float32, device="cpu")
    x, context, y = inputs(model.config)
    clip = torch.randn(2, tiny.IMAGE_TOKENS, model.config.image_dim)
    t = torch.tensor([500.0, 500.0])
    sdpa = model(x, t, context, clip_fea=clip, y=y)
    model.set_attention_backend("math")
    assert rel_l2(model(x, t, context, clip_fea=clip, y=y), sdpa) < TOL


@torch.no_grad()
def test_bf16_weights_keep_timestep_path_fp32(dit_models):
    """bf16 compute stays close to fp32; the time embedding and modulation tables stay fp32."""
    path = dit_models / "diffusion_models" / "wan2.1_t2v_14B_bf16.safetensors"
    fp32 = load_dit(path, dtype=torch.float32, device="cpu")
    bf16 = load_dit(path, dtype=torch.bfloat16, device="cpu")
    assert bf16.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
    assert bf16.blocks[0].modulation.dtype == torch.float32
    assert bf16.time_projection[1].weight.dtype == torch.float32
    x, context, _ = inputs(fp32.config)
    t = torch.tensor([999.0, 1.0])
    out = bf16(x, t, context)
    assert out.dtype == torch.float32
    assert rel_l2(out, fp32(x, t, context)) < 2e-2  # bf16 rounding of activations
