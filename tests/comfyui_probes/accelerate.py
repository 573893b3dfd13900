"""Probe (run inside the vendored ComfyUI by ``ComfyUI.run``): ComfyUI's own node classes sample a
tiny Wan model with and without WanRT Accelerate; prints one JSON line of results.

``accelerate.py MODELS_DIR``: MODELS_DIR holds ``diffusion_models/tiny_wan.safetensors`` and
``loras/tiny_lora.safetensors``. The chain is KSampler's: UNETLoader [→ LoraLoaderModelOnly]
[→ WanRT Accelerate] → ModelSamplingSD3 (shift 8) → KSampler (euler, 2 steps, CFG 5).
"""

import functools
import json
import sys

from comfy.cli_args import args

args.cpu = True  # before comfy.model_management reads it

import comfy.ldm.wan.model  # noqa: E402
import comfy.model_management  # noqa: E402
import folder_paths  # noqa: E402
import nodes  # noqa: E402
import torch  # noqa: E402
from comfy_extras.nodes_model_advanced import ModelSamplingSD3  # noqa: E402

from wanrt.nodes import comfy_wan  # noqa: E402
from wanrt.nodes.accelerate import WanRTAccelerate  # noqa: E402

models = sys.argv[1]
folder_paths.add_model_folder_path("diffusion_models", f"{models}/diffusion_models", is_default=True)
folder_paths.add_model_folder_path("loras", f"{models}/loras", is_default=True)

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
        (model,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, "tiny_lora.safetensors", 1.0)
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
print(json.dumps(results))
