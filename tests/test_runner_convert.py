"""UI → API conversion (comfyui.md §2.3–2.5) and --set overrides, on hand-written UI workflows.

Expected prompts are derived by hand from the fixtures: widget order from INPUT_TYPES, links
followed as the ComfyUI frontend does.
"""

import copy

import pytest
from runner_fakes import FAKE_NODES, fixture, headless_host

from wanrt.runner import Executor, PromptError


@pytest.fixture
def executor(tmp_path):
    return Executor(headless_host(tmp_path), FAKE_NODES)


def inputs_of(prompt):
    return {node_id: (node["class_type"], node["inputs"]) for node_id, node in prompt.items()}


def test_basic_ui_workflow_converts_like_the_frontend(executor):
    prompt = executor.prepare(fixture("ui_basic.json"))
    assert inputs_of(prompt) == {
        "1": ("LoadModel", {"model_name": "tiny.safetensors"}),
        "2": ("Number", {"value": 5}),
        # a: through the Reroute (10); b: the PrimitiveNode's value (3) replaces the link
        "4": ("Add", {"a": ["2", 0], "b": 7}),
        # "randomize" after the seed is the control_after_generate value: skipped
        "5": ("Sample", {"seed": 42, "steps": 3, "mode": "add", "model": ["1", 0]}),
        # node 6 is bypassed: its input a (same slot, INT) passes through
        "7": ("SaveNumber", {"filename_prefix": "basic/number", "value": ["5", 0]}),
        "13": ("SaveNumber", {"filename_prefix": "sum", "value": ["4", 0]}),
    }  # muted 9, notes 8 / 12, reroute 10, primitive 3 and bypassed 6 are not emitted
    assert prompt["5"]["_meta"] == {"title": "Sample"}


def _bypass_workflow(bypassed_type, bypassed_inputs, links):
    """LoadModel 1 and Number 2 feed a bypassed node 3, whose INT output feeds SaveNumber 4."""
    return {
        "last_node_id": 4, "last_link_id": 3, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 1, "type": "LoadModel", "pos": [0, 0], "size": [300, 60], "flags": {}, "order": 0, "mode": 0,
             "inputs": [], "outputs": [{"name": "FAKE_MODEL", "type": "FAKE_MODEL", "links": [1]}],
             "properties": {}, "widgets_values": ["tiny.safetensors"]},
            {"id": 2, "type": "Number", "pos": [0, 100], "size": [220, 60], "flags": {}, "order": 1, "mode": 0,
             "inputs": [], "outputs": [{"name": "INT", "type": "INT", "links": [2]}],
             "properties": {}, "widgets_values": [9]},
            {"id": 3, "type": bypassed_type, "pos": [300, 0], "size": [270, 130], "flags": {}, "order": 2, "mode": 4,
             "inputs": bypassed_inputs, "outputs": [{"name": "INT", "type": "INT", "links": [3]}],
             "properties": {}, "widgets_values": []},
            {"id": 4, "type": "SaveNumber", "pos": [600, 0], "size": [300, 60], "flags": {}, "order": 3, "mode": 0,
             "inputs": [{"name": "value", "type": "INT", "link": 3}], "outputs": [],
             "properties": {}, "widgets_values": ["out"]},
        ],
        "links": links + [[3, 3, 0, 4, 0, "INT"]],
    }


def test_bypass_passes_the_first_input_of_the_requested_type(executor):
    # Output slot 0 is INT but input slot 0 is FAKE_MODEL: the first INT input ("linked") is used.
    workflow = _bypass_workflow("Widgets", [{"name": "model", "type": "FAKE_MODEL", "link": 1},
                                            {"name": "linked", "type": "INT", "link": 2}],
                                [[1, 1, 0, 3, 0, "FAKE_MODEL"], [2, 2, 0, 3, 1, "INT"]])
    prompt = executor.prepare(workflow)
    assert set(prompt) == {"1", "2", "4"}
    assert prompt["4"]["inputs"]["value"] == ["2", 0]


def test_bypass_without_an_input_of_the_type_drops_the_link(executor):
    workflow = _bypass_workflow("Sample", [{"name": "model", "type": "FAKE_MODEL", "link": 1}],
                                [[1, 1, 0, 3, 0, "FAKE_MODEL"]])
    prompt = executor.prepare(workflow)
    assert prompt["4"]["inputs"] == {"filename_prefix": "out"}


def test_subgraphs_are_flattened_with_path_ids(executor):
    prompt = executor.prepare(fixture("ui_subgraph.json"))
    assert inputs_of(prompt) == {
        "1": ("Number", {"value": 4}),
        # x comes through the instance's link; offset is unlinked: the instance's promoted value 10
        "20:5": ("Add", {"a": ["1", 0], "b": 10}),
        "20:8:3": ("Add", {"a": ["20:5", 0], "b": 100}),  # nested subgraph "Boost"
        "2": ("SaveNumber", {"filename_prefix": "sub", "value": ["20:8:3", 0]}),
    }


