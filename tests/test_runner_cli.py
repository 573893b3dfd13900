"""``python -m wanrt run``: exit codes, overrides, readable reports."""

import json
import os
import subprocess
import sys

import pytest
from runner_fakes import FAKE_NODES, FIXTURES, write_model

import wanrt.nodes
from wanrt.__main__ import main


@pytest.fixture
def run_cli(tmp_path, monkeypatch, capsys):
    """Runs ``wanrt run`` in-process with the fake nodes registered; returns (code, stdout, stderr)."""
    monkeypatch.setattr(wanrt.nodes, "NODE_CLASS_MAPPINGS", FAKE_NODES)
    write_model(tmp_path / "models")

    def run(workflow, *extra):
        code = main(["run", str(workflow), "--models-dir", str(tmp_path / "models"),
                     "--output-dir", str(tmp_path / "output"), "--no-progress", *extra])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_success_reports_files_and_times(run_cli, tmp_path):
    code, out, err = run_cli(FIXTURES / "ui_basic.json")
    assert code == 0
    assert f"wrote {tmp_path / 'output' / 'basic' / 'number_00001_.txt'}" in out
    assert "node 7 (SaveNumber) files: basic/number_00001_.txt" in out
    assert "time per node:" in out and "node 5 (Sample)" in out
    assert "node 5 (Sample)" in err  # printed when it starts


def test_set_overrides_an_input(run_cli, tmp_path):
    code, _, _ = run_cli(FIXTURES / "ui_basic.json", "--set", "5.seed=100", "--set", "5.mode=\"mul\"")
    assert code == 0
    assert (tmp_path / "output" / "basic" / "number_00001_.txt").read_text() == "300"


def test_validation_failure_exits_1_naming_node_and_input(run_cli):
    code, _, err = run_cli(FIXTURES / "ui_basic.json", "--set", "5.steps=0")
    assert code == 1
    assert "was rejected before running" in err
    assert "node 5 (Sample) input 'steps': Value 0 smaller than min of 1" in err


def test_node_failure_exits_1_naming_the_node(run_cli, tmp_path):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "SaveNumber", "inputs": {"value": ["2", 0], "filename_prefix": "x"}}}
    path = tmp_path / "api.json"
    path.write_text(json.dumps(prompt))
    code, _, err = run_cli(path)
    assert code == 1
    assert "node 2 (Fail) failed: builtins.RuntimeError: fake failure on 1" in err


@pytest.mark.parametrize("content, extra, message", [
    ("{not json", (), "not valid JSON"),
    ("[1, 2]", (), "expected a JSON object"),
    ("{}", ("--set", "seed=3"), "expected NODE_ID.input=VALUE"),
    ("{}", ("--attention", "sage9"), "unknown attention backend 'sage9'"),
])
def test_bad_arguments_exit_2(run_cli, tmp_path, content, extra, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, _, err = run_cli(path, *extra)
    assert code == 2 and message in err


def test_attention_flag_sets_every_diffusion_model_loader():
    from wanrt.runner.cli import set_attention

    prompt = {"1": {"class_type": "WanRTLoadDiffusionModel", "inputs": {"attention": "auto"}},
              "2": {"class_type": "WanRTLoadDiffusionModel", "inputs": {"attention": "sdpa"}},
              "3": {"class_type": "WanRTLoadVAE", "inputs": {"vae_name": "v.safetensors"}}}
    set_attention(prompt, "sage8")
    assert [n["inputs"].get("attention") for n in prompt.values()] == ["sage8", "sage8", None]


def test_module_entry_point_rejects_unknown_nodes(tmp_path):
    # The real registry, in a fresh process: the fake classes are unknown there.
    result = subprocess.run([sys.executable, "-m", "wanrt", "run", str(FIXTURES / "ui_basic.json"),
                             "--output-dir", str(tmp_path / "out"), "--no-progress"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "WANRT_MODELS_DIR"})
    assert result.returncode == 1
    assert "Node 'LoadModel' not found. The custom node may not be installed." in result.stderr
    assert not (tmp_path / "out").exists()
