"""``load_dit`` reads every checkpoint layout and gives the output of the reference model built
from the same file's tensors.

The reference reads each file with the ``safetensors`` library and applies the documented format
rules itself (strip ``model.diffusion_model.``, fp8 weight x ``scale_weight`` / ``weight_scale``),
then runs the official Wan 2.2 ``WanModel`` or, for the CLIP variants it lacks, diffusers'
``WanTransformer3DModel`` (official names converted by diffusers' own single-file converter;
diffusers folders loaded as they are). CPU, fp32; tolerance 1e-5 relative L2 (same math, only
summation order and the official float64 RoPE differ).
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from dit_helpers import rel_l2
from reference import official_module
from wanrt.wan_core import load_dit
from wanrt.wan_core.tiny import dit as tiny

pytestmark = pytest.mark.filterwarnings("ignore:CUDA is not available")  # official autocast
TOL = 1e-5
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)

# Every file and folder make-tiny writes, with the weight set it holds.
CASES = {
    **{f"diffusion_models/{name}.safetensors": variant
       for name, (variant, _, _) in tiny.COMFY_FILES.items()},
    **{f"official/{folder}": variant for folder, (variant, _, _) in tiny.OFFICIAL_FOLDERS.items()},
    "official/Wan2.2-TI2V-5B/diffusion_pytorch_model.safetensors.index.json": "wan2.2_ti2v_5B",
    **{f"diffusers/{folder}": variant for folder, variant in tiny.DIFFUSERS_FOLDERS.items()},
    "diffusers/Wan2.1-FLF2V-14B-720P-Diffusers/transformer/diffusion_pytorch_model.safetensors":
        "wan2.1_flf2v_720p_14B",
}

# What detection must report for each weight set (tiny widths are named by their dim).
EXPECTED_VARIANT = {
    "wan2.1_t2v_1.3B": "t2v-256d", "wan2.1_t2v_14B": "t2v-256d",
    "wan2.1_i2v_480p_14B": "i2v-256d", "wan2.1_i2v_720p_14B": "i2v-256d",
    "wan2.1_flf2v_720p_14B": "flf2v-256d", "wan2.2_ti2v_5B": "ti2v-256d",
    "wan2.2_t2v_high_noise_14B": "t2v-256d", "wan2.2_t2v_low_noise_14B": "t2v-256d",
    "wan2.2_i2v_high_noise_14B": "i2v-A256d", "wan2.2_i2v_low_noise_14B": "i2v-A256d",
}


def read_tensors(path):
    """All tensors of a file, an index json's shards, or a (diffusers pipeline) folder."""
    if path.is_dir():
        path = path / "transformer" if (path / "transformer").is_dir() else path
        files = sorted(path.glob("diffusion_pytorch_model*.safetensors"))
    elif path.name.endswith(".index.json"):
        shards = json.loads(path.read_text())["weight_map"].values()
        files = sorted({path.parent / f for f in shards})
    else:
        files = [path]
    return {k: v for f in files for k, v in load_file(f).items()}


def comfy_to_plain(sd):
    """ComfyUI rules: drop the prefix and fp8 bookkeeping, fp8 weight x its scale (else x 1)."""
    prefix = "model.diffusion_model."
    sd = {k.removeprefix(prefix): v for k, v in sd.items()}
    out = {}
    for k, v in sd.items():
        if k == "scaled_fp8" or k.endswith((".scale_weight", ".weight_scale", ".scale_input",
                                           ".comfy_quant")):
            continue
        if v.dtype in FP8:
            layer = k.removesuffix(".weight")
            v = v.float() * sd.get(f"{layer}.scale_weight", sd.get(f"{layer}.weight_scale", 1.0))
        out[k] = v.float()
    return out


def reference_model(sd, config):
    """Official WanModel, or diffusers for the CLIP variants / diffusers-named tensors."""
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    if config.image_dim or "scale_shift_table" in sd:
        ref = WanTransformer3DModel(
            num_attention_heads=config.num_heads, attention_head_dim=config.head_dim,
            in_channels=config.in_dim, out_channels=config.out_dim, text_dim=config.text_dim,
            ffn_dim=config.ffn_dim, num_layers=config.num_layers, image_dim=config.image_dim,
            added_kv_proj_dim=config.dim if config.image_dim else None,
            pos_embed_seq_len=config.image_tokens)
        if "scale_shift_table" not in sd:
            pos = sd.pop("img_emb.emb_pos", None)  # the single-file converter has no rule for it
            sd = convert_wan_transformer_to_diffusers(sd)
            if pos is not None:
                sd["condition_embedder.image_embedder.pos_embed"] = pos
        ref.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
        return ref.eval()
    ref = official_module("modules/model").WanModel(
        model_type="i2v" if config.y_dim else config.model_type, text_len=7,
        in_dim=config.in_dim, dim=config.dim, ffn_dim=config.ffn_dim, text_dim=config.text_dim,
        out_dim=config.out_dim, num_heads=config.num_heads, num_layers=config.num_layers)
    ref.load_state_dict(sd, strict=True)
    return ref.eval()


