"""WanRT models under the vendored real ComfyUI's memory management (``nodes/comfy_memory.py``).

A probe script runs inside ComfyUI's import world on the CPU (``--cpu``): a tiny DiT and VAE are
registered with the host's residency policy. ``cpu:1`` stands in for the offload device (ComfyUI
on the CPU offloads to the CPU itself, where a park would move nothing to see).
"""

import json

PROBE = r'''
import json
from comfy.cli_args import args
args.cpu = True
import comfy.model_management as mm
import folder_paths  # noqa: F401  (from here on, host.current() is ComfyUI's)
import torch
from wanrt.nodes import host
from wanrt.nodes.comfy_memory import ComfyResidency, comfy_residency
from wanrt.wan_core.dit import DiTConfig, WanModel, init_random_
from wanrt.wan_core.dit.model import weight_sharing_copy

config = DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, in_dim=16, out_dim=16,
                   text_dim=16, freq_dim=16)
out = {"host_policy": type(host.current().residency()).__name__,
       "host_policy_is_shared": host.current().residency() is comfy_residency()}
res = ComfyResidency(offload_device="cpu:1")
dit, vae = init_random_(WanModel(config)), torch.nn.Conv3d(4, 4, 3)
res.register(dit, "dit", "tiny dit")
res.register(vae, "vae", "tiny vae")  # parked at once

def loaded():
    return sorted((res._entry(p.model).label, lm.model_memory(), lm.model_loaded_memory())
                  for lm in mm.current_loaded_models for p in [lm.model])

res.load(dit)
out["after_load"] = loaded()
res.load(dit)  # the next sampler run: ComfyUI pops and re-adds it, nothing moves
lora = weight_sharing_copy(dit)  # a LoRA copy: shares the weights, ComfyUI loads the copy
res.load(lora)
out["patcher_moves_the_copy"] = res.patcher(lora).model is lora
out["dit_bytes"] = sum(p.numel() * 4 for p in dit.parameters())
with res.use(vae, "vae", "VAE decode"):
    out["during_decode"] = loaded()
out["after_decode"] = loaded()
mm.unload_all_models()  # what POST /free {"unload_models": true} runs
out["after_unload"] = loaded()
out["dit_where"] = res.where(dit)
out["moves"] = list(res.moves)
res.load(dit)
mm.free_memory(1e30, mm.get_torch_device())  # ComfyUI making room for another model
out["after_free_memory"] = loaded()
print(json.dumps(out))
'''


def test_comfyui_loads_lists_and_unloads_wanrt_models(comfyui, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    out = json.loads(comfyui.run(probe).strip().splitlines()[-1])
    assert out["host_policy"] == "ComfyResidency" and out["host_policy_is_shared"]
    dit = out["dit_bytes"]
    # ComfyUI lists the DiT with its size, all of it loaded
    assert out["after_load"] == [["tiny dit", dit, dit]]
    assert out["patcher_moves_the_copy"]
    vae = 4 * 4 * 27 * 4 + 4 * 4
    assert out["during_decode"] == [["tiny dit", dit, dit], ["tiny vae", vae, vae]]
    # the VAE leaves the device, and ComfyUI's list, when its stage ends
    assert out["after_decode"] == [["tiny dit", dit, dit]]
    # ComfyUI's unload moves our model off the device
    assert out["after_unload"] == [] and out["dit_where"] == "offload"
    assert out["moves"] == [["park", "tiny vae", "cpu:1"], ["load", "tiny vae", "cpu"],
                            ["park", "tiny vae", "cpu:1"], ["park", "tiny dit", "cpu:1"]]
    assert out["after_free_memory"] == []
