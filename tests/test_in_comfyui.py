"""The pack inside the real ComfyUI 0.33.0 (vendored): imported as a cloned custom node, listed by
ComfyUI's own server, and a WanRT prompt executed by ComfyUI's own executor on tiny models."""

import copy
import json
from pathlib import Path

import requests
from vendored_comfyui import PACK_NAME, queue

import wanrt
from wanrt.wan_core.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]


def test_comfyui_lists_every_wanrt_node_as_a_custom_node(comfyui_server):
    url, _ = comfyui_server
    info = requests.get(f"{url}/object_info").json()
    ours = {name: info[name] for name in wanrt.NODE_CLASS_MAPPINGS}
    assert {node["python_module"] for node in ours.values()} == {f"custom_nodes.{PACK_NAME}"}
    assert {node["category"].split("/")[0] for node in ours.values()} == {"WanRT"}


def test_comfyui_executes_the_t2v_example_made_of_wanrt_nodes(comfyui_server):
    url, base = comfyui_server
    prompt = copy.deepcopy(json.loads((ROOT / "workflows/api/wan2.1_t2v_1.3B.json").read_text()))
    prompt["2"]["inputs"]["mode"] = "off"
    prompt["6"]["inputs"].update(width=64, height=48, length=9)
    prompt["7"]["inputs"]["steps"] = 2
    prompt["9"]["inputs"]["filename_prefix"] = "in_comfyui/t2v"
    entry = queue(url, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (video,) = [item for output in entry["outputs"].values() for item in output.get("images", [])
                + output.get("videos", []) + output.get("gifs", [])]
    frames = read_video(base / "output" / video["subfolder"] / video["filename"])
    assert frames.shape == (9, 48, 64, 3)


def test_a_plain_clone_imports_in_a_stock_comfyui_and_says_what_to_install(comfyui, tmp_path):
    """ComfyUI's requirements lack ftfy and imageio: every node still registers; the node that
    needs one names the pip command when it runs."""
    pack = tmp_path / "custom_nodes" / PACK_NAME
    pack.parent.mkdir()
    pack.symlink_to(ROOT, target_is_directory=True)
    result = json.loads(comfyui.run(ROOT / "tests/probes/stock_comfyui_import.py", str(pack)).splitlines()[-1])
    assert result["loaded"] is True
    assert result["nodes"] == sorted(wanrt.NODE_CLASS_MAPPINGS)
    assert "needs the package 'ftfy'" in result["clean_prompt"]
    assert f"python -m pip install -r {ROOT / 'requirements.txt'}" in result["clean_prompt"]
