"""KSampler / KSamplerAdvanced parity with ComfyUI's own code (the vendored 0.33.0): the same tiny
DiT file, conditioning tensors, seed and settings through ComfyUI's diffusion-model loader,
ModelSamplingSD3 and ``nodes.common_ksampler`` (a probe in ComfyUI's import world) and through
ours. Sigmas must be equal (the same float32 arithmetic); latents equal within fp32 rounding of two
DiT implementations compounded over the steps (atol 1e-4 on latents of scale ~1; a wrong step
rule or noise shows up at 1e-2 and above)."""

import json
from pathlib import Path

import pytest
import torch

from wanrt.nodes import host as hosts
from wanrt.nodes.core.loaders import UNETLoader
from wanrt.nodes.core.sampling import ModelSamplingSD3, common_ksampler
from wanrt.wan_core import ksampling
from wanrt.wan_core.tiny.dit import IMAGE_DIM, TEXT_DIM

PROBE = Path(__file__).parent / "comfyui_probes" / "ksampler.py"
T2V, I2V = "wan2.1_t2v_1.3B_fp16.safetensors", "wan2.1_i2v_480p_14B_fp16.safetensors"
SHAPE = (1, 16, 3, 8, 8)  # 9 frames of 64 × 64 pixels
BASE = {"model": T2V, "shift": 5.0, "seed": 7, "steps": 4, "cfg": 3.5, "latent": "zeros"}
CASES = [
    *({**BASE, "name": f"{sampler}/{scheduler}", "sampler": sampler, "scheduler": scheduler}
      for sampler in ksampling.SAMPLERS for scheduler in ksampling.SCHEDULERS),
    # Wan 2.2 A14B split: high-noise stage keeps its leftover noise, the low-noise stage adds none
    {**BASE, "name": "two-stage", "sampler": "euler", "scheduler": "simple", "steps": 6, "advanced": [
        {"add_noise": "enable", "start": 0, "end": 3, "leftover": "enable"},
        {"add_noise": "disable", "start": 3, "end": 10000, "leftover": "disable"}]},
    {**BASE, "name": "denoise", "sampler": "dpmpp_2m", "scheduler": "normal", "denoise": 0.6,
     "latent": "random"},
    {**BASE, "name": "cfg1", "sampler": "euler_ancestral", "scheduler": "simple", "cfg": 1.0, "shift": 8.0},
    {**BASE, "name": "i2v", "model": I2V, "sampler": "uni_pc", "scheduler": "simple", "image": True},
]


def _inputs():
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(1, 1, SHAPE[2], *SHAPE[3:])
    mask[:, :, :1] = 0
    return {"context": torch.randn(1, 12, TEXT_DIM, generator=g),
            "negative_context": torch.randn(1, 12, TEXT_DIM, generator=g),
            "latent": torch.randn(SHAPE, generator=g),
            "concat_latent_image": torch.randn(SHAPE, generator=g), "concat_mask": mask,
            "clip": torch.randn(1, 257, IMAGE_DIM, generator=g),
            "schedulers": list(ksampling.SCHEDULERS)}


@pytest.fixture(scope="module")
def comfyui_results(comfyui, tiny_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ksampler-parity")
    (folder / "cases.json").write_text(json.dumps(CASES))
    torch.save(_inputs(), folder / "cases.inputs.pt")
    comfyui.run(PROBE, str(folder / "cases.json"), str(tiny_models), str(folder / "out.pt"))
    return torch.load(folder / "out.pt")


@pytest.fixture(scope="module")
def ours(tiny_models):
    host = hosts.HeadlessHost.from_paths(tiny_models, show_progress=False)
    inputs, models, results = _inputs(), {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is ~10x faster on a busy machine
    with hosts.activate(host), torch.inference_mode():
        for case in CASES:
            if case["model"] not in models:
                (models[case["model"]],) = UNETLoader().load_unet(case["model"], "default")
            (model,) = ModelSamplingSD3().patch(models[case["model"]], case["shift"])
            extras = {}
            if case.get("image"):
                from wanrt.nodes.core.conditioning import ClipVisionOutput
                extras = {"concat_latent_image": inputs["concat_latent_image"],
                          "concat_mask": inputs["concat_mask"],
                          "clip_vision_output": ClipVisionOutput(inputs["clip"])}
            positive, negative = [[inputs["context"], extras]], [[inputs["negative_context"], extras]]
            latent = {"samples": inputs["latent"] if case["latent"] == "random" else torch.zeros(SHAPE)}
            for stage in case.get("advanced") or [None]:
                kwargs = {} if stage is None else dict(
                    disable_noise=stage["add_noise"] == "disable", start_step=stage["start"],
                    last_step=stage["end"], force_full_denoise=stage["leftover"] != "enable")
                latent = common_ksampler(model, case["seed"], case["steps"], case["cfg"], case["sampler"],
                                         case["scheduler"], positive, negative, latent,
                                         denoise=case.get("denoise", 1.0), **kwargs)
            results[case["name"]] = latent["samples"]
    torch.set_num_threads(threads)
    return results


@pytest.mark.parametrize("scheduler", ksampling.SCHEDULERS)
def test_sigmas_equal_comfyuis(comfyui_results, scheduler):
    for steps in (1, 4, 7):
        theirs = comfyui_results["sigmas"][f"{scheduler}/{steps}"]
        mine = ksampling.calculate_sigmas(ksampling.FlowSampling(5.0), scheduler, steps)
        torch.testing.assert_close(mine, theirs.float(), rtol=0, atol=0)


@pytest.mark.parametrize("name", [case["name"] for case in CASES])
def test_latent_equals_comfyuis(comfyui_results, ours, name):
    theirs = comfyui_results["latents"][name].float()
    assert ours[name].shape == theirs.shape
    torch.testing.assert_close(ours[name], theirs, rtol=0, atol=1e-4)
