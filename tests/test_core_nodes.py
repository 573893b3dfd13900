"""ComfyUI's core Wan nodes (``nodes/core``): their definitions equal ComfyUI 0.33's own (the
vendored source's object_info), they are served by the runner and ``wanrt serve`` but not handed
to ComfyUI, and their building blocks behave as ComfyUI's do."""

import json
from pathlib import Path

import pytest
import torch

import wanrt
from wanrt.nodes import runner_node_classes
from wanrt.nodes.core import CORE_NODE_CLASS_MAPPINGS
from wanrt.nodes.core.logic import evaluate
from wanrt.nodes.core.model import process_in, process_out
from wanrt.server.object_info import node_info

PROBES = Path(__file__).parent / "comfyui_probes"
# Combos that list the user's files (ComfyUI's are empty in a bare install; ours list the models).
FILE_LISTS = {("CLIPLoader", "clip_name"), ("UNETLoader", "unet_name"), ("VAELoader", "vae_name"),
              ("CLIPVisionLoader", "clip_name"), ("LoraLoaderModelOnly", "lora_name"),
              ("LoadImage", "image")}
IGNORED_OPTIONS = {"tooltip", "display_name"}  # wording, not behaviour


def _normal(node: str, name: str, spec) -> tuple:
    """An input spec with combos in one spelling, tooltips dropped, file lists blanked."""
    kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    options = {k: v for k, v in options.items() if k not in IGNORED_OPTIONS}
    if options.get("multiselect") is False:
        del options["multiselect"]
    if isinstance(kind, list):
        kind, options["options"] = "COMBO", kind
    if (node, name) in FILE_LISTS:
        options["options"] = "<model files>"
    if kind == "COMFY_DYNAMICCOMBO_V3":
        options["options"] = [{"key": o["key"], "inputs": _sections(node, o["inputs"])} for o in options["options"]]
    if kind == "COMFY_AUTOGROW_V3":
        options["template"] = {**options["template"], "input": _sections(node, options["template"]["input"])}
    return kind, json.loads(json.dumps(options))


def _sections(node: str, inputs: dict) -> dict:
    return {section: {name: _normal(node, name, spec) for name, spec in specs.items()}
            for section, specs in inputs.items() if section != "hidden"}


@pytest.fixture(scope="module")
def comfyuis_object_info(comfyui):
    return json.loads(comfyui.run(PROBES / "object_info.py", ",".join(CORE_NODE_CLASS_MAPPINGS)))


@pytest.mark.parametrize("name", sorted(CORE_NODE_CLASS_MAPPINGS))
def test_definition_equals_comfyuis(comfyuis_object_info, tiny_models, name):
    from wanrt.nodes import host as hosts

    theirs = comfyuis_object_info[name]
    with hosts.activate(hosts.HeadlessHost.from_paths(tiny_models)):
        ours = json.loads(json.dumps(node_info(name, CORE_NODE_CLASS_MAPPINGS[name])))
    assert _sections(name, ours["input"]) == _sections(name, theirs["input"])
    assert {k: v for k, v in ours["input_order"].items() if k != "hidden"} == \
        {k: v for k, v in theirs["input_order"].items() if k != "hidden"}
    assert ours["output"] == list(theirs["output"])
    assert ours["output_name"] == list(theirs["output_name"])
    assert ours["category"] == theirs["category"]


