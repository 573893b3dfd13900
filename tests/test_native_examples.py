"""The ComfyUI-native flavour of every example (workflows/comfyui_native: ComfyUI's core nodes
plus WanRT Accelerate after the loader / LoRA) and the 4-step distill-LoRA workflows for
Wan 2.2 A14B T2V and I2V, in UI and API format: the API file is the runner's conversion of the
UI file, they run headless on the tiny models, and the LoRA ones use the settings of ComfyUI's
own template for them."""

import json
import pathlib

import pytest
from test_core_templates import template

import wanrt
from wanrt.nodes import host as hosts
from wanrt.nodes import runner_node_classes
from wanrt.runner import Executor, to_api_prompt
from wanrt.runner.convert import is_ui_workflow
from wanrt.wan_core.video_io import read_video

NATIVE = pathlib.Path(wanrt.__file__).parent / "workflows" / "comfyui_native"
EXAMPLES = ["wan2.1_flf2v_720p_14B", "wan2.1_i2v_480p_14B", "wan2.1_t2v_1.3B", "wan2.1_t2v_14B",
            "wan2.2_t2v_A14B", "wan2.2_ti2v_5B"]
LORA_EXAMPLES = ["wan2.2_i2v_A14B_4step_lora", "wan2.2_t2v_A14B_4step_lora"]
STEP_CACHE_EXAMPLES = ["wan2.1_t2v_1.3B_step_cache"]  # the 1.3B one + WanRT Step Cache (MODEL)
ALL = EXAMPLES + LORA_EXAMPLES + STEP_CACHE_EXAMPLES
LATENT, SAMPLER, SECOND_SAMPLER, ACCELERATORS = "8", "9", "21", ("2", "19")


def load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_example_has_a_native_flavour_in_both_formats():
    names = sorted(p.stem for p in NATIVE.glob("*.json"))
    assert names == sorted(ALL)
    assert sorted(p.stem for p in (NATIVE / "api").glob("*.json")) == names
    for name in names:
        assert is_ui_workflow(load(NATIVE / f"{name}.json"))


@pytest.mark.parametrize("name", ALL)
def test_api_file_is_the_runner_conversion_of_the_ui_file(tiny_models, name):
    with hosts.activate(hosts.HeadlessHost.from_paths(tiny_models)):
        assert to_api_prompt(load(NATIVE / f"{name}.json"), runner_node_classes()) == load(NATIVE / "api" / f"{name}.json")


@pytest.mark.parametrize("name", ALL)
def test_accelerate_follows_every_diffusion_model(name):
    prompt = load(NATIVE / "api" / f"{name}.json")
    loaders = [i for i, node in prompt.items() if node["class_type"] in ("UNETLoader", "LoraLoaderModelOnly")]
    for node in prompt.values():
        if node["class_type"] == "ModelSamplingSD3":
            source = prompt[node["inputs"]["model"][0]]
            if source["class_type"] == "WanRTStepCacheModel":  # the cache goes after Accelerate
                source = prompt[source["inputs"]["model"][0]]
            assert source["class_type"] == "WanRTAccelerate"
        if node["class_type"] == "WanRTAccelerate":
            source = node["inputs"]["model"][0]
            assert source in loaders and prompt[source]["class_type"] == (
                "LoraLoaderModelOnly" if name in LORA_EXAMPLES else "UNETLoader")


@pytest.mark.parametrize("name, template_name, subgraph", [
    ("wan2.2_t2v_A14B_4step_lora", "video_wan2_2_14B_t2v", "128"),
    ("wan2.2_i2v_A14B_4step_lora", "video_wan2_2_14B_i2v", "129")])
