"""LoRA (``wan_core.lora``): merged weights equal the vendored ComfyUI 0.33.0's own LoRA code on the
same files, every key layout gives the same model, runtime == merge, fused projections, fp8 base
weights, the reports for keys no parameter takes and for a LoRA of another model size, the node,
and make-tiny's LoRA files under the names ComfyUI's Wan templates load."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from wanrt.nodes import NODE_CLASS_MAPPINGS, host
from wanrt.nodes.host import HeadlessHost
from wanrt.wan_core import CheckpointError, load_dit
from wanrt.wan_core.dit import WanModel, init_random_
from wanrt.wan_core.dit.formats import official_to_diffusers
from wanrt.wan_core.dit.model import LoRALinear, dequantise, weight_sharing_copy
from wanrt.wan_core.lora import LoRAKeyWarning, apply_lora, load_lora
from wanrt.wan_core.tiny import dit as tiny_dit
from wanrt.wan_core.tiny.lora import LORA_FILES, lora_tensors

PROBES = Path(__file__).parent / "comfyui_probes"
I2V = "wan2.1_i2v_480p_14B"  # has every kind of parameter: CLIP branch (k_img, img_emb) too


def save(tensors, path):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def model(variant=I2V, seed=0):
    return init_random_(WanModel(tiny_dit.VARIANTS[variant]), seed=seed).requires_grad_(False)


def low_rank(variant=I2V, seed=1):
    """``{official module: (down, up)}``: rank-4 pairs for the Linears of block 0, the text
    embedding and the head (fp32)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in model(variant).state_dict().items()}
    modules = ["blocks.0.self_attn.q", "blocks.0.self_attn.v", "blocks.0.self_attn.o",
               "blocks.0.cross_attn.k", "blocks.0.cross_attn.k_img", "blocks.0.ffn.0",
               "blocks.1.ffn.2", "text_embedding.0", "head.head"]
    return {m: (torch.randn(4, shapes[m + ".weight"][1], generator=g) * 0.1,
                torch.randn(shapes[m + ".weight"][0], 4, generator=g) * 0.1) for m in modules}