def test_core_nodes_run_headless_but_are_not_handed_to_comfyui():
    assert set(CORE_NODE_CLASS_MAPPINGS) <= set(runner_node_classes())
    assert not set(CORE_NODE_CLASS_MAPPINGS) & set(wanrt.NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("channels", [16, 48])
def test_latent_format_round_trips_and_normalises_per_channel(channels):
    raw = torch.randn(1, channels, 2, 3, 3) * 3 + 1
    torch.testing.assert_close(process_out(process_in(raw)), raw)
    assert process_in(raw).shape == raw.shape


def test_math_expression_evaluates_the_templates_duration_formula():
    assert evaluate("floor(a * b) + 1", {"a": 5.0, "b": 16.0}) == 81
    with pytest.raises(ValueError, match="not supported"):
        evaluate("__import__('os')", {})


def test_sizes_a_wan_model_cannot_take_are_rejected_at_validation(tiny_models, tmp_path):
    from wanrt.nodes import host as hosts
    from wanrt.runner import Executor, PromptError
    from test_core_templates import TEMPLATES, template

    executor = Executor(hosts.HeadlessHost.from_paths(tiny_models, output_dir=tmp_path))
    overrides = {**TEMPLATES["text_to_video_wan"][0], "40.width": 72}
    with pytest.raises(PromptError, match="width=72: a Wan model needs a multiple of 16"):
        executor.run(template("text_to_video_wan"), overrides)
    overrides = {**TEMPLATES["video_wan2_2_5B_ti2v"][0], "55.height": 48}
    with pytest.raises(PromptError, match="height=48: a Wan model needs a multiple of 32"):
        executor.run(template("video_wan2_2_5B_ti2v"), overrides)


def test_accelerate_gives_a_new_model_with_the_attention_chosen(tiny_models):
    from wanrt.nodes import host as hosts
    from wanrt.wan_core.runtime import AttentionOptions
    from wanrt.nodes.core.accelerate import accelerate_core_model
    from wanrt.nodes.core.loaders import UNETLoader

    with hosts.activate(hosts.HeadlessHost.from_paths(tiny_models)):
        (model,) = UNETLoader().load_unet("wan2.1_t2v_1.3B_fp16.safetensors", "default")
    fast = accelerate_core_model(model, "off", AttentionOptions(backend="sdpa-efficient"))
    backends = lambda dit: {m.backend for m in dit.modules() if hasattr(m, "backend")}  # noqa: E731
    assert backends(fast.dit) == {"sdpa-efficient"} and backends(model.dit) == {"auto"}
    assert fast.shift == model.shift
    assert fast.dit.blocks[0].ffn[0].weight is model.dit.blocks[0].ffn[0].weight  # weights shared


def test_accelerate_sage8_keeps_the_steps_and_blocks_it_is_told_dense(tiny_models):
    """KSamplerAdvanced runs steps 1..2 of 3 (a Wan 2.2 low-noise expert's share): the DiT is
    told each step's place in the whole run, so dense_last_steps 1 keeps step 2 dense, and the
    plan is lifted when sampling ends."""
    from wanrt.nodes import host as hosts
    from wanrt.nodes.accelerate import WanRTAccelerate
    from wanrt.nodes.core.loaders import UNETLoader
    from wanrt.nodes.core.sampling import common_ksampler

    with hosts.activate(hosts.HeadlessHost.from_paths(tiny_models, show_progress=False)):
        (model,) = UNETLoader().load_unet("wan2.1_t2v_1.3B_fp16.safetensors", "default")
        (fast,) = WanRTAccelerate().accelerate(model, "off", "sage8", dense_first_blocks=1,
                                               dense_last_steps=1)
        ran = []
        fast.dit.register_forward_pre_hook(lambda dit, args: ran.append(
            tuple(block.self_attn.backend for block in dit.blocks)))
        context = [[torch.randn(1, 7, fast.dit.config.text_dim), {}]]
        common_ksampler(fast, 1, 3, 1.0, "euler", "simple", context, context,
                        {"samples": torch.zeros(1, 16, 2, 4, 4)}, start_step=1, last_step=3)
    assert ran == [("auto", "sage8"), ("auto", "auto")]
    assert fast.dit.blocks[1].self_attn.backend == "sage8"  # outside sampling: the plan itself


def test_step_cache_model_node_caches_core_ksampler_runs_after_accelerate(tiny_models):
    """UNETLoader → WanRT Accelerate → WanRT Step Cache (MODEL) → KSampler: the cache decides per
    CFG branch at each step; KSampler reports the forwards run and skipped; each run starts
    afresh (the same result twice), and the input model stays uncached."""
    from wanrt.nodes import host as hosts
    from wanrt.nodes.accelerate import WanRTAccelerate
    from wanrt.nodes.core.loaders import UNETLoader
    from wanrt.nodes.core.sampling import KSampler
    from wanrt.nodes.step_cache import WanRTStepCacheModel

    settings = dict(policy="first_block", threshold=10.0, start_percent=0.0, end_percent=1.0,
                    retention=0.2, constants="auto", allow_few_steps=False)
    with hosts.activate(hosts.HeadlessHost.from_paths(tiny_models, show_progress=False)):
        (model,) = UNETLoader().load_unet("wan2.1_t2v_1.3B_fp16.safetensors", "default")
        (fast,) = WanRTAccelerate().accelerate(model, "off", "auto")
        cached = WanRTStepCacheModel().attach(fast, **settings)["result"][0]
        torch.manual_seed(0)
        positive = [[torch.randn(1, 7, model.dit.config.text_dim), {}]]
        negative = [[torch.randn(1, 5, model.dit.config.text_dim), {}]]
        latent = {"samples": torch.zeros(1, 16, 2, 4, 4)}
        run = lambda m: KSampler().sample(m, 1, 10, 5.0, "euler", "simple", positive,  # noqa: E731
                                          negative, latent)
        first, again, plain = run(cached), run(cached), run(fast)
    counts = cached.step_cache.counts["model"]  # of the last run, the same as the first's
    assert counts["run"] + counts["skipped"] == 2 * 10 and counts["skipped"] > 0
    assert first["ui"]["text"] == [f"step cache: first-block cache threshold 10: model "
                                   f"{counts['run']} forwards run, {counts['skipped']} skipped"]
    assert torch.equal(first["result"][0]["samples"], again["result"][0]["samples"])
    assert plain == (plain[0],) and fast.step_cache is None
    assert not torch.equal(first["result"][0]["samples"], plain[0]["samples"])
