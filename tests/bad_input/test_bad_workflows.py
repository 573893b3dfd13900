"""Bad workflows and bad command lines: each is refused before any work (nothing is written) with
an error that names the node and the input, or the file or argument, at fault."""

import json
import pathlib
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import wanrt
from wanrt.__main__ import main
from wanrt.nodes import NODE_CLASS_MAPPINGS
from wanrt.nodes.files import LOADED_PIXELS, WanRTLoadImage
from wanrt.nodes.host import HeadlessHost, activate
from wanrt.runner import Executor, PromptError

WORKFLOWS = pathlib.Path(wanrt.__file__).parent / "workflows"
T2V, I2V = "wan2.1_t2v_1.3B", "wan2.1_i2v_480p_14B"
SAMPLER, SAVE, LOAD_IMAGE = "7", "9", "11"


@pytest.fixture
def executor(tiny_models, tmp_path):
    (tmp_path / "input").mkdir()
    host = HeadlessHost.from_paths(tiny_models, output_dir=tmp_path / "output", input_dir=tmp_path / "input",
                                   show_progress=False)
    return Executor(host)


def api(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text(encoding="utf-8"))


def rejected(executor, workflow, overrides=None) -> PromptError:
    """The PromptError that refuses ``workflow`` at validation (which runs no node: a regression
    fails here instead of starting a generation); nothing may have been written."""
    with pytest.raises(PromptError) as caught:
        executor.validate(executor.prepare(workflow, overrides))
    assert not pathlib.Path(executor.host.output_dir()).exists()
    return caught.value


def node_error(error: PromptError, node_id: str) -> dict:
    [problem] = error.node_errors[node_id]["errors"]
    return problem


# Float inputs

FLOATS = [(SAMPLER, "cfg"), (SAMPLER, "shift"), (SAMPLER, "denoise"), (SAMPLER, "cfg_low"), (SAVE, "fps")]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "NaN", "1e999"])
@pytest.mark.parametrize("node_id, name", FLOATS, ids=[f"{n}.{i}" for n, i in FLOATS])
def test_a_non_finite_float_is_refused_naming_the_input(executor, node_id, name, value):
    error = rejected(executor, api(T2V), {f"{node_id}.{name}": value})
    problem = node_error(error, node_id)
    assert problem["extra_info"]["input_name"] == name
    assert problem["message"] == "A FLOAT input must be a finite number"
    assert f"input '{name}'" in str(error)


def test_an_integer_too_large_for_a_float_is_refused_naming_the_input(executor):
    problem = node_error(rejected(executor, api(T2V), {f"{SAMPLER}.cfg": 10 ** 400}), SAMPLER)
    assert problem["extra_info"]["input_name"] == "cfg" and problem["type"] == "invalid_input_type"


# Output names

PREFIXES = {
    "240 characters": ("v" * 240, "is too long"),
    "one byte over": ("v" * 232, "keep it to 231 bytes"),
    "multi-byte characters over": ("é" * 120, "is too long"),
    "a folder over 255 bytes": ("f" * 256 + "/v", "is longer than 255 bytes"),
    "NUL": ("video/a\0b", "contains a control character"),
    "newline": ("video/a\nb", "contains a control character"),
    "lone surrogate": ("video/\ud800", "cannot be a file name"),
    "parent": ("../escape", "must be a relative path"),
    "parent inside": ("video/../../escape", "must be a relative path"),
    "absolute": ("/tmp/escape", "must be a relative path"),
    "windows drive": ("C:\\escape", "must be a relative path"),
    "backslash parent": ("..\\escape", "must be a relative path"),
    "empty": ("", "must be a relative path"),
    "no name": ("video/", "has no file name part"),
}


@pytest.mark.parametrize("prefix, message", PREFIXES.values(), ids=PREFIXES.keys())
def test_an_unusable_filename_prefix_is_refused_before_any_work(executor, prefix, message):
    problem = node_error(rejected(executor, api(T2V), {f"{SAVE}.filename_prefix": prefix}), SAVE)
    assert problem["extra_info"]["input_name"] == "filename_prefix"
    assert message in problem["details"]


