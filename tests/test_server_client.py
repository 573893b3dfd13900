"""A real ComfyUI API client from PyPI (``comfy-api-simplified``) against ``wanrt serve``: it
queues our API-format T2V example (shrunk to run in seconds on make-tiny models), waits on the
WebSocket as it does with ComfyUI, and downloads the video through ``/view``."""

import json
import pathlib

import pytest
from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper
from comfy_api_simplified.exceptions import ComfyApiError


WORKFLOW = pathlib.Path(__file__).parent.parent / "workflows" / "api" / "wan2.1_t2v_1.3B.json"


def small_workflow(path) -> ComfyWorkflowWrapper:
    workflow = ComfyWorkflowWrapper(str(path))
    for title, name, value in (("WanRTCompile", "mode", "off"), ("WanRTEmptyLatentVideo", "width", 64),
                               ("WanRTEmptyLatentVideo", "height", 64), ("WanRTEmptyLatentVideo", "length", 5),
                               ("WanRTSampler", "steps", 2)):
        workflow.set_node_param(title, name, value)
    return workflow


def test_comfy_api_simplified_queues_a_workflow_and_downloads_the_video(served):
    url, output_dir = served
    api = ComfyApiWrapper(url)
    assert "WanRTSampler" in api.get_object_info()

    videos = api.queue_and_wait_images(small_workflow(WORKFLOW), "WanRTSaveVideo")

    [(name, body)] = videos.items()
    assert name.endswith(".mp4") and body[4:8] == b"ftyp"
    [saved] = output_dir.rglob(name)
    assert saved.read_bytes() == body


def test_the_client_sees_validation_errors_as_failed_requests(served):
    url, _ = served
    broken = json.loads(WORKFLOW.read_text())
    broken["1"]["inputs"]["model_name"] = "not_downloaded.safetensors"
    with pytest.raises(ComfyApiError, match="400"):
        ComfyApiWrapper(url).queue_prompt(broken)
