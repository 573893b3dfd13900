"""The example workflows in workflows/: each runs headless on make-tiny models in UI and in API
format, its API file is the runner's conversion of its UI file, it uses Wan's official settings
for its task, and bad input is rejected by the runner before any work."""

import json
import pathlib

import pytest

import wanrt
from wanrt.__main__ import main
from wanrt.nodes import NODE_CLASS_MAPPINGS, loaders
from wanrt.nodes.host import HeadlessHost
from wanrt.runner import Executor, PromptError, to_api_prompt
from wanrt.runner.convert import is_ui_workflow
from wanrt.wan_core.presets import DEFAULTS
from wanrt.wan_core.video_io import read_metadata, read_video

WORKFLOWS = pathlib.Path(wanrt.__file__).parent / "workflows"
NAMES = sorted(path.stem for path in WORKFLOWS.glob("*.json"))
# Every example uses the same node ids for the same roles, so one set of overrides fits all.
LATENT, SAMPLER, SAVE = "6", "7", "9"
TINY = {f"{LATENT}.width": 32, f"{LATENT}.height": 32, f"{LATENT}.length": 5, f"{SAMPLER}.steps": 2}
FRAMES = 5


def load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def ui_file(name: str) -> pathlib.Path:
    return WORKFLOWS / f"{name}.json"


def api_file(name: str) -> pathlib.Path:
    return WORKFLOWS / "api" / f"{name}.json"


def api_prompt(name: str) -> dict:
    return load(api_file(name))


def tiny_overrides(prompt: dict) -> dict:
    """Small size and steps, and compile off: inductor would take longer than the whole run."""
    off = {f"{node_id}.mode": "off" for node_id, node in prompt.items() if node["class_type"] == "WanRTCompile"}
    return {**TINY, **off}


def test_the_six_examples_exist_in_both_formats():
    assert NAMES == ["wan2.1_flf2v_720p_14B", "wan2.1_i2v_480p_14B", "wan2.1_t2v_1.3B", "wan2.1_t2v_14B",
                     "wan2.2_t2v_A14B", "wan2.2_ti2v_5B"]
    for name in NAMES:
        assert is_ui_workflow(load(ui_file(name))) and not is_ui_workflow(api_prompt(name))


@pytest.mark.parametrize("name", NAMES)
def test_api_file_is_the_runner_conversion_of_the_ui_file(name):
    assert to_api_prompt(load(ui_file(name)), NODE_CLASS_MAPPINGS) == api_prompt(name)


@pytest.mark.parametrize("name", NAMES)
def test_ui_file_has_what_the_frontend_saves(name):
    ui = load(ui_file(name))
    assert ui["version"] == 0.4 and set(ui["extra"]["ds"]) == {"scale", "offset"}
    assert ui["last_node_id"] == max(n["id"] for n in ui["nodes"])
    assert ui["last_link_id"] == max(link[0] for link in ui["links"])
    assert {g["title"] for g in ui["groups"]} >= {"Load models", "Prompt", "Sample", "Output"}
    nodes = {n["id"]: n for n in ui["nodes"]}
    for link_id, origin, origin_slot, target, target_slot, type_ in ui["links"]:
        assert nodes[origin]["outputs"][origin_slot]["type"] == type_
        assert link_id in nodes[origin]["outputs"][origin_slot]["links"]
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
    for node in ui["nodes"]:
        assert {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                "widgets_values"} <= set(node)
        assert node["properties"]["Node name for S&R"] == node["type"]
        folder = {"WanRTLoadDiffusionModel": "diffusion_models", "WanRTLoadTextEncoder": "text_encoders",
                  "WanRTLoadVAE": "vae", "WanRTLoadCLIPVision": "clip_vision"}.get(node["type"])
        if folder:
            [model] = node["properties"]["models"]
            assert model["name"] == node["widgets_values"][0] and model["directory"] == folder
            assert model["url"].endswith(f"/{folder}/{model['name']}")
    types = {n["type"] for n in ui["nodes"]}
    assert "WanRTCompile" in types and "LoadImage" not in types
    sampler = next(n for n in ui["nodes"] if n["type"] == "WanRTSampler")
    assert sampler["widgets_values"][1] == "randomize", "control_after_generate is saved after the seed"


# Wan's official settings (the Wan2.1 / Wan2.2 generate.py defaults; 480p I2V uses shift 3).
EXPECTED = {
    "wan2.1_t2v_1.3B": ("t2v-1.3B", 832, 480, {}),
    "wan2.1_t2v_14B": ("t2v-14B", 1280, 720, {}),
    "wan2.1_i2v_480p_14B": ("i2v-14B", 832, 480, {"shift": 3.0}),
    "wan2.1_flf2v_720p_14B": ("flf2v-14B", 1280, 720, {}),
    "wan2.2_ti2v_5B": ("ti2v-5B", 1280, 704, {}),
    "wan2.2_t2v_A14B": ("t2v-A14B", 1280, 720, {}),
}


@pytest.mark.parametrize("name", NAMES)
def test_workflow_uses_the_official_settings_of_its_task(name):
    task, width, height, changed = EXPECTED[name]
    d = DEFAULTS[task]
    prompt = api_prompt(name)
    latent, sampler, save = (prompt[i]["inputs"] for i in (LATENT, SAMPLER, SAVE))
    assert (latent["width"], latent["height"], latent["length"]) == (width, height, d.frames)
    expected = {"steps": d.steps, "cfg": d.cfg, "shift": d.shift, **changed}
    assert {k: sampler[k] for k in expected} == expected
    assert save["fps"] == d.fps
    if d.boundary is not None:
        assert (sampler["boundary"], sampler["cfg_low"]) == (d.boundary, d.cfg_low)
        assert sampler["low_noise_model"] is not None