def test_lora_examples_use_the_settings_of_comfyuis_template(tiny_models, name, template_name, subgraph):
    ours = load(NATIVE / "api" / f"{name}.json")
    with hosts.activate(hosts.HeadlessHost.from_paths(tiny_models)):
        theirs = to_api_prompt(template(template_name), runner_node_classes())
    # the template's LoRA path: its switches' on_true inputs (steps, split, cfg) and LoRA files
    on_true = {theirs[i]["_meta"]["title"]: theirs[theirs[i]["inputs"]["on_true"][0]]["inputs"].get("value")
               for i, n in theirs.items() if n["class_type"] == "ComfySwitchNode"}
    lora_files = sorted(n["inputs"]["lora_name"] for n in theirs.values() if n["class_type"] == "LoraLoaderModelOnly")
    shifts = {n["inputs"]["shift"] for n in theirs.values() if n["class_type"] == "ModelSamplingSD3"}
    samplers = {(n["inputs"]["sampler_name"], n["inputs"]["scheduler"])
                for n in theirs.values() if n["class_type"] == "KSamplerAdvanced"}
    steps = next(v for k, v in on_true.items() if "split" not in k.lower() and "step" in k.lower())
    split = next(v for k, v in on_true.items() if "split" in k.lower())
    cfg = next(v for k, v in on_true.items() if "cfg" in k.lower())
    assert (steps, split, cfg) == (4, 2, 1)
    high, low = ours[SAMPLER]["inputs"], ours[SECOND_SAMPLER]["inputs"]
    assert high["steps"] == low["steps"] == steps and high["cfg"] == low["cfg"] == cfg
    assert high["end_at_step"] == low["start_at_step"] == split
    assert {(high["sampler_name"], high["scheduler"])} == samplers == {("euler", "simple")}
    assert {round(n["inputs"]["shift"], 6) for n in ours.values() if n["class_type"] == "ModelSamplingSD3"} == \
        {round(s, 6) for s in shifts} == {5.0}
    assert sorted(n["inputs"]["lora_name"] for n in ours.values() if n["class_type"] == "LoraLoaderModelOnly") == lora_files


def tiny(prompt: dict) -> dict:
    """Overrides for a seconds-long CPU run: 32 × 32 × 5 frames, 2 steps, no compile."""
    size = {f"{LATENT}.{k}": v for k, v in (("width", 32), ("height", 32), ("length", 5))}
    steps = {f"{i}.steps": 2 for i in (SAMPLER, SECOND_SAMPLER) if i in prompt}
    split = {f"{SAMPLER}.end_at_step": 1, f"{SECOND_SAMPLER}.start_at_step": 1} if SECOND_SAMPLER in prompt else {}
    compile_off = {f"{i}.compile": "off" for i in ACCELERATORS if i in prompt}
    # the tiny DiTs' widths have no published constants: take the 1.3B's
    constants = {f"{i}.constants": "t2v-1.3B" for i, n in prompt.items()
                 if n["class_type"] == "WanRTStepCacheModel"}
    return {**size, **steps, **split, **compile_off, **constants}


@pytest.mark.parametrize("name", ALL)
def test_native_example_runs_headless(tiny_models, tmp_path, name):
    prompt = load(NATIVE / "api" / f"{name}.json")
    host = hosts.HeadlessHost.from_paths(tiny_models, output_dir=tmp_path, show_progress=False)
    result = Executor(host, runner_node_classes()).run(prompt, tiny(prompt))
    assert result.ok, result.error
    (video,) = result.files
    assert read_video(video).shape == (5, 32, 32, 3)


def test_the_step_cache_example_caches_the_1_3b_example_with_magcaches_published_setting(
        tiny_models, tmp_path):
    """Its only change to the 1.3B example is WanRT Step Cache (MODEL) between Accelerate and
    ModelSamplingSD3, at MagCache's published setting; run with 10 steps its KSampler reports
    the forwards skipped."""
    plain = load(NATIVE / "api" / "wan2.1_t2v_1.3B.json")
    cached = load(NATIVE / "api" / "wan2.1_t2v_1.3B_step_cache.json")
    step_cache = [i for i, n in cached.items() if n["class_type"] == "WanRTStepCacheModel"]
    assert len(step_cache) == 1 and cached[step_cache[0]]["inputs"]["policy"] == "magcache"
    assert cached[step_cache[0]]["inputs"]["threshold"] == 0  # the authors' value
    assert set(cached) - set(plain) == set(step_cache)
    host = hosts.HeadlessHost.from_paths(tiny_models, output_dir=tmp_path, show_progress=False)
    result = Executor(host, runner_node_classes()).run(cached, {**tiny(cached), f"{SAMPLER}.steps": 10})
    assert result.ok, result.error
    (summary,) = result.outputs[SAMPLER]["text"]
    assert summary.startswith("step cache: magcache") and " 0 skipped" not in summary
