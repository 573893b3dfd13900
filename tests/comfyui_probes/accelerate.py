"""Probe (run inside the vendored ComfyUI by ``ComfyUI.run``): ComfyUI's own node classes sample a
tiny Wan model with and without WanRT Accelerate; prints one JSON line of results.

``accelerate.py MODELS_DIR``: MODELS_DIR holds ``diffusion_models/tiny_wan.safetensors`` and
``loras/tiny_lora.safetensors``. The chain is KSampler's: UNETLoader [→ LoraLoaderModelOnly]
[→ WanRT Accelerate] → ModelSamplingSD3 (shift 8) → KSampler (euler, 2 steps, CFG 5).
"""

import functools
import json
import logging
import sys

from comfy.cli_args import args

args.cpu = True  # before comfy.model_management reads it

import comfy.ldm.wan.model  # noqa: E402
import comfy.model_management  # noqa: E402
import folder_paths  # noqa: E402
import nodes  # noqa: E402
import torch  # noqa: E402
import comfy.ops  # noqa: E402
from comfy.patcher_extension import WrappersMP  # noqa: E402
from comfy_extras.nodes_model_advanced import ModelSamplingSD3  # noqa: E402

from wanrt.nodes import comfy_step_cache, comfy_wan  # noqa: E402
from wanrt.nodes.accelerate import WanRTAccelerate  # noqa: E402
from wanrt.nodes.step_cache import WanRTStepCacheModel  # noqa: E402
from wanrt.wan_core.runtime import AttentionOptions  # noqa: E402

models = sys.argv[1]
for folder in ("diffusion_models", "loras"):
    folder_paths.add_model_folder_path(folder, f"{models}/{folder}", is_default=True)

TEXT_DIM = 4096  # ComfyUI's Wan text width (fixed in its WanModel)
gen = torch.Generator().manual_seed(0)
positive = [[torch.randn(1, 7, TEXT_DIM, generator=gen), {}]]
negative = [[torch.randn(1, 5, TEXT_DIM, generator=gen), {}]]
latent = {"samples": torch.zeros(1, 16, 2, 6, 8)}  # EmptyHunyuanLatentVideo 64x48, 5 frames

# Count who runs the blocks: ComfyUI's own forward, or WanRT's.
calls = {"comfy": 0, "wanrt": 0}
comfy_forward = comfy.ldm.wan.model.WanAttentionBlock.forward
wanrt_block = comfy_wan.run_block


def counted_comfy_forward(*a, **k):
    calls["comfy"] += 1
    return comfy_forward(*a, **k)


def counted_wanrt_block(*a, run=wanrt_block):
    calls["wanrt"] += 1
    return run(*a)


comfy.ldm.wan.model.WanAttentionBlock.forward = counted_comfy_forward
comfy_wan.run_block = counted_wanrt_block


def sample(lora=False, accelerate=None, attn1_patch=False):
    """The final latent of the chain, and which implementation ran the blocks."""
    calls.update(comfy=0, wanrt=0)
    (model,) = nodes.UNETLoader().load_unet("tiny_wan.safetensors", "default")
    if lora:
        (model,) = nodes.LoraLoaderModelOnly().load_lora_model_only(
            model, "tiny_lora.safetensors", 1.0)
    if attn1_patch:  # a patch the fast path leaves to ComfyUI's own block
        model = model.clone()
        model.set_model_attn1_patch(lambda args: args["x"])
    if accelerate:
        (model,) = WanRTAccelerate().accelerate(model, *accelerate)
    (model,) = ModelSamplingSD3().patch(model, 8.0)
    (out,) = nodes.common_ksampler(model, 42, 2, 5.0, "euler", "simple", positive, negative, latent)
    comfy.model_management.unload_all_models()
    blocks = model.model.diffusion_model.blocks
    results["object_patches_left"] = results.get("object_patches_left", 0) + sum(
        isinstance(vars(block).get("forward"), comfy_wan.AcceleratedBlock) for block in blocks)
    return out["samples"], dict(calls)


def rel_l2(a, b):
    return ((a - b).norm() / b.norm()).item()


results = {}
base, results["base_calls"] = sample()
fast, results["fast_calls"] = sample(accelerate=("off", "sdpa"))
results["fast_vs_base"] = rel_l2(fast, base)
lora_base, results["lora_base_calls"] = sample(lora=True)
lora_fast, results["lora_fast_calls"] = sample(lora=True, accelerate=("off", "sdpa"))
results["lora_vs_base"] = rel_l2(lora_base, base)
results["lora_fast_vs_lora_base"] = rel_l2(lora_fast, lora_base)
patched_base, _ = sample(attn1_patch=True)
patched_fast, results["patched_fast_calls"] = sample(attn1_patch=True, accelerate=("off", "sdpa"))
results["patched_fast_vs_patched_base"] = rel_l2(patched_fast, patched_base)