def run_both(model, ref, seed=0):
    """Batch-1 forward of ours and of the reference on the same random inputs."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, cfg.out_dim, 2, 4, 6, generator=g)
    y = torch.randn(1, cfg.y_dim, 2, 4, 6, generator=g) if cfg.y_dim else None
    t = torch.tensor([600.0])
    if cfg.image_dim:  # diffusers: text padded to 512 tokens; FLF2V images as [2B, N, C]
        context = torch.randn(1, 512, cfg.text_dim, generator=g)
        clip = torch.randn(1, cfg.image_tokens or tiny.IMAGE_TOKENS, cfg.image_dim, generator=g)
        images = clip.view(-1, tiny.IMAGE_TOKENS, cfg.image_dim)
        expected = ref(torch.cat([x, y], 1), t, context, encoder_hidden_states_image=images,
                       return_dict=False)[0]
        return model(x, t, context, clip_fea=clip, y=y), expected
    context = torch.randn(1, 7, cfg.text_dim, generator=g)
    seq_len = 2 * 2 * 3
    expected = ref([x[0]], t[:, None].expand(1, seq_len), [context[0]], seq_len,
                   y=None if y is None else [y[0]])[0][None]
    return model(x, t, context, y=y), expected


@torch.no_grad()
@pytest.mark.parametrize("relpath", list(CASES))
def test_every_tiny_file_loads_and_matches_reference(dit_models, relpath):
    path = dit_models / relpath
    model = load_dit(path, dtype=torch.float32, device="cpu")
    assert model.config.variant == EXPECTED_VARIANT[CASES[relpath]]
    ref = reference_model(comfy_to_plain(read_tensors(path)), model.config)
    ours, expected = run_both(model, ref)
    assert rel_l2(ours, expected) < TOL


@torch.no_grad()
def test_same_tensors_in_every_layout_give_identical_outputs(dit_models, tmp_path):
    """One fp32 state dict written as ComfyUI bare / prefixed, sharded official, diffusers
    (renamed by diffusers' converter) and .pth: bit-identical outputs."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    folder = dit_models / "official" / "Wan2.1-T2V-1.3B"
    sd = load_file(folder / "diffusion_pytorch_model.safetensors")
    save_file(sd, tmp_path / "bare.safetensors")
    save_file({f"model.diffusion_model.{k}": v for k, v in sd.items()},
              tmp_path / "prefixed.safetensors")
    save_file(convert_wan_transformer_to_diffusers(dict(sd)), tmp_path / "diffusers.safetensors")
    torch.save(sd, tmp_path / "model.pth")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    keys = sorted(sd)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[:300],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[300:]}
    for name, part in shards.items():
        save_file({k: sd[k] for k in part}, sharded / name)
    (sharded / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: name for name, part in shards.items() for k in part}}))

    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 5, 64, generator=g)
    t = torch.tensor([321.0])
    expected = load_dit(folder, dtype=torch.float32, device="cpu")(x, t, context)
    for path in ("bare.safetensors", "prefixed.safetensors", "diffusers.safetensors",
                 "model.pth", "sharded"):
        out = load_dit(tmp_path / path, dtype=torch.float32, device="cpu")(x, t, context)
        assert torch.equal(out, expected), path


@torch.no_grad()
@pytest.mark.parametrize("name", ["wan2.1_t2v_14B_fp8_e4m3fn", "wan2.1_i2v_480p_14B_fp8_scaled",
                                  "wan2.2_t2v_high_noise_14B_fp8_scaled"])
def test_keep_fp8_dequantises_at_matmul_time(dit_models, name):
    path = dit_models / "diffusion_models" / f"{name}.safetensors"
    upcast = load_dit(path, dtype=torch.float32, device="cpu")
    kept = load_dit(path, dtype=torch.float32, device="cpu", keep_fp8=True)
    q = kept.blocks[0].self_attn.q
    assert q.weight.dtype == torch.float8_e4m3fn
    assert (q.weight_scale is not None) == name.endswith("scaled")  # plain fp8 has no scale
    assert upcast.blocks[0].self_attn.q.weight.dtype == torch.float32
    assert kept.patch_embedding.weight.dtype == torch.float32
    cfg = kept.config
    x = torch.randn(1, cfg.out_dim, 2, 4, 4)
    y = torch.randn(1, cfg.y_dim, 2, 4, 4) if cfg.y_dim else None
    clip = torch.randn(1, tiny.IMAGE_TOKENS, cfg.image_dim) if cfg.image_dim else None
    context, t = torch.randn(1, 5, cfg.text_dim), torch.tensor([42.0])
    assert torch.equal(kept(x, t, context, clip_fea=clip, y=y),
                       upcast(x, t, context, clip_fea=clip, y=y))


def test_default_dtype_is_bf16_with_fp32_timestep_path(dit_models):
    model = load_dit(dit_models / "diffusion_models" / "wan2.1_t2v_1.3B_fp16.safetensors",
                     device="cpu")
    assert model.dtype == torch.bfloat16
    assert model.blocks[1].ffn[0].weight.dtype == torch.bfloat16
    assert model.time_embedding[0].weight.dtype == torch.float32
    assert model.head.modulation.dtype == torch.float32
