"""Property-based fuzzing (Hypothesis, derandomized so CI is deterministic): the safetensors header
parser, the UI→API converter and prompt validation raise only our own errors, whatever they get."""

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runner_fakes import FAKE_NODES, headless_host

from wanrt.nodes import host as hosts
from wanrt.runner import PromptError, apply_overrides, to_api_prompt, validate_prompt
from wanrt.wan_core.checkpoint import CheckpointError, open_checkpoint

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)


# safetensors headers

DTYPES = st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "F128", ""]) | json_values
entries = st.fixed_dictionaries({}, optional={
    "dtype": DTYPES,
    "shape": st.lists(st.integers(-2, 5), max_size=3) | json_values,
    "data_offsets": st.lists(st.integers(-4, 80), min_size=0, max_size=3) | json_values,
}) | json_values
headers = st.dictionaries(st.text(max_size=5), entries, max_size=4) | json_values


@FUZZ
@given(header=headers, data=st.binary(max_size=80), length_delta=st.sampled_from([0, 0, 0, -1, 1, 2**40]))
def test_any_safetensors_header_opens_or_raises_checkpoint_error(tmp_path, header, data, length_delta):
    raw = json.dumps(header).encode()
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(struct.pack("<Q", max(len(raw) + length_delta, 0)) + raw + data)
    try:
        checkpoint = open_checkpoint(path)
        for key in checkpoint:
            checkpoint.load(key)
    except CheckpointError as e:
        assert str(path) in str(e)


@FUZZ
@given(content=st.binary(max_size=200))
def test_any_bytes_open_or_raise_checkpoint_error(tmp_path, content):
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(path)):
        open_checkpoint(path)


# UI workflows and API prompts

ids = st.integers(-25, 12) | st.text(max_size=3)
ui_nodes = st.fixed_dictionaries(
    {"id": ids, "type": st.sampled_from(sorted(FAKE_NODES) + ["Reroute", "PrimitiveNode", "Note", "Nope"])},
    optional={"mode": st.sampled_from([0, 2, 4]) | json_values,
              "widgets_values": st.lists(scalars, max_size=6) | json_values,
              "inputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=6)},
                                                       optional={"link": ids | st.none(), "type": st.text(max_size=6),
                                                                 "widget": json_values}), max_size=3) | json_values})
ui_links = st.lists(st.integers(-2, 12) | st.text(max_size=3), min_size=0, max_size=7) | json_values
ui_workflows = st.fixed_dictionaries(
    {"nodes": st.lists(ui_nodes, max_size=5)},
    optional={"links": st.lists(ui_links, max_size=5) | json_values,
              "definitions": st.fixed_dictionaries({"subgraphs": st.lists(json_values, max_size=2)}) | json_values})
api_nodes = st.fixed_dictionaries({}, optional={
    "class_type": st.sampled_from(sorted(FAKE_NODES)) | json_values,
    "inputs": st.dictionaries(st.sampled_from(["value", "a", "b", "model", "seed", "steps", "mode", "model_name",
                                               "filename_prefix", "text"]),
                              scalars | st.lists(ids | scalars, max_size=3), max_size=5) | json_values,
    "_meta": json_values})
api_prompts = st.dictionaries(ids.map(str), api_nodes | json_values, max_size=5)


@pytest.fixture
def fake_host(tmp_path):
    with hosts.activate(headless_host(tmp_path)) as host:
        yield host


@FUZZ
@given(workflow=ui_workflows | api_prompts | json_values)
def test_any_workflow_converts_or_raises_prompt_error(fake_host, workflow):
    try:
        prompt = to_api_prompt(workflow, FAKE_NODES)
    except PromptError:
        return
    assert all(isinstance(node, dict) and isinstance(node.get("inputs"), dict) for node in prompt.values())


@FUZZ
@given(prompt=api_prompts, overrides=st.dictionaries(st.text(max_size=8), scalars, max_size=2))
def test_any_prompt_validates_or_raises_prompt_error(fake_host, prompt, overrides):
    try:
        prompt = to_api_prompt(prompt, FAKE_NODES)
        apply_overrides(prompt, overrides, FAKE_NODES)
        validation = validate_prompt(prompt, FAKE_NODES)
    except PromptError:
        return
    assert validation.outputs
