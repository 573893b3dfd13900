"""Execution: ancestors only, dependency order, the cross-prompt cache, failures, interrupts, events."""

import pathlib

import pytest
from runner_fakes import CALLS, FAKE_NODES, Sample, fixture, headless_host

from wanrt.runner import Executor


@pytest.fixture(autouse=True)
def _fresh_counts():
    CALLS.clear()


@pytest.fixture
def events():
    return []


@pytest.fixture
def executor(tmp_path, events):
    return Executor(headless_host(tmp_path), FAKE_NODES, on_event=lambda event, data: events.append((event, data)))


def node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def save(value, prefix="out"):
    return node("SaveNumber", value=value, filename_prefix=prefix)


def test_ui_workflow_runs_and_writes_its_outputs(executor, tmp_path):
    result = executor.run(fixture("ui_basic.json"))
    assert result.ok
    out = tmp_path / "output"
    # model scale 3 + seed 42 (Sample, "add"); Number 5 + primitive 7 (Add)
    assert (out / "basic" / "number_00001_.txt").read_text() == "45"
    assert (out / "sum_00001_.txt").read_text() == "12"
    assert sorted(result.files) == sorted([str(out / "basic" / "number_00001_.txt"), str(out / "sum_00001_.txt")])
    assert result.outputs["7"] == {"text": ["45"], "files": [{"filename": "number_00001_.txt",
                                                              "subfolder": "basic", "type": "output"}]}
    assert set(result.timings) == {"1", "2", "4", "5", "7", "13"}


def test_second_prompt_reuses_the_cache_and_reruns_only_what_changed(executor):
    workflow = fixture("ui_basic.json")
    executor.run(workflow)
    assert CALLS == {"LoadModel": 1, "Number": 1, "Add": 1, "Sample": 1, "SaveNumber": 2}

    again = executor.run(workflow)
    assert sorted(again.cached, key=int) == ["1", "2", "4", "5", "7", "13"] and again.timings == {}
    assert again.outputs["13"]["text"] == ["12"]  # ui of cached output nodes is still reported
    assert CALLS == {"LoadModel": 1, "Number": 1, "Add": 1, "Sample": 1, "SaveNumber": 2}

    reseeded = executor.run(workflow, {"5.seed": 100})
    assert set(reseeded.timings) == {"5", "7"}  # the sampler and what depends on it
    assert CALLS == {"LoadModel": 1, "Number": 1, "Add": 1, "Sample": 2, "SaveNumber": 3}
    assert reseeded.outputs["7"]["text"] == ["103"]


def test_without_cache_everything_reruns(tmp_path):
    executor = Executor(headless_host(tmp_path), FAKE_NODES, cache=False)
    executor.run(fixture("ui_basic.json"))
    executor.run(fixture("ui_basic.json"))
    assert CALLS["LoadModel"] == 2


def test_is_changed_nan_always_reruns(executor):
    prompt = {"1": node("Number", value=1), "2": node("AlwaysRerun", value=["1", 0]), "3": save(["2", 0])}
    executor.run(prompt)
    second = executor.run(prompt)
    assert set(second.timings) == {"2", "3"} and CALLS["AlwaysRerun"] == 2 and CALLS["Number"] == 1


def test_only_ancestors_of_outputs_run(executor):
    prompt = {"1": node("Number", value=1), "2": save(["1", 0]),
              "3": node("Fail", value=["1", 0]),  # feeds no output: never runs
              "4": node("Add", a=1, b=2)}
    result = executor.run(prompt)
    assert result.ok and set(result.timings) == {"1", "2"}


def test_dependency_order(executor, events):
    prompt = {"9": save(["3", 0]), "3": node("Add", a=["10", 0], b=["2", 0]),
              "10": node("Number", value=1), "2": node("Number", value=2)}
    executor.run(prompt)
    assert [d["node"] for e, d in events if e == "executing" and d["node"]] == ["2", "10", "3", "9"]


def test_a_failing_node_keeps_earlier_outputs(executor, events, tmp_path):
    prompt = {"1": node("Number", value=1), "2": save(["1", 0], "first"),
              "3": node("Fail", value=["1", 0]), "4": save(["3", 0], "second")}
    result = executor.run(prompt)
    assert result.status == "error"
    assert result.error["node_id"] == "3" and result.error["node_type"] == "Fail"
    assert result.error["exception_message"] == "fake failure on 1"
    assert result.error["executed"] == ["1", "2"]
    assert (tmp_path / "output" / "first_00001_.txt").read_text() == "1"
    assert result.outputs == {"2": {"text": ["1"], "files": [{"filename": "first_00001_.txt", "subfolder": "",
                                                              "type": "output"}]}}
    assert [e for e, _ in events][-2:] == ["execution_error", "executing"]

    # The failure did not poison the cache: a fixed prompt reuses what ran.
    prompt["3"] = node("Add", a=["1", 0], b=1)
    assert set(executor.run(prompt).timings) == {"3", "4"}


