"""ComfyUI's own Wan templates (``comfyui-workflow-templates-json`` 0.1.123, unchanged) run on the
tiny models through ``wanrt run``'s runner and through ``wanrt serve``; only sizes and steps are
shrunk, with ``--set``-style overrides naming the templates' own node ids."""

import json
import time
from pathlib import Path

import comfyui_workflow_templates_json
import numpy as np
import pytest
import requests
from PIL import Image

from wanrt.nodes import host as hosts
from wanrt.nodes import runner_node_classes
from wanrt.runner import Executor, apply_overrides, to_api_prompt
from wanrt.wan_core.video_io import read_video

TEMPLATES_DIR = Path(comfyui_workflow_templates_json.__file__).parent / "templates"

# template -> (overrides, frames, height, width of the saved video)
TEMPLATES = {
    "text_to_video_wan": ({"40.width": 64, "40.height": 48, "40.length": 9, "3.steps": 2}, 9, 48, 64),
    "image_to_video_wan": ({"50.width": 64, "50.height": 48, "50.length": 9, "3.steps": 2}, 9, 48, 64),
    "wan2.1_flf2v_720_f16": ({"83.width": 64, "83.height": 48, "83.length": 9, "90.steps": 2}, 9, 48, 64),
    "video_wan2_2_5B_ti2v": ({"55.width": 64, "55.height": 64, "55.length": 9, "3.steps": 2}, 9, 64, 64),
    # its LoRA path is bypassed: the A14B high / low-noise split of 20 steps, no LoRA
    "video_wan2_2_14B_flf2v": ({"81.width": 64, "81.height": 48, "81.length": 9, "84.steps": 2,
                                "84.end_at_step": 1, "87.steps": 2, "87.start_at_step": 1}, 9, 48, 64),
}
# The 4-step distill-LoRA templates: a switch picks the LoRA path (make-tiny writes the lightx2v
# LoRA files they name) or the plain 20-step one; both paths are validated, as ComfyUI does.
LORA_TEMPLATES = {
    "video_wan2_2_14B_t2v": ({"128:74.width": 64, "128:74.height": 48, "128:126.value": 0.5,
                              "128:114.value": 2, "128:115.value": 1}, 9, 48, 64),
    "video_wan2_2_14B_i2v": ({"129:98.width": 64, "129:98.height": 48, "129:161.value": 0.5,
                              "129:128.value": 2, "129:127.value": 1}, 9, 48, 64),
}


def template(name: str) -> dict:
    return json.loads((TEMPLATES_DIR / f"{name}.json").read_text(encoding="utf-8"))


def input_images(workflow: dict) -> set[str]:
    """The LoadImage file names of a workflow (its subgraphs included)."""
    graphs = [workflow, *(workflow.get("definitions") or {}).get("subgraphs", [])]
    return {node["widgets_values"][0] for graph in graphs for node in graph["nodes"]
            if node["type"] == "LoadImage"}


def write_inputs(workflow: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pixels = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype("uint8")
    for name in input_images(workflow):
        Image.fromarray(pixels).save(folder / name)


@pytest.mark.parametrize("name", [*TEMPLATES, *LORA_TEMPLATES])
def test_template_runs_unchanged_headless(tiny_models, tmp_path, name):
    overrides, frames, height, width = {**TEMPLATES, **LORA_TEMPLATES}[name]
    workflow = template(name)
    write_inputs(workflow, tmp_path / "input")
    host = hosts.HeadlessHost.from_paths(tiny_models, output_dir=tmp_path / "output", input_dir=tmp_path / "input",
                                         show_progress=False)
    result = Executor(host).run(workflow, overrides)
    assert result.ok, result.error
    (video,) = result.files
    assert read_video(video).shape == (frames, height, width, 3)


def test_every_node_of_the_seven_templates_is_served(served):
    url, _ = served
    info = requests.get(f"{url}/object_info").json()
    for name in [*TEMPLATES, *LORA_TEMPLATES]:
        workflow = template(name)
        graphs = [workflow, *(workflow.get("definitions") or {}).get("subgraphs", [])]
        subgraph_ids = {graph.get("id") for graph in graphs[1:]}
        used = {node["type"] for graph in graphs for node in graph["nodes"]} - subgraph_ids
        assert used - set(info) <= {"MarkdownNote", "Note"}, name  # frontend-only nodes


@pytest.mark.parametrize("name", ["text_to_video_wan", "image_to_video_wan"])
def test_template_runs_in_wanrt_serve(served, tiny_models, tmp_path, name):
    url, output = served
    overrides, frames, height, width = TEMPLATES[name]
    workflow = template(name)
    write_inputs(workflow, tmp_path / "input")
    with hosts.activate(hosts.HeadlessHost.from_paths(tiny_models, input_dir=tmp_path / "input")):
        prompt = to_api_prompt(workflow, runner_node_classes())  # what the frontend sends
        apply_overrides(prompt, overrides, runner_node_classes())
    answer = requests.post(f"{url}/prompt", json={"prompt": prompt, "extra_data": {
        "extra_pnginfo": {"workflow": workflow}}})
    assert answer.status_code == 200, answer.text
    prompt_id = answer.json()["prompt_id"]
    deadline = time.monotonic() + 300
    while prompt_id not in (history := requests.get(f"{url}/history/{prompt_id}").json()):
        assert time.monotonic() < deadline, "the prompt did not finish"
        time.sleep(0.2)
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "success", entry["status"]
    (video,) = [item for out in entry["outputs"].values() for item in out.get("images", [])]
    assert read_video(output / video["subfolder"] / video["filename"]).shape == (frames, height, width, 3)