# compile "blocks", traced by Dynamo (backend "eager": no inductor build on the CPU runner).
traced = torch.compile(wanrt_block, backend="eager")  # the counter stays outside the graph
comfy_wan._compiled_run_block = lambda: functools.partial(counted_wanrt_block, run=traced)
torch._dynamo.utils.counters.clear()
compiled, results["compiled_calls"] = sample(accelerate=("blocks", "sdpa"))
results["compiled_vs_base"] = rel_l2(compiled, base)
results["compiled_graphs"] = torch._dynamo.utils.counters["stats"]["unique_graphs"]

# sage8 with exclusions: which self-attention backend each block ran at each step (2 blocks,
# 2 steps; block 0 and the first step dense)
chosen = []
real_get_backend = comfy_wan.get_backend
comfy_wan.get_backend = lambda name: (chosen.append(name), real_get_backend(name))[1]
sage8, _ = sample(accelerate=("off", "sage8", 1, 1, 0))
comfy_wan.get_backend = real_get_backend
results["sage8_backends"] = chosen
results["sage8_vs_base"] = rel_l2(sage8, base)


# WanRT Step Cache (MODEL) after Accelerate: 10 steps, each policy; the summaries it logs
summaries = []
logging.getLogger().addHandler(type("Summaries", (logging.Handler,), {"emit": lambda self, r: (
    summaries.append(r.getMessage()) if r.getMessage().startswith("WanRT step cache") else None)})())
logging.getLogger().setLevel(logging.INFO)


def cached(policy=None, threshold=0.0, constants="auto"):
    (model,) = nodes.UNETLoader().load_unet("tiny_wan.safetensors", "default")
    (model,) = WanRTAccelerate().accelerate(model, "off", "sdpa")
    if policy is not None:
        model = WanRTStepCacheModel().attach(
            model, policy=policy, threshold=threshold, start_percent=0.0, end_percent=1.0,
            retention=0.2, constants=constants, allow_few_steps=False)["result"][0]
    (model,) = ModelSamplingSD3().patch(model, 8.0)
    (out,) = nodes.common_ksampler(model, 42, 10, 5.0, "euler", "simple", positive, negative, latent)
    comfy.model_management.unload_all_models()
    return out["samples"]


uncached = cached()
step_cache = {}
for name, policy, threshold, constants in (
        ("first_block_exact", "first_block", 1e-9, "auto"), ("first_block", "first_block", 10.0, "auto"),
        ("teacache", "teacache", 1e-9, "t2v-1.3B"), ("magcache", "magcache", 2.0, "t2v-1.3B"),
        ("easycache", "easycache", 2.0, "auto")):
    summaries.clear()
    out = cached(policy, threshold, constants)
    again = cached(policy, threshold, constants)
    step_cache[name] = {"vs_uncached": rel_l2(out, uncached), "runs_equal": bool(torch.equal(out, again)),
                        "summaries": list(summaries)}
results["step_cache"] = step_cache
with torch.device("meta"):  # the published constants follow the architecture ComfyUI loaded
    results["variants"] = [comfy_step_cache.dit_config(comfy.ldm.wan.model.WanModel(
        model_type=kind, in_dim=in_dim, out_dim=out_dim, dim=dim, ffn_dim=ffn, num_heads=heads,
        num_layers=2, operations=comfy.ops.disable_weight_init)).variant
        for kind, in_dim, out_dim, dim, ffn, heads in (
            ("t2v", 16, 16, 1536, 8960, 12), ("t2v", 16, 16, 5120, 13824, 40),
            ("i2v", 36, 16, 5120, 13824, 40), ("t2v", 36, 16, 5120, 13824, 40),
            ("t2v", 48, 48, 3072, 14336, 24))]
try:
    cached("teacache")  # the tiny model has no published constants
except ValueError as e:
    results["step_cache_no_constants"] = str(e)


def both(block, x, e, freqs, context, context_img_len, transformer_options):
    """One block's output through WanRT's path and through ComfyUI's own forward."""
    ours = comfy_wan.AcceleratedBlock(block, 0, wanrt_block, AttentionOptions(backend="sdpa"))(
        x, e, freqs, context, context_img_len, transformer_options)
    return ours, comfy_forward(block, x, e, freqs, context, context_img_len, transformer_options)


