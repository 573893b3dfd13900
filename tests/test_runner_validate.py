"""Validation before any work: every error type, in ComfyUI's shape (comfyui.md §3.1)."""

import os

import pytest
from runner_fakes import CALLS, FAKE_NODES, headless_host

from wanrt.runner import Executor, PromptError


@pytest.fixture
def executor(tmp_path):
    return Executor(headless_host(tmp_path), FAKE_NODES)


def save(value, prefix="out"):
    return {"class_type": "SaveNumber", "inputs": {"value": value, "filename_prefix": prefix}}


def node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def rejected(executor, prompt) -> PromptError:
    with pytest.raises(PromptError) as e:
        executor.validate(prompt)
    return e.value


def only_error(err: PromptError, node_id: str) -> dict:
    assert list(err.node_errors) == [node_id]
    [error] = err.node_errors[node_id]["errors"]
    return error


def test_errors_have_comfyui_shape(executor):
    err = rejected(executor, {"1": node("Number", value=500), "9": save(["1", 0])})
    body = err.to_dict()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["error"]["message"] == "Prompt outputs failed validation"
    assert body["node_errors"] == {"1": {
        "errors": [{"type": "value_bigger_than_max", "message": "Value 500 bigger than max of 100",
                    "details": "value", "extra_info": {"input_name": "value",
                                                       "input_config": ["INT", {"default": 1, "min": -100, "max": 100}],
                                                       "received_value": 500}}],
        "dependent_outputs": ["9"], "class_type": "Number"}}
    assert "node 1 (Number) input 'value': Value 500 bigger than max of 100" in str(err)


def test_unknown_node_type(executor):
    err = rejected(executor, {"1": {"class_type": "WanSomething", "inputs": {}, "_meta": {"title": "My node"}}})
    assert err.error["type"] == "missing_node_type"
    assert err.error["extra_info"] == {"node_id": "1", "class_type": "WanSomething", "node_title": "My node"}
    assert "Node 'My node' not found" in str(err)


def test_node_without_class_type(executor):
    assert rejected(executor, {"1": {"inputs": {}}}).error["type"] == "invalid_prompt"


def test_no_output_nodes(executor):
    err = rejected(executor, {"1": node("Number", value=1)})
    assert err.error["type"] == "prompt_no_outputs" and err.node_errors == {}


def test_required_input_missing(executor):
    error = only_error(rejected(executor, {"1": node("Add", a=1), "2": save(["1", 0])}), "1")
    assert error["type"] == "required_input_missing" and error["extra_info"]["input_name"] == "b"


@pytest.mark.parametrize("link, why", [(["7", 0], "node 7 does not exist"),
                                       (["1", 3], "node 1 (Number) has no output 3"),
                                       (["1", 0, 0], "must be a length-2 list")])
def test_bad_links(executor, link, why):
    error = only_error(rejected(executor, {"1": node("Number", value=1), "2": save(link)}), "2")
    assert error["type"] == "bad_linked_input" and why in error["details"]


def test_wrong_socket_type(executor):
    error = only_error(rejected(executor, {"1": node("Text", text="hi"), "2": node("Add", a=["1", 0], b=1),
                                           "3": save(["2", 0])}), "2")
    assert error["type"] == "return_type_mismatch"
    assert error["details"] == "a, STRING != INT"
    assert error["extra_info"]["linked_node"] == ["1", 0]


def test_value_that_does_not_convert(executor):
    error = only_error(rejected(executor, {"1": node("Add", a="three", b=1), "2": save(["1", 0])}), "1")
    assert error["type"] == "invalid_input_type"
    assert error["message"] == "Failed to convert an input value to a INT value"


def test_value_below_min(executor):
    error = only_error(rejected(executor, {"1": node("Number", value=-101), "2": save(["1", 0])}), "1")
    assert error["type"] == "value_smaller_than_min" and error["message"] == "Value -101 smaller than min of -100"