def inputs(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = m.config
    x = torch.randn(1, cfg.out_dim, 2, 4, 4, generator=g)
    y = torch.randn(1, cfg.in_dim - cfg.out_dim, 2, 4, 4, generator=g) if cfg.y_dim else None
    clip = torch.randn(1, 5, cfg.image_dim, generator=g) if cfg.image_dim else None
    return (x, torch.tensor([700.0]), torch.randn(1, 6, cfg.text_dim, generator=g)), \
        {"y": y, "clip_fea": clip}


def not_loaded(probe_output):
    """The tensor names the lora_weights probe says ComfyUI did not load."""
    return [line.split(": ", 1)[1] for line in probe_output.splitlines()
            if line.startswith("not loaded: ")]


def run(m, seed=0):
    args, kwargs = inputs(m, seed)
    return m(*args, **kwargs)


# --- parity with ComfyUI's own LoRA code -----------------------------------------------------------

def test_merged_weights_equal_comfyuis_lora_code(comfyui, tmp_path):
    """Four LoRAs stacked (lightx2v-style with .diff / .diff_b, kohya with alpha, Wan Fun's
    ``lora_unet__``, a lone lightx2v ``diff_m``) on a tiny fp32 I2V model: every tensor ComfyUI
    patches equals ours within fp32 rounding (rtol 1e-6, atol 1e-7: the same fp32 products,
    summed in the same order). ``blocks.N.diff_m`` (the modulation delta) ComfyUI 0.33.0 reports
    as not loaded; WanRT adds it to ``blocks.N.modulation``, a difference to ComfyUI on purpose."""
    base = model()
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    lightx2v = {k: v for k, v in lora_tensors(I2V, "down_up_alpha+diff").items()
                if not k.endswith(".diff_m")}
    kohya = {k: v for k, v in lora_tensors(I2V, "kohya", seed=1).items() if "blocks_1" in k}
    fun = {k.replace("lora_unet_", "lora_unet__"): v
           for k, v in lora_tensors(I2V, "kohya", seed=2).items() if "blocks_0" in k}
    diff_m = {"diffusion_model.blocks.1.diff_m": torch.randn(1, 6, 256) * 0.01}
    stack = [(save(lightx2v, tmp_path / "a.safetensors"), 0.8),
             (save(kohya, tmp_path / "b.safetensors"), -1.5),
             (save(fun, tmp_path / "c.safetensors"), 1.0),
             (save(diff_m, tmp_path / "d.safetensors"), 0.5)]

    output = comfyui.run(PROBES / "lora_weights.py", str(save(sd, tmp_path / "base.st")),
                         str(tmp_path / "comfy.st"), *[str(a) for pair in stack for a in pair])
    theirs = load_file(tmp_path / "comfy.st")
    ours = base
    for path, strength in stack:
        ours = apply_lora(ours, path, strength)

    assert not_loaded(output) == ["diffusion_model.blocks.1.diff_m"]
    changed = {k for k, v in ours.state_dict().items() if not torch.equal(v, sd[k])}
    assert changed == set(theirs) | {"blocks.1.modulation"}
    assert len(changed) > 60  # every Linear, bias, norm scale the files patch
    for key in theirs:
        torch.testing.assert_close(ours.get_parameter(key), theirs[key], rtol=1e-6, atol=1e-7,
                                   msg=key)
    torch.testing.assert_close(ours.blocks[1].modulation,
                               base.blocks[1].modulation + 0.5 * diff_m[next(iter(diff_m))])


# --- layouts -------------------------------------------------------------------------------------

def layout(pairs, name):
    """The same LoRA in one of the layouts users have."""
    out = {}
    for module, (down, up) in pairs.items():
        dotted, under = module, module.replace(".", "_")
        diffusers = official_to_diffusers(module)
        stem, a, b = {
            "comfyui": (f"diffusion_model.{dotted}", "lora_down.weight", "lora_up.weight"),
            "comfyui_full": (f"model.diffusion_model.{dotted}", "lora_A.weight", "lora_B.weight"),
            "bare": (dotted, "lora_A.weight", "lora_B.weight"),
            "kohya": (f"lora_unet_{under}", "lora_down.weight", "lora_up.weight"),
            "wan_fun": (f"lora_unet__{under}", "lora_down.weight", "lora_up.weight"),
            "kohya_diffusers": (f"lora_unet_{diffusers.replace('.', '_')}", "lora_down.weight",
                                "lora_up.weight"),
            "onetrainer": (f"lora_transformer_{diffusers.replace('.', '_')}", "lora_down.weight",
                           "lora_up.weight"),
            "diffusers": (f"transformer.{diffusers}", "lora_A.weight", "lora_B.weight"),
            "peft": (f"base_model.model.{diffusers}", "lora_A.default.weight",
                     "lora_B.default.weight"),
        }[name]
        out |= {f"{stem}.{a}": down, f"{stem}.{b}": up}
    return out


LAYOUTS = ["comfyui_full", "bare", "kohya", "wan_fun", "kohya_diffusers", "onetrainer",
           "diffusers", "peft"]


@pytest.mark.parametrize("name", LAYOUTS)
def test_every_layout_gives_the_same_model(name, tmp_path):
    """diffusers names cover ``attn1``/``attn2``, ``to_out.0``, ``add_k_proj``, ``ffn.net.0.proj``,
    ``condition_embedder.text_embedder.linear_1`` and ``proj_out``."""
    base, pairs = model(), low_rank()
    reference = apply_lora(base, save(layout(pairs, "comfyui"), tmp_path / "ref.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every tensor is taken
        other = apply_lora(base, save(layout(pairs, name), tmp_path / f"{name}.safetensors"))
    for (key, a), b in zip(reference.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), key
    assert not torch.equal(reference.blocks[0].cross_attn.k_img.weight,
                           base.blocks[0].cross_attn.k_img.weight)


def test_alpha_scales_by_alpha_over_rank(tmp_path):
    base, pairs = model(), low_rank()
    (down, up) = pairs["blocks.0.ffn.0"]
    tensors = layout({"blocks.0.ffn.0": (down, up)}, "comfyui")
    tensors["diffusion_model.blocks.0.ffn.0.alpha"] = torch.tensor(2.0)
    patched = apply_lora(base, save(tensors, tmp_path / "a.safetensors"), 0.5)
    torch.testing.assert_close(patched.blocks[0].ffn[0].weight,
                               base.blocks[0].ffn[0].weight + 0.5 * 2.0 / 4 * up @ down)


# --- modes, fusing, sharing -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_lora(tmp_path_factory):
    """make-tiny's lightx2v-style I2V LoRA: low-rank pairs on every Linear, .diff, .diff_b, .diff_m."""
    path = tmp_path_factory.mktemp("lora") / "full.safetensors"
    return save(lora_tensors(I2V, "down_up_alpha+diff"), path)


def test_runtime_equals_merge_before_and_after_fusing(full_lora):
    """Five ways to the same model: merge or runtime, on the loaded or on the fused projections
    (q/k/v of a LoRA land on their rows of ``fused.q_k_v``), or fused after a runtime LoRA. fp32; tolerance 1e-5 relative: the
    low-rank path sums its products in another order than the merged weight."""
    base = model()
    merged = apply_lora(base, full_lora, 0.7)
    expected = run(merged)
    assert not torch.allclose(expected, run(base), atol=1e-3), "the LoRA changes the output"
    fused = weight_sharing_copy(base).fuse_projections()
    for m in (apply_lora(base, full_lora, 0.7, mode="runtime"), apply_lora(fused, full_lora, 0.7),
              apply_lora(fused, full_lora, 0.7, mode="runtime")):
        torch.testing.assert_close(run(m), expected, rtol=1e-5, atol=1e-5)
    late = weight_sharing_copy(apply_lora(base, full_lora, 0.7, mode="runtime")).fuse_projections()
    torch.testing.assert_close(run(late), expected, rtol=1e-5, atol=1e-5)
    assert "q_k_v" not in late.blocks[0].self_attn.fused, "runtime LoRA layers are not fused"
    runtime = apply_lora(fused, full_lora, 0.7, mode="runtime")
    assert isinstance(runtime.blocks[0].self_attn.fused.q_k_v, LoRALinear)
    assert runtime.blocks[0].self_attn.fused.q_k_v.weight is fused.blocks[0].self_attn.fused.q_k_v.weight


def test_input_model_is_untouched_and_unpatched_tensors_are_shared(tmp_path):
    base, pairs = model(), low_rank()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    patched = apply_lora(base, save(layout(pairs, "comfyui"), tmp_path / "l.safetensors"))
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
    params = dict(base.named_parameters())
    shared = {k for k, v in patched.named_parameters() if v is params[k]}
    assert shared == set(before) - {m + ".weight" for m in pairs}


def test_stacking_and_strength(tmp_path):
    base, pairs = model(), low_rank()
    path = save(layout(pairs, "comfyui"), tmp_path / "l.safetensors")
    twice = apply_lora(apply_lora(base, path, 0.25, mode="runtime"), path, 0.5, mode="runtime")
    torch.testing.assert_close(run(twice), run(apply_lora(base, path, 0.75)), rtol=1e-5, atol=1e-5)
    layer = twice.blocks[0].ffn[0]
    assert layer.lora_down.shape[0] == 8, "two rank-4 LoRAs stack along the rank"
    for mode in ("merge", "runtime"):
        same = apply_lora(base, path, 0.0, mode=mode)
        assert same is not base and torch.equal(run(same), run(base))


def test_a_loaded_lora_object_is_accepted(full_lora):
    base = model()
    from_path = apply_lora(base, full_lora).state_dict()
    for key, a in apply_lora(base, load_lora(full_lora)).state_dict().items():
        assert torch.equal(a, from_path[key]), key


# --- fp8 base weights ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, lora", [
    ("wan2.1_i2v_480p_14B_fp8_scaled", "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16"),
    ("wan2.2_t2v_high_noise_14B_fp8_scaled", "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise")])
def test_fp8_base_weights_in_both_comfyui_layouts(dit_models, tmp_path, name, lora):
    """``scale_weight`` and ``weight_scale`` files kept in fp8 and fused. runtime: the fp8 weights
    are the loaded tensors, and the output equals the LoRA merged into the dequantised fp32 model
    (rtol 1e-4). merge: the weights stay fp8 (re-quantised per row) and equal the dequantised
    merge within fp8 rounding (e4m3: 3 mantissa bits, so half a step is 1/16 of the value)."""
    variant = tiny_dit.COMFY_FILES[name][0]
    path = save({k: v.to(torch.bfloat16) for k, v in
                 lora_tensors(variant, LORA_FILES[lora][1]).items()}, tmp_path / "l.safetensors")
    file = dit_models / "diffusion_models" / f"{name}.safetensors"
    fp8 = load_dit(file, dtype=torch.float32, device="cpu", keep_fp8=True).fuse_projections()
    dense = load_dit(file, dtype=torch.float32, device="cpu")
    expected = run(apply_lora(dense, path))

    runtime = apply_lora(fp8, path, mode="runtime")
    layer, loaded = runtime.blocks[0].self_attn.fused.q_k_v, fp8.blocks[0].self_attn.fused.q_k_v
    assert layer.weight is loaded.weight and layer.weight.dtype == torch.float8_e4m3fn
    torch.testing.assert_close(run(runtime), expected, rtol=1e-4, atol=1e-4)

    merged = apply_lora(fp8, path)
    reference = apply_lora(weight_sharing_copy(dense).fuse_projections(), path)
    for module in (merged.blocks[1].ffn[0], merged.blocks[0].cross_attn.fused.k_v):
        assert module.weight.dtype == torch.float8_e4m3fn
    for got, want in ((merged.blocks[1].ffn[0], reference.blocks[1].ffn[0]),
                      (merged.blocks[0].self_attn.fused.q_k_v,
                       reference.blocks[0].self_attn.fused.q_k_v)):
        weight = dequantise(got.weight, got.weight_scale, torch.float32)
        step = want.weight.abs().max() / 448  # the value 1 of the fp8 grid, scaled
        torch.testing.assert_close(weight, want.weight, rtol=1 / 16, atol=step.item())


# --- reports -------------------------------------------------------------------------------------

def test_keys_no_parameter_takes_are_reported_once_by_name_and_count(tmp_path):
    tensors = layout(low_rank(), "comfyui") | {
        "diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight_extra": torch.zeros(1),
        "text_encoders.t5.layer.0.lora_up.weight": torch.zeros(4, 4),
        "text_encoders.t5.layer.0.lora_down.weight": torch.zeros(4, 4)}
    t2v = model("wan2.1_t2v_1.3B")
    path = save({k: v for k, v in tensors.items() if "k_img" not in k or "extra" in k},
                tmp_path / "l.safetensors")
    with pytest.warns(LoRAKeyWarning) as caught:
        apply_lora(t2v, path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"{path}: 3 tensors match no parameter of this t2v-256d model")
    for key in ("k_img.lora_up.weight_extra", "t5.layer.0.lora_up", "t5.layer.0.lora_down"):
        assert key in message


def test_an_i2v_lora_on_a_t2v_model_reports_the_clip_branch_tensors(tmp_path):
    path = save(layout(low_rank(), "comfyui"), tmp_path / "i2v.safetensors")
    with pytest.warns(LoRAKeyWarning, match=r"2 tensors .*cross_attn\.k_img\.lora_down\.weight"):
        apply_lora(model("wan2.1_t2v_1.3B"), path)


def test_a_lora_for_another_model_size_is_a_clear_error(tmp_path):
    bigger = layout(low_rank(), "comfyui")
    bigger["diffusion_model.blocks.0.self_attn.q.lora_up.weight"] = torch.zeros(512, 4)
    path = save(bigger, tmp_path / "wan14B_style.safetensors")
    with pytest.raises(CheckpointError, match=r"wan14B_style\.safetensors: LoRA tensor "
                       r"'diffusion_model\.blocks\.0\.self_attn\.q\.lora_up\.weight'.*another Wan"):
        apply_lora(model(), path)


def test_files_that_are_not_wan_loras_are_clear_errors(tmp_path):
    sdxl = save({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(4, 4)},
                tmp_path / "sdxl.safetensors")
    with pytest.raises(CheckpointError, match="sdxl.safetensors: no tensor .* Wan LoRA"):
        apply_lora(model(), sdxl)
    dora = layout(low_rank(), "comfyui") | {
        "diffusion_model.blocks.0.ffn.0.dora_scale": torch.ones(512, 1)}
    with pytest.raises(CheckpointError, match="dora_scale.*DoRA"):
        load_lora(save(dora, tmp_path / "dora.safetensors"))
    with pytest.raises(ValueError, match="mode"):
        apply_lora(model(), sdxl, mode="bypass")


# --- the node and make-tiny ------------------------------------------------------------------------

def test_load_lora_node_stacks_on_a_loaded_model(tiny_models):
    """WanRT Load LoRA on the loader's (fused) model: two chained, merge then runtime."""
    node = NODE_CLASS_MAPPINGS["WanRTLoadLoRA"]
    with host.activate(HeadlessHost.from_paths(tiny_models, show_progress=False)):
        dit = NODE_CLASS_MAPPINGS["WanRTLoadDiffusionModel"]().load(
            "wan2.2_t2v_high_noise_14B_fp16.safetensors", "default", "auto")[0]
        name = "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors"
        assert node.VALIDATE_INPUTS(lora_name=name) is True
        assert "not found in the 'loras' folders" in node.VALIDATE_INPUTS(lora_name="x.safetensors")
        once = node().apply(dit, name, 1.0, "merge")[0]
        twice = node().apply(once, name, -1.0, "runtime")[0]
    args, kwargs = inputs(dit)
    base, patched, undone = (m(*args, **kwargs) for m in (dit, once, twice))
    change = (patched - base).abs().max()
    assert change > 1e-3
    assert (undone - base).abs().max() < change / 2  # bf16 weights and LoRA path: not exact


CORE_WAN_TEMPLATES = ("text_to_video_wan", "image_to_video_wan", "wan2.1_flf2v_720_f16",
                      "video_wan2_2_14B_t2v", "video_wan2_2_14B_i2v", "video_wan2_2_14B_flf2v",
                      "video_wan2_2_5B_ti2v")


def lora_names(node):
    """LoraLoaderModelOnly widget values anywhere in a template (subgraphs included)."""
    if isinstance(node, dict):
        if node.get("type") == "LoraLoaderModelOnly" and node.get("widgets_values"):
            yield node["widgets_values"][0]
        for value in node.values():
            yield from lora_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from lora_names(value)


def test_make_tiny_writes_the_loras_comfyuis_wan_templates_load(tiny_models):
    import comfyui_workflow_templates_json as templates

    folder = Path(templates.__file__).parent / "templates"
    wanted = {name for t in CORE_WAN_TEMPLATES
              for name in lora_names(json.loads((folder / f"{t}.json").read_text()))}
    assert len(wanted) == 4  # the Wan 2.2 T2V and I2V 4-step pairs
    written = {p.name for p in (tiny_models / "loras").iterdir()}
    assert wanted <= written
    for name, (variant, _, _) in LORA_FILES.items():  # each fits its tiny DiT, every tensor taken
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            apply_lora(model(variant), tiny_models / "loras" / f"{name}.safetensors")
