"""Probe run inside the vendored ComfyUI (``ComfyUI.run``): ComfyUI's own UNETLoader path,
ModelSamplingSD3 and ``nodes.common_ksampler`` on the cases of a JSON file; saves
``{"sigmas": {scheduler: [...]}, "latents": {case: tensor}}`` with torch.save.

``python launch.py COMFY probe CASES.json MODELS_DIR OUT.pt``; each case:
``{"name", "model", "shift", "seed", "steps", "cfg", "sampler", "scheduler", "denoise",
"latent": "zeros" | "random", "advanced": null | {add_noise, start, end, leftover}, "image": bool}``.
"""

import sys

cases_path, models_dir, out_path = sys.argv[1:4]
sys.argv[1:] = ["--cpu"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import json  # noqa: E402
import types  # noqa: E402

import torch  # noqa: E402

import comfy.ldm.wan.model  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.sd  # noqa: E402
import nodes  # noqa: E402
from comfy_extras.nodes_model_advanced import ModelSamplingSD3  # noqa: E402

# The tiny test DiTs have a 64-wide text (and CLIP) input where real Wan has 4096 (1280), which
# ComfyUI fixes in WanModel: read the widths from the file instead (nothing else changes).
_detect, _mlp_proj = comfy.model_detection.detect_unet_config, comfy.ldm.wan.model.MLPProj
widths = {}


def detect_unet_config(state_dict, key_prefix, metadata=None):
    config = _detect(state_dict, key_prefix, metadata)
    if config and config.get("image_model") == "wan2.1":
        config["text_dim"] = state_dict[f"{key_prefix}text_embedding.0.weight"].shape[1]
        image = state_dict.get(f"{key_prefix}img_emb.proj.0.weight")
        widths["image"] = image.shape[0] if image is not None else 1280
    return config


comfy.model_detection.detect_unet_config = detect_unet_config
comfy.ldm.wan.model.MLPProj = lambda in_dim, *a, **k: _mlp_proj(widths.get("image", in_dim), *a, **k)

torch.set_num_threads(1)  # tiny tensors: one thread is ~10x faster on a busy machine
inputs = torch.load(cases_path.replace(".json", ".inputs.pt"))
cases = json.load(open(cases_path))
models, out = {}, {"sigmas": {}, "latents": {}}


def model_for(name, shift):
    if name not in models:
        models[name] = comfy.sd.load_diffusion_model(f"{models_dir}/diffusion_models/{name}")
    return ModelSamplingSD3().patch(models[name], shift)[0]


for scheduler in comfy.samplers.KSampler.SCHEDULERS:
    if scheduler in inputs["schedulers"]:
        for steps in (1, 4, 7):
            ms = model_for(cases[0]["model"], 5.0).get_model_object("model_sampling")
            out["sigmas"][f"{scheduler}/{steps}"] = comfy.samplers.calculate_sigmas(ms, scheduler, steps)

for case in cases:
    model = model_for(case["model"], case["shift"])
    extras = {}
    if case.get("image"):
        extras = {"concat_latent_image": inputs["concat_latent_image"], "concat_mask": inputs["concat_mask"],
                  "clip_vision_output": types.SimpleNamespace(penultimate_hidden_states=inputs["clip"])}
    positive = [[inputs["context"], dict(extras)]]
    negative = [[inputs["negative_context"], dict(extras)]]
    latent = {"samples": inputs["latent"] if case["latent"] == "random" else torch.zeros_like(inputs["latent"])}
    adv = case.get("advanced")
    for stage in (adv or [None]):
        kwargs = {} if stage is None else dict(
            disable_noise=stage["add_noise"] == "disable", start_step=stage["start"],
            last_step=stage["end"], force_full_denoise=stage["leftover"] != "enable")
        (latent,) = nodes.common_ksampler(model, case["seed"], case["steps"], case["cfg"], case["sampler"],
                                          case["scheduler"], positive, negative, latent,
                                          denoise=case.get("denoise", 1.0), **kwargs)
    out["latents"][case["name"]] = latent["samples"]
torch.save(out, out_path)
print("ok", len(out["latents"]))