def test_the_longest_allowed_prefix_is_written_with_its_temporary_name(tmp_path):
    from wanrt.wan_core.video_io import save_video

    [saved] = save_video(np.zeros((1, 4, 4, 3), np.uint8), tmp_path, "v" * 231, format="webp")
    assert saved.path.exists() and len(saved.filename) == 231 + len("_00001_.webp")


# Input images


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` (a few bytes; decoding it would need gigabytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


IMAGES = {
    "a decompression bomb": (png_header(12000, 12000), "12000x12000 (144 megapixels)"),
    "a bomb past Pillow's own limit": (png_header(30000, 30000), "cannot be read as an image"),
    "text named .png": (b"<html><script>alert(1)</script></html>", "cannot be read as an image"),
    "an empty file": (b"", "cannot be read as an image"),
}


@pytest.mark.parametrize("content, message", IMAGES.values(), ids=IMAGES.keys())
def test_a_bad_input_image_is_refused_before_any_work(executor, content, message):
    (pathlib.Path(executor.host.input_dir()) / "start.png").write_bytes(content)
    error = rejected(executor, api(I2V), {f"{LOAD_IMAGE}.image": "start.png"})
    problem = node_error(error, LOAD_IMAGE)
    assert problem["extra_info"]["input_name"] == "image"
    assert "'start.png'" in problem["details"] and message in problem["details"]


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd", "absent.png", "sub/../../x.png"])
def test_an_image_outside_the_input_folder_is_refused(executor, tmp_path, name):
    (tmp_path / "secret.png").write_bytes(png_header(8, 8))
    problem = node_error(rejected(executor, api(I2V), {f"{LOAD_IMAGE}.image": name}), LOAD_IMAGE)
    assert "is not in the input folder" in problem["details"]


def test_a_large_image_is_downscaled_while_loading(executor):
    Image.new("L", (6000, 3000), 128).save(pathlib.Path(executor.host.input_dir()) / "big.png")
    with activate(executor.host):
        [image] = WanRTLoadImage().load("big.png")
    _, height, width, _ = image.shape
    assert height * width <= LOADED_PIXELS and abs(width / height - 2) < 0.01
    assert image.mean().item() == pytest.approx(128 / 255, abs=1e-3)


# Malformed workflows

MALFORMED = {
    "not an object": ([1, 2], "Not a ComfyUI workflow"),
    "a node not an object": ({"1": 5}, "Not a ComfyUI workflow"),
    "class_type a list": ({"1": {"class_type": ["WanRTSaveVideo"], "inputs": {}}}, "missing the class_type"),
    "inputs a list": ({"1": {"class_type": "WanRTSaveVideo", "inputs": []}}, "'inputs' must be an object"),
    "unknown node": ({"1": {"class_type": "Evil", "inputs": {}}}, "Node 'Evil' not found"),
    "no outputs": ({"1": {"class_type": "WanRTLoadVAE", "inputs": {"vae_name": "x"}}}, "Prompt has no outputs"),
    "UI node without type": ({"nodes": [{"id": 1}], "links": []}, "Malformed UI workflow"),
    "UI link to a missing node": ({"nodes": [{"id": 1, "type": "WanRTVAEDecode", "inputs": [
        {"name": "vae", "type": "WANRT_VAE", "link": 7}]}], "links": [[7, 99, 0, 1, 0, "WANRT_VAE"]]},
        "a link starts at missing node 99"),
    "UI link undefined": ({"nodes": [{"id": 1, "type": "WanRTVAEDecode", "inputs": [
        {"name": "vae", "type": "WANRT_VAE", "link": 7}]}], "links": []}, "link 7 is used by a node"),
    "UI link too short": ({"nodes": [], "links": [[7, 99]]}, "Malformed UI workflow"),
    "UI widgets too many": ({"nodes": [{"id": 1, "type": "WanRTLoadVAE", "widgets_values": ["a", "b", "c"]}],
                             "links": []}, "Too many widget values"),
    "UI subgraph in itself": ({"nodes": [{"id": 1, "type": "sg"}], "links": [], "definitions": {"subgraphs": [
        {"id": "sg", "nodes": [{"id": 2, "type": "sg"}], "links": []}]}}, "Subgraph contains itself"),
}


@pytest.mark.parametrize("workflow, message", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_workflow_is_refused_with_what_is_wrong(executor, workflow, message):
    assert message in str(rejected(executor, workflow))


LINKS = {
    "a missing slot": ({"8.latent": ["7", 5]}, "node 8 (WanRTVAEDecode) input 'latent'", "has no output 5"),
    "a missing node": ({"8.latent": ["70", 0]}, "node 8 (WanRTVAEDecode) input 'latent'", "node 70 does not exist"),
    "a wrong type": ({"7.model": ["8", 0]}, "node 7 (WanRTSampler) input 'model'", "IMAGE != WANRT_MODEL"),
    "a slot not an int": ({"8.latent": ["7", "0"]}, "node 8 (WanRTVAEDecode) input 'latent'", "Bad linked input"),
}


@pytest.mark.parametrize("overrides, where, why", LINKS.values(), ids=LINKS.keys())
def test_a_bad_link_is_refused_naming_the_input(executor, overrides, where, why):
    error = str(rejected(executor, api(T2V), overrides))
    assert where in error and why in error


# The command line

BAD_FILES = {
    "missing": (None, "No such file"),
    "empty": (b"", "not valid JSON"),
    "binary": (b"\x00\xff\xfe\x00", "not valid JSON"),
    "not UTF-8": (b'{"a": "\xff"}', "not valid JSON"),
    "a JSON list": (b"[]", "expected a JSON object"),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    "a folder": ("folder", "Is a directory"),
}


@pytest.mark.parametrize("content, message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_an_unreadable_workflow_file_exits_2_naming_it(tmp_path, capsys, content, message):
    path = tmp_path / "workflow.json"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    assert main(["run", str(path), "--output-dir", str(tmp_path / "output")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wanrt run: ") and str(path) in err and message in err
    assert not (tmp_path / "output").exists()


BAD_ARGS = {
    "a --set without '='": (["--set", "7.seed"], 2, "expected NODE_ID.input=VALUE"),
    "a --set of an unknown node": (["--set", "77.seed=1"], 1, "not NODE_ID.input"),
    "a --set of an unknown input": (["--set", "7.evil=1"], 1, "has no input 'evil'"),
    "a missing models dir": (["--models-dir", "/nonexistent/models"], 2, "does not exist"),
    "a bad extra_model_paths": (["--extra-model-paths", "{workdir}/extra.yaml"], 2, "must be a mapping"),
    "NaN through --set": (["--set", "7.cfg=NaN"], 1, "input 'cfg': A FLOAT input must be a finite number"),
    "a NUL prefix through --set": (["--set", "9.filename_prefix=a\0b"], 1, "contains a control character"),
}


@pytest.mark.parametrize("extra, status, message", BAD_ARGS.values(), ids=BAD_ARGS.keys())
def test_bad_arguments_exit_with_a_message_naming_them(tiny_models, tmp_path, capsys, extra, status, message):
    (tmp_path / "extra.yaml").write_text("wan: [1, 2]\n")
    extra = [arg.replace("{workdir}", str(tmp_path)) for arg in extra]
    if "\0" in "".join(extra):  # argv cannot carry NUL: the same value through a workflow file
        workflow = api(T2V)
        workflow[SAVE]["inputs"]["filename_prefix"] = "a\0b"
        path, extra = tmp_path / "nul.json", []
        path.write_text(json.dumps(workflow))
    else:
        path = WORKFLOWS / f"{T2V}.json"
    code = main(["run", str(path), "--models-dir", str(tiny_models), "--output-dir", str(tmp_path / "output"),
                 "--no-progress", *extra])
    assert code == status
    assert message in capsys.readouterr().err
    assert not (tmp_path / "output").exists()