def test_unlinked_subgraph_input_without_instance_value_keeps_the_inner_widget(executor):
    workflow = fixture("ui_subgraph.json")
    workflow["nodes"][1]["widgets_values"] = []
    assert executor.prepare(workflow)["20:5"]["inputs"]["b"] == 3


def test_muted_subgraph_instance_emits_nothing_and_drops_its_links(executor):
    workflow = fixture("ui_subgraph.json")
    workflow["nodes"][1]["mode"] = 2
    prompt = executor.prepare(workflow)
    assert set(prompt) == {"1", "2"}
    assert "value" not in prompt["2"]["inputs"]


def test_bypassed_subgraph_instance_passes_its_input_through(executor):
    workflow = fixture("ui_subgraph.json")
    workflow["nodes"][1]["mode"] = 4
    prompt = executor.prepare(workflow)
    assert set(prompt) == {"1", "2"}
    assert prompt["2"]["inputs"]["value"] == ["1", 0]


def _widgets_node(widgets_values, **extra):
    return {"last_node_id": 1, "last_link_id": 0, "links": [], "groups": [], "config": {}, "extra": {},
            "version": 0.4,
            "nodes": [{"id": 1, "type": "Widgets", "pos": [0, 0], "size": [300, 300], "flags": {}, "order": 0,
                       "mode": 0, "inputs": [], "outputs": [], "properties": {},
                       "widgets_values": widgets_values, **extra}]}


def test_widget_values_skip_control_and_upload_helpers(executor):
    saved = [11, "fixed",  # seed + its implicit control_after_generate
             2, "increment",  # count (control_after_generate: True)
             True,  # flag
             "b", "randomize", "",  # combo with control: mode + filter string
             "y.png", "image",  # combo with image_upload: the upload button's value
             6,  # noise_seed declares control_after_generate False: no helper
             ["p", "q"], 0.5]  # a list value travels wrapped
    prompt = executor.prepare(_widgets_node(saved))
    assert prompt["1"]["inputs"] == {"seed": 11, "count": 2, "flag": True, "mode": "b", "image": "y.png",
                                     "noise_seed": 6, "values": {"__value__": ["p", "q"]}, "strength": 0.5}


def test_short_widget_values_are_completed_with_defaults(executor):
    prompt = executor.prepare(_widgets_node([11, "fixed", 2, "fixed", True, "b", "fixed", "", "y.png", "image"]))
    assert prompt["1"]["inputs"]["noise_seed"] == 5 and prompt["1"]["inputs"]["strength"] == 1.0


def test_surplus_widget_values_are_rejected(executor):
    with pytest.raises(PromptError, match="node 1 \\(Widgets\\) saved 14 widget values") as e:
        executor.prepare(_widgets_node([11, "fixed", 2, "fixed", True, "b", "fixed", "", "y.png", "image",
                                        6, "v", 0.5, "extra"]))
    assert e.value.error["type"] == "invalid_prompt"


def test_named_widget_values_are_preferred(executor):
    workflow = _widgets_node([0, "fixed"], widgets_values_named={"seed": 77, "mode": "a", "control_after_generate": "fixed"})
    inputs = executor.prepare(workflow)["1"]["inputs"]
    assert inputs["seed"] == 77 and inputs["mode"] == "a" and "control_after_generate" not in inputs


def test_api_prompts_and_post_bodies_pass_through_unchanged(executor):
    api = {3: {"class_type": "Number", "inputs": {"value": 2}},
           "4": {"class_type": "SaveNumber", "inputs": {"value": [3, 0], "filename_prefix": "x"}}}
    original = copy.deepcopy(api)
    expected = {"3": ("Number", {"value": 2}), "4": ("SaveNumber", {"value": [3, 0], "filename_prefix": "x"})}
    assert inputs_of(executor.prepare(api)) == expected
    assert inputs_of(executor.prepare({"prompt": api, "client_id": "abc"})) == expected
    assert api == original


@pytest.mark.parametrize("workflow", [{"nodes": "not a list", "links": 3}, {"1": 5}])
def test_non_workflows_are_rejected(executor, workflow):
    with pytest.raises(PromptError, match="Not a ComfyUI workflow"):
        executor.prepare(workflow)


def test_overrides_set_inputs_by_node_id_including_subgraph_paths(executor):
    prompt = executor.prepare(fixture("ui_subgraph.json"), {"1.value": 6, "20:5.b": 1, "2.value": ["1", 0]})
    assert prompt["1"]["inputs"]["value"] == 6
    assert prompt["20:5"]["inputs"]["b"] == 1
    assert prompt["2"]["inputs"]["value"] == ["1", 0]  # a list is a link


def test_override_of_unknown_input_lists_the_inputs(executor):
    with pytest.raises(PromptError, match="node 5 \\(Sample\\) has no input 'sed'; inputs: model, seed, steps, mode"):
        executor.prepare(fixture("ui_basic.json"), {"5.sed": 1})


def test_override_of_unknown_node_lists_the_nodes(executor):
    with pytest.raises(PromptError, match="'99.seed' is not NODE_ID.input with one of the node ids 1, 2, 4"):
        executor.prepare(fixture("ui_basic.json"), {"99.seed": 1})