def test_events_follow_comfyui_order_and_payloads(executor, events):
    executor.run(fixture("ui_basic.json"))
    names = [e for e, _ in events]
    assert names[:2] == ["execution_start", "execution_cached"]
    assert names[-2:] == ["execution_success", "executing"] and events[-1][1]["node"] is None
    progress = [d for e, d in events if e == "progress"]
    assert [(d["node"], d["value"], d["max"]) for d in progress] == [("5", 1, 3), ("5", 2, 3), ("5", 3, 3)]
    executed = {d["node"]: d["output"] for e, d in events if e == "executed"}
    assert set(executed) == {"7", "13"}
    assert len({d["prompt_id"] for _, d in events}) == 1


def test_interrupt_during_sampling_stops_the_prompt(executor, events, monkeypatch, tmp_path):
    monkeypatch.setattr(Sample, "on_step", executor.interrupt)
    result = executor.run(fixture("ui_basic.json"))
    assert result.status == "interrupted" and result.error["node_id"] == "5"
    assert events[-2][0] == "execution_interrupted"
    assert not (tmp_path / "output" / "basic").exists()

    monkeypatch.setattr(Sample, "on_step", None)
    assert executor.run(fixture("ui_basic.json")).ok  # the interrupt does not outlive its prompt


def test_ctrl_c_in_a_node_is_a_clean_interrupted_result(executor, monkeypatch):
    def ctrl_c():
        raise KeyboardInterrupt

    monkeypatch.setattr(Sample, "on_step", ctrl_c)
    result = executor.run(fixture("ui_basic.json"))
    assert result.status == "interrupted" and result.error["node_type"] == "Sample"


def test_wrong_number_of_returned_values_names_the_node(executor):
    class Sloppy(FAKE_NODES["Number"]):
        def run(self, value):
            return (value, value)

    executor = Executor(executor.host, {**FAKE_NODES, "Sloppy": Sloppy})
    result = executor.run({"1": node("Sloppy", value=1), "2": save(["1", 0])})
    assert result.status == "error"
    assert "node 1 (Sloppy.run) returned 2 values; its RETURN_TYPES declare 1" in result.error["exception_message"]


def test_run_workflow_api(tmp_path):
    from runner_fakes import write_model

    from wanrt.runner import run_workflow

    write_model(tmp_path / "models", scale=2)
    result = run_workflow(fixture("ui_basic.json"), models_dir=tmp_path / "models", output_dir=tmp_path / "out",
                          overrides={"5.mode": "mul"}, node_classes=FAKE_NODES, show_progress=False)
    assert result.ok and pathlib.Path(tmp_path / "out" / "basic" / "number_00001_.txt").read_text() == "84"


def test_a_lazy_input_runs_only_when_the_node_asks_for_it(tmp_path):
    from wanrt.nodes.core.logic import ComfySwitchNode, PrimitiveBoolean, PrimitiveInt

    classes = {**FAKE_NODES, "ComfySwitchNode": ComfySwitchNode, "PrimitiveBoolean": PrimitiveBoolean,
               "PrimitiveInt": PrimitiveInt}
    prompt = {"1": {"class_type": "PrimitiveBoolean", "inputs": {"value": False}},
              "2": {"class_type": "PrimitiveInt", "inputs": {"value": 7}},
              "3": {"class_type": "Fail", "inputs": {"value": ["2", 0]}},  # the branch not taken
              "4": {"class_type": "ComfySwitchNode", "inputs": {"switch": ["1", 0], "on_false": ["2", 0],
                                                                "on_true": ["3", 0]}},
              "5": {"class_type": "SaveNumber", "inputs": {"value": ["4", 0], "filename_prefix": "lazy"}}}
    result = Executor(headless_host(tmp_path), classes).run(prompt)
    assert result.ok, result.error
    assert "3" not in result.timings and result.outputs["5"]["text"] == ["7"]
    prompt["1"]["inputs"]["value"] = True
    assert Executor(headless_host(tmp_path), classes).run(prompt).error["node_id"] == "3"