@pytest.mark.parametrize("fmt", ["ui", "api"])
@pytest.mark.parametrize("name", NAMES)
def test_workflow_runs_headless_on_tiny_models(name, fmt, tiny_models, tmp_path, capsys):
    path = ui_file(name) if fmt == "ui" else api_file(name)
    sets = [f"--set={key}={value}" for key, value in tiny_overrides(api_prompt(name)).items()]
    code = main(["run", str(path), "--models-dir", str(tiny_models), "--output-dir", str(tmp_path),
                 "--no-progress", *sets])
    out, err = capsys.readouterr()
    assert code == 0, err
    [video] = (tmp_path / "video").glob(f"{name}_00001_.mp4")
    assert f"wrote {video}" in out
    assert read_video(video).shape == (FRAMES, 32, 32, 3)
    metadata = read_metadata(video)
    assert metadata["prompt"][SAMPLER]["inputs"]["steps"] == 2
    assert ("workflow" in metadata) == (fmt == "ui")


# --- bad input is rejected before any work ------------------------------------------------------

@pytest.fixture
def reject(tiny_models, tmp_path, monkeypatch):
    """``reject(overrides)``: run the T2V 1.3B example with ``overrides``; it must raise PromptError
    before any work (no DiT loaded, no output folder made). Returns the error."""
    loads = []
    monkeypatch.setattr(loaders.wan_core, "load_dit", lambda *args, **kwargs: loads.append(args))
    executor = Executor(HeadlessHost.from_paths(tiny_models, output_dir=tmp_path / "out", show_progress=False))

    def reject(overrides: dict, workflow: str = "wan2.1_t2v_1.3B") -> PromptError:
        prompt = api_prompt(workflow)
        with pytest.raises(PromptError) as info:
            executor.run(prompt, {**tiny_overrides(prompt), **overrides})
        assert loads == [] and not (tmp_path / "out").exists()
        return info.value

    return reject


def test_missing_model_file_names_the_folders_searched(reject, tiny_models):
    e = reject({"1.model_name": "wan2.1_t2v_1.3B_bf16.safetensors"})
    [error] = e.node_errors["1"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert (f"'wan2.1_t2v_1.3B_bf16.safetensors' not found in the 'diffusion_models' folders: "
            f"{tiny_models / 'unet'}, {tiny_models / 'diffusion_models'}") in error["details"]


@pytest.mark.parametrize("prefix", ["../escape", "/tmp/escape", "video/../../escape"])
def test_filename_prefix_leaving_the_output_dir_is_rejected(reject, prefix):
    [error] = reject({f"{SAVE}.filename_prefix": prefix}).node_errors[SAVE]["errors"]
    assert error["extra_info"]["input_name"] == "filename_prefix" and "must be a relative path" in error["details"]


def test_combo_value_not_in_list(reject):
    [error] = reject({f"{SAMPLER}.sampler": "ddim"}).node_errors[SAMPLER]["errors"]
    assert error["type"] == "value_not_in_list" and "'ddim' not in ['unipc', 'dpm++', 'euler']" in error["details"]


@pytest.mark.parametrize("key, value, kind", [(f"{SAMPLER}.steps", 0, "value_smaller_than_min"),
                                              (f"{SAMPLER}.cfg", 101.0, "value_bigger_than_max")])
def test_value_outside_min_max(reject, key, value, kind):
    node_id = key.split(".")[0]
    [error] = reject({key: value}).node_errors[node_id]["errors"]
    assert error["type"] == kind


@pytest.mark.parametrize("key, value, message", [
    ("length", 80, "frames=80 is not 4n+1 (nearest valid: 77 or 81)"),
    ("width", 840, "width=840 is not a multiple of 16 (nearest valid: 832 or 848) for the VAE "
                   "wan_2.1_vae.safetensors"),
    ("height", 0, "height=0 is outside 16..16384"),
])
def test_video_size_is_checked_before_work(reject, key, value, message):
    [error] = reject({f"{LATENT}.{key}": value}).node_errors[LATENT]["errors"]
    assert error["extra_info"]["input_name"] == key and error["details"] == f"{key} - {message}"


def test_each_bad_size_input_is_reported_with_its_own_problem(reject):
    errors = reject({f"{LATENT}.width": 840, f"{LATENT}.length": 80}).node_errors[LATENT]["errors"]
    assert {e["extra_info"]["input_name"]: e["details"] for e in errors} == {
        "width": "width - width=840 is not a multiple of 16 (nearest valid: 832 or 848) for the VAE "
                 "wan_2.1_vae.safetensors",
        "length": "length - frames=80 is not 4n+1 (nearest valid: 77 or 81)"}


def test_a_size_the_linked_vae_cannot_take_is_rejected_before_work(reject):
    """TI2V 5B's Wan 2.2 VAE needs multiples of 32: 64×48 fails at validation, not after loading."""
    [error] = reject({f"{LATENT}.width": 64, f"{LATENT}.height": 48}, "wan2.2_ti2v_5B").node_errors[LATENT]["errors"]
    assert error["extra_info"]["input_name"] == "height"
    assert error["details"] == ("height - height=48 is not a multiple of 32 (nearest valid: 32 or 64) "
                                "for the VAE wan2.2_vae.safetensors")


def test_cli_prints_the_rejection_and_exits_1(tiny_models, tmp_path, capsys):
    code = main(["run", str(ui_file("wan2.1_t2v_1.3B")), "--models-dir", str(tiny_models),
                 "--output-dir", str(tmp_path / "out"), "--set", f"{SAVE}.filename_prefix=../x"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"node {SAVE} (WanRTSaveVideo) input 'filename_prefix'" in err and "no '..'" in err
    assert not (tmp_path / "out").exists()