@torch.no_grad()
def block_parity():
    """One block, WanRT's path against ComfyUI's forward, for inputs the tiny T2V sampling above
    does not produce: per-frame timesteps (``e: [B, F, 6, C]``, F dividing L or not), Wan 2.1
    I2V cross-attention (CLIP tokens first in the context), another node's attention override,
    low-VRAM casting with weight patches on norm and Linear weights."""
    (model,) = nodes.UNETLoader().load_unet("tiny_wan.safetensors", "default")
    wan = model.model.diffusion_model
    t2v = wan.blocks[0]
    i2v = comfy.ldm.wan.model.WanAttentionBlock(
        "i2v_cross_attn", 256, 512, 2, cross_attn_norm=True,
        operation_settings={"operations": comfy.ops.disable_weight_init, "dtype": torch.float32})
    for p in i2v.parameters():
        p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
    freqs = wan.rope_encode(2, 6, 8, device="cpu", dtype=torch.float32)  # 24 tokens
    x = torch.randn(1, 24, 256, generator=gen)
    context = torch.randn(1, 12, 256, generator=gen)
    overridden = []

    def override(func, *args, **kwargs):
        overridden.append(1)
        return func(*args, **kwargs)

    cases = {  # name: (block, e, context_img_len, transformer_options)
        "per_frame": (t2v, torch.randn(1, 2, 6, 256, generator=gen), None, {}),
        "per_frame_uneven": (t2v, torch.randn(1, 5, 6, 256, generator=gen), None, {}),
        "i2v": (i2v, torch.randn(1, 6, 256, generator=gen), 5, {}),
        "attention_override": (t2v, torch.randn(1, 6, 256, generator=gen), None,
                               {"optimized_attention_override": override}),
    }
    errors = {name: rel_l2(*both(block, x, e, freqs, context, img_len, options))
              for name, (block, e, img_len, options) in cases.items()}
    # ComfyUI's low-VRAM mode: weights cast per call, weight patches applied on the fly (LoRA)
    e = cases["i2v"][1]
    plain, _ = both(t2v, x, e, freqs, context, None, {})
    for layer in t2v.modules():
        if hasattr(layer, "comfy_cast_weights"):
            layer.comfy_cast_weights = True
    t2v.self_attn.norm_q.weight_function = [lambda w: w * 2]
    t2v.self_attn.q.weight_function = [lambda w: w + 0.01]
    t2v.norm3.bias_function = [lambda b: b + 0.1]
    ours, theirs = both(t2v, x, e, freqs, context, None, {})
    errors["lowvram_patched"] = rel_l2(ours, theirs)
    errors["lowvram_patch_effect"] = rel_l2(ours, plain)
    errors["override_calls"] = len(overridden)  # twice per block call: WanRT's and ComfyUI's
    return errors


def full_mode():
    """What compile "full" sets up (not run here: inductor on CPU is too slow for CI)."""
    (model,) = nodes.UNETLoader().load_unet("tiny_wan.safetensors", "default")
    (full,) = WanRTAccelerate().accelerate(model, "full", "sdpa")
    compile_wrappers = (WrappersMP.APPLY_MODEL, "torch.compile")
    return {"compile_wrappers": len(full.get_wrappers(*compile_wrappers)),
            "block_patches": sorted(full.object_patches),
            "input_untouched": not (model.object_patches or model.get_wrappers(*compile_wrappers))}


def kernel_impls():
    """The kernels' impl an accelerated block runs under the simulated CUDA policy, with the
    fused kernels on and switched off (WANRT_DISABLE_FUSED_KERNELS)."""
    import os
    from wanrt.kernels import platforms
    impls = []
    os.environ["WANRT_PLATFORM"] = "cuda"
    platforms._platform_for.cache_clear()
    try:
        for switch in ("0", "1"):
            os.environ["WANRT_DISABLE_FUSED_KERNELS"] = switch
            (model,) = nodes.UNETLoader().load_unet("tiny_wan.safetensors", "default")
            (fast,) = WanRTAccelerate().accelerate(model, "off", "sdpa")
            impls.append(fast.object_patches["diffusion_model.blocks.0.forward"].impl)
    finally:
        del os.environ["WANRT_PLATFORM"], os.environ["WANRT_DISABLE_FUSED_KERNELS"]
        platforms._platform_for.cache_clear()
    return impls


results["kernel_impls"] = kernel_impls()
results["blocks"] = block_parity()
results["full_mode"] = full_mode()
print(json.dumps(results))
