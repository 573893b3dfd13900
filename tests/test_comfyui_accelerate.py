"""WanRT Accelerate on ComfyUI's own Wan MODEL, inside the real ComfyUI 0.33.0 (vendored).

One probe (``comfyui_probes/accelerate.py``) samples a tiny Wan 2.1 T2V model with ComfyUI's
own node classes — UNETLoader [→ LoraLoaderModelOnly] [→ WanRT Accelerate] → ModelSamplingSD3 →
KSampler, 2 euler steps with CFG — and reports the final latents' differences and which code ran
the transformer blocks. fp32 on CPU: the fast path's torch kernels round once where ComfyUI's
block rounds after each op, so latents agree to ~1e-6 relative; 1e-5 is the bound.

A prompt of core nodes with WanRT Accelerate also runs through ComfyUI's own server and
executor, to the decoded video. No tiny text encoder or tiny-width DiT loads in ComfyUI (see
``comfyui_test_nodes``): both use make-tiny's DiT widened to ComfyUI's 4096 text width, and random
text embeddings stand in for CLIPLoader + CLIPTextEncode.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from comfyui_test_nodes import TINY_WAN, write_tiny_wan
from dit_helpers import rel_l2
from vendored_comfyui import queue

import wanrt
from wanrt.nodes.accelerate import WanRTAccelerate

PROBE = Path(__file__).resolve().parent / "comfyui_probes" / "accelerate.py"
BENCH = Path(__file__).resolve().parents[1] / "bench" / "comfyui_accelerate.py"
PARITY = 1e-5  # fp32 rounding after 2 sampling steps (see the module docstring)
LORA_LAYERS = ("blocks.0.self_attn.q", "blocks.0.cross_attn.o", "blocks.1.ffn.0")
CALLS = 2 * 2 * 2  # steps x blocks x (cond, uncond): different text lengths, so not batched


@pytest.fixture(scope="module")
def comfy_models(tmp_path_factory):
    """A models folder ComfyUI's loaders read: the tiny Wan 2.1 T2V DiT (``write_tiny_wan``:
    make-tiny's, with ComfyUI's 4096-wide text input) and a kohya-style LoRA for it."""
    root = tmp_path_factory.mktemp("comfy-wan")
    sd = write_tiny_wan(root / "diffusion_models" / TINY_WAN)
    gen = torch.Generator().manual_seed(2)
    lora = {}
    for layer in LORA_LAYERS:
        out_features, in_features = sd[f"{layer}.weight"].shape
        key = f"diffusion_model.{layer}"
        lora[f"{key}.lora_up.weight"] = torch.randn(out_features, 4, generator=gen) / 2
        lora[f"{key}.lora_down.weight"] = torch.randn(4, in_features, generator=gen) / 2
        lora[f"{key}.alpha"] = torch.tensor(4.0)
    (root / "loras").mkdir()
    save_file(lora, root / "loras" / "tiny_lora.safetensors")
    return root


@pytest.fixture(scope="module")
def probe(comfyui, comfy_models):
    return json.loads(comfyui.run(PROBE, str(comfy_models)).strip().splitlines()[-1])


def test_comfyui_lists_wanrt_accelerate_as_model_to_model(comfyui_server):
    url, _ = comfyui_server
    node = requests.get(f"{url}/object_info/WanRTAccelerate").json()["WanRTAccelerate"]
    assert node["display_name"] == "WanRT Accelerate"
    assert node["input"]["required"]["model"][0] == "MODEL" and node["output"] == ["MODEL"]
    assert node["input"]["required"]["compile"][1]["default"] == "blocks"


def core_prompt(accelerate: bool, prefix: str) -> dict:
    """UNETLoader [→ WanRT Accelerate] → ModelSamplingSD3 → KSampler → VAEDecode → Save Animated
    WEBP, the latent also saved (SaveLatent); 64x48, 9 frames, 2 euler steps, CFG 5."""
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_WAN,
                                                       "weight_dtype": "default"}},
        "2": {"class_type": "WanRTAccelerate", "inputs": {"model": ["1", 0], "compile": "off",
                                                            "attention": "auto"}},
        "3": {"class_type": "ModelSamplingSD3",
              "inputs": {"model": ["2" if accelerate else "1", 0], "shift": 8.0}},
        "4": {"class_type": "WanRTTestTextEmbedding", "inputs": {"seed": 1, "tokens": 7}},
        "5": {"class_type": "WanRTTestTextEmbedding", "inputs": {"seed": 2, "tokens": 5}},
        "6": {"class_type": "EmptyHunyuanLatentVideo",
              "inputs": {"width": 64, "height": 48, "length": 9, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["3", 0], "seed": 42, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["4", 0], "negative": ["5", 0],
            "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["8", 0]}},
        "10": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["9", 0], "filename_prefix": prefix, "fps": 16.0, "lossless": True,
            "quality": 100, "method": "fastest"}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0],
                                                       "filename_prefix": prefix}},
    }
    if not accelerate:
        del prompt["2"]
    return prompt


def test_comfyuis_executor_runs_a_core_wan_prompt_through_wanrt_accelerate(comfyui_server):
    url, base = comfyui_server
    latents, frames = {}, {}
    for accelerate in (False, True):
        entry = queue(url, core_prompt(accelerate, f"accelerate/{accelerate}"))
        assert entry["status"]["status_str"] == "success", entry["status"]
        outputs = entry["outputs"]
        (saved,) = outputs["11"]["latents"]
        latents[accelerate] = load_file(base / "output" / saved["subfolder"] / saved["filename"])[
            "latent_tensor"]
        (video,) = outputs["10"]["images"]
        with Image.open(base / "output" / video["subfolder"] / video["filename"]) as webp:
            frames[accelerate] = (webp.n_frames, webp.size)
    assert frames[True] == frames[False] == (9, (64, 48))
    assert latents[True].shape == (1, 16, 3, 6, 8)
    assert rel_l2(latents[True], latents[False]) < PARITY


def test_accelerated_model_runs_every_block_through_wanrt_and_matches_comfyui(probe):
    assert probe["base_calls"] == {"comfy": CALLS, "wanrt": 0}
    assert probe["fast_calls"] == {"comfy": 0, "wanrt": CALLS}
    assert probe["fast_vs_base"] < PARITY


def test_lora_loaded_before_accelerate_takes_effect_as_in_comfyui(probe):
    assert probe["lora_vs_base"] > 0.05  # the LoRA changes the result...
    assert probe["lora_fast_calls"] == {"comfy": 0, "wanrt": CALLS}
    assert probe["lora_fast_vs_lora_base"] < PARITY  # ...exactly as ComfyUI applies it


def test_per_frame_timesteps_i2v_cross_attention_and_attention_overrides_match_comfyui(probe):
    # single blocks: e [B, F, 6, C] (F dividing the tokens or not, as ComfyUI's repeat_e),
    # Wan 2.1 I2V cross-attention with CLIP tokens, another node's optimized_attention_override
    blocks = probe["blocks"]
    for case in ("per_frame", "per_frame_uneven", "i2v", "attention_override"):
        assert blocks[case] < PARITY, case
    assert blocks["override_calls"] == 2 * 2  # self + cross attention, in WanRT's and ComfyUI's


def test_sage8_runs_where_the_plan_says_with_the_first_block_and_step_dense(probe):
    # Accelerate(attention sage8, dense_first_blocks 1, dense_first_steps 1) on 2 blocks, 2 steps:
    # cross-attention stays dense; the self-attention of block 1 at step 1 alone is 8-bit
    chosen = probe["sage8_backends"]
    assert chosen[:2] == ["auto", "auto"]  # each block's cross-attention, chosen once
    pairs = list(zip(chosen[2::2], chosen[3::2]))  # (block 0, block 1) per forward
    forwards_per_step = len(pairs) // 2
    assert forwards_per_step >= 1
    assert pairs == [("auto", "auto")] * forwards_per_step + [("auto", "sage8")] * forwards_per_step
    assert probe["sage8_vs_base"] < 0.05  # 8-bit attention in one block at one step


def test_step_cache_model_node_caches_comfyuis_ksampler_after_accelerate(probe):
    # UNETLoader → WanRT Accelerate → WanRT Step Cache (MODEL) → ModelSamplingSD3 → KSampler,
    # 10 steps with CFG: a threshold that skips nothing gives the uncached latent (every forward
    # through the cache: TeaCache reads the time embedding); first-block, MagCache and EasyCache
    # skip at a permissive threshold (TeaCache's published rescaling of the random model's time
    # embedding change stays above any threshold: its skips are tested on our model); each
    # sampler call is a fresh run (the same latent twice) and logs its forwards
    runs = probe["step_cache"]
    for policy, name in (("first_block_exact", "first-block cache"), ("teacache", "teacache")):
        assert runs[policy]["vs_uncached"] < 1e-6
        assert runs[policy]["summaries"] == [
            f"WanRT step cache: {name} threshold 1e-09: model 20 forwards run, 0 skipped"] * 2
    for policy in ("first_block", "magcache", "easycache"):
        run = runs[policy]
        assert run["runs_equal"], policy
        (summary, again) = run["summaries"]
        skipped = int(summary.split(", ")[-1].split()[0])
        assert summary == again and skipped > 0, (policy, summary)
        assert 0 < run["vs_uncached"] < 0.5, policy
    assert "no published constants for t2v-256d" in probe["step_cache_no_constants"]
    # ComfyUI's Wan 2.1 T2V 1.3B / 14B, 2.1 I2V 14B, 2.2 I2V A14B expert, 2.2 TI2V 5B
    assert probe["variants"] == ["t2v-1.3B", "t2v-14B", "i2v-14B", "i2v-A14B", "ti2v-5B"]


def test_low_vram_casting_and_on_the_fly_weight_patches_are_honoured(probe):
    # as ComfyUI's partial loading sets them: comfy_cast_weights on every layer, weight/bias
    # functions (LoRA applied per call) on a norm weight, a Linear weight and a LayerNorm bias
    assert probe["blocks"]["lowvram_patch_effect"] > 0.01
    assert probe["blocks"]["lowvram_patched"] < PARITY


def test_a_patch_the_fast_path_does_not_implement_runs_comfyuis_block(probe):
    # an attn1_patch (set_model_attn1_patch) is honoured by ComfyUI's own block forward
    assert probe["patched_fast_calls"] == {"comfy": CALLS, "wanrt": 0}
    assert probe["patched_fast_vs_patched_base"] < PARITY


def test_compile_blocks_traces_one_graph_shared_by_all_blocks(probe):
    # Dynamo (eager backend on CPU) over ComfyUI's own layers: one graph, one recompile when the
    # text length changes between cond and uncond, never one per block
    assert probe["compiled_calls"] == {"comfy": 0, "wanrt": CALLS}
    assert probe["compiled_graphs"] <= 2
    assert probe["compiled_vs_base"] < PARITY


def test_compile_full_is_comfyuis_own_torch_compile_wrapper_around_the_accelerated_blocks(probe):
    full = probe["full_mode"]
    assert full["compile_wrappers"] == 1  # set_torch_compile_wrapper's, on apply_model
    assert full["block_patches"] == [f"diffusion_model.blocks.{i}.forward" for i in range(2)]
    assert full["input_untouched"]  # the node returns a clone


def test_the_fused_kernels_switch_reaches_comfyuis_accelerated_blocks(probe):
    # simulated CUDA policy: Triton where the platform runs it (None), torch when switched off
    assert probe["kernel_impls"] == [None, "torch"]


def test_comfyui_removes_the_block_patches_when_it_unloads_the_model(probe):
    assert probe["object_patches_left"] == 0


def test_anything_but_a_comfyui_model_is_a_clear_type_error():
    assert wanrt.NODE_CLASS_MAPPINGS["WanRTAccelerate"] is WanRTAccelerate
    with pytest.raises(TypeError, match=r"WanRT Accelerate: input 'model' must be ComfyUI's MODEL"):
        WanRTAccelerate().accelerate(torch.nn.Linear(2, 2), "off", "auto")


def test_the_comfyui_accelerate_bench_runs_tiny_on_cpu(comfyui):
    result = subprocess.run([sys.executable, str(BENCH), "--tiny", "--steps", "2",
                             "--comfyui", str(comfyui.root)],
                            capture_output=True, text=True, timeout=300, cwd=comfyui.root)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["device"] == "cpu" and summary["compile"] == "off"
    assert summary["comfyui"]["ms_per_step"] > 0 and summary["wanrt"]["ms_per_step"] > 0
    assert summary["ratio_wanrt_over_comfyui"] > 0
    assert summary["rel_l2_final_latent"] < PARITY