def test_combo_value_not_in_list(executor):
    prompt = {"1": node("LoadModel", model_name="tiny.safetensors"),
              "2": node("Sample", model=["1", 0], seed=1, steps=1, mode="div"), "3": save(["2", 0])}
    error = only_error(rejected(executor, prompt), "2")
    assert error["type"] == "value_not_in_list"
    assert error["details"] == "mode: 'div' not in ['add', 'mul']"


def test_missing_model_file_names_the_folders_searched(executor, tmp_path):
    prompt = {"1": node("LoadModel", model_name="wan2.1_t2v_1.3B_fp16.safetensors"),
              "2": node("Sample", model=["1", 0], seed=1, steps=1, mode="add"), "3": save(["2", 0])}
    error = only_error(rejected(executor, prompt), "1")
    assert error["type"] == "custom_validation_failed"
    assert "'wan2.1_t2v_1.3B_fp16.safetensors' not found" in error["details"]
    assert str(tmp_path / "models" / "unet") in error["details"]
    assert str(tmp_path / "models" / "diffusion_models") in error["details"]


@pytest.mark.parametrize("prefix", ["../escape", "a/../../b", "/tmp/abs", "C:\\out"])
def test_filename_prefix_outside_the_output_directory(executor, prefix):
    error = only_error(rejected(executor, {"1": node("Number", value=1), "2": save(["1", 0], prefix)}), "2")
    assert error["type"] == "custom_validation_failed" and error["extra_info"]["input_name"] == "filename_prefix"


def test_dependency_cycle(executor):
    prompt = {"1": node("Add", a=["2", 0], b=1), "2": node("Add", a=["1", 0], b=1), "3": save(["1", 0])}
    err = rejected(executor, prompt)
    [(node_id, entry)] = err.node_errors.items()
    assert node_id in ("1", "2") and entry["errors"][0]["type"] == "dependency_cycle"


def test_exception_in_a_node_validator(executor):
    class Broken(FAKE_NODES["Number"]):
        @classmethod
        def VALIDATE_INPUTS(cls, value):
            raise KeyError("no such thing")

    executor = Executor(executor.host, {**FAKE_NODES, "Broken": Broken})
    error = only_error(rejected(executor, {"1": node("Broken", value=1), "2": save(["1", 0])}), "1")
    assert error["type"] == "exception_during_validation" and "no such thing" in error["details"]


def test_upstream_errors_are_reported_only_on_the_failing_node(executor):
    prompt = {"1": node("Number", value=1000), "2": node("Add", a=["1", 0], b=1), "3": save(["2", 0])}
    err = rejected(executor, prompt)
    assert list(err.node_errors) == ["1"] and err.node_errors["1"]["dependent_outputs"] == ["3"]


def test_valid_outputs_survive_an_invalid_one_but_run_rejects_the_prompt(executor):
    prompt = {"1": node("Number", value=1), "2": save(["1", 0]),
              "3": node("Number", value=1000), "4": save(["3", 0])}
    validation = executor.validate(prompt)
    assert validation.outputs == ["2"] and list(validation.node_errors) == ["3"]
    calls = sum(CALLS.values())
    with pytest.raises(PromptError, match="Prompt outputs failed validation"):
        executor.run(prompt)
    assert sum(CALLS.values()) == calls  # nothing ran
    assert not os.path.exists(executor.host.output_dir())


def test_values_are_converted_and_unwrapped_like_comfyui(executor):
    prompt = {"1": node("Add", a="3", b=2.9), "2": save(["1", 0], {"__value__": "run"}), "3": save(["1", 0], 7)}
    validated = executor.validate(prompt).prompt
    assert validated["1"]["inputs"] == {"a": 3, "b": 2}  # int() as ComfyUI does
    assert validated["2"]["inputs"]["filename_prefix"] == "run"
    assert validated["3"]["inputs"]["filename_prefix"] == "7"
    assert prompt["1"]["inputs"]["a"] == "3"  # the caller's prompt is not modified
