"""WanRT Accelerate on ComfyUI's own Wan MODEL, inside the real ComfyUI 0.33.0 (vendored).

One probe (``comfyui_probes/accelerate.py``) samples a tiny Wan 2.1 T2V model with ComfyUI's
own node classes — UNETLoader [→ LoraLoaderModelOnly] [→ WanRT Accelerate] → ModelSamplingSD3 →
KSampler, 2 euler steps with CFG — and reports the final latents' differences and which code ran
the transformer blocks. fp32 on CPU: the fast path's torch kernels round once where ComfyUI's
block rounds after each op, so latents agree to ~1e-6 relative; 1e-5 is the bound.

The probe calls ComfyUI's node classes rather than queueing a prompt of core nodes: CLIPLoader
(type wan) always builds the full-size UMT5-XXL (24 layers, 4096 wide, 256k vocabulary) whatever
the file holds, so no tiny text encoder loads there; the probe passes random 4096-wide text
embeddings instead. ComfyUI's executor runs the pack's own nodes in ``test_in_comfyui.py``.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import torch
from safetensors.torch import save_file

import wanrt
from wanrt.nodes.accelerate import WanRTAccelerate
from wanrt.wan_core.tiny import dit

PROBE = Path(__file__).resolve().parent / "comfyui_probes" / "accelerate.py"
BENCH = Path(__file__).resolve().parents[1] / "bench" / "comfyui_accelerate.py"
PARITY = 1e-5  # fp32 rounding after 2 sampling steps (see the module docstring)
COMFY_TEXT_DIM = 4096  # the text width ComfyUI's WanModel is built with, whatever the file says
LORA_LAYERS = ("blocks.0.self_attn.q", "blocks.0.cross_attn.o", "blocks.1.ffn.0")
CALLS = 2 * 2 * 2  # steps x blocks x (cond, uncond): different text lengths, so not batched


@pytest.fixture(scope="module")
def comfy_models(tmp_path_factory):
    """A models folder ComfyUI's loaders read: the tiny Wan 2.1 T2V DiT and a kohya-style LoRA.

    ComfyUI builds WanModel with a 4096-wide text input (it does not read the width from the
    file; every real file has 4096), while make-tiny's DiT takes the tiny UMT5's 64. This copy
    widens ``text_embedding.0`` so that UNETLoader loads it; everything else is make-tiny's."""
    root = tmp_path_factory.mktemp("comfy-wan")
    gen = torch.Generator().manual_seed(1)
    sd = dit.weights("wan2.1_t2v_1.3B")
    dim = sd["text_embedding.0.weight"].shape[0]
    sd["text_embedding.0.weight"] = (torch.randn(dim, COMFY_TEXT_DIM, generator=gen)
                                     * COMFY_TEXT_DIM ** -0.5)
    (root / "diffusion_models").mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()},
              root / "diffusion_models" / "tiny_wan.safetensors")
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
