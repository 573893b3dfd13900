"""Bad model files and model folders: every corrupt or wrong checkpoint is a CheckpointError that
names the file (and the tensor where there is one); listing a model folder ends quickly whatever
its links and depth."""

import json
import os
import re
import struct
import time

import pytest
import torch

from wanrt.nodes.host import MODEL_FOLDER_DEPTH, HeadlessHost
from wanrt.wan_core import CheckpointError, load_clip_vision, load_dit, load_text_encoder, load_vae
from wanrt.wan_core.checkpoint import open_checkpoint

GOOD = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


def safetensors(header, data: bytes = bytes(16), length: int | None = None) -> bytes:
    """A safetensors file: 8-byte little-endian header length, JSON header, data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


CORRUPT = {
    "empty file": (b"", "not a safetensors file"),
    "seven bytes": (b"\x01" * 7, "not a safetensors file"),
    "header longer than the file": (safetensors(GOOD, length=10_000), "header is truncated"),
    "GGUF": (b"GGUF" + b"\x03\x00\x00\x00" + bytes(64), "GGUF files are not supported"),
    "header not JSON": (safetensors(b"{not json"), "corrupt safetensors header"),
    "header not UTF-8": (safetensors(b"\xff\xfe\x00"), "corrupt safetensors header"),
    "header a JSON list": (safetensors([1, 2]), "a JSON list, not an object"),
    "header deeply nested": (safetensors(b"[" * 100_000 + b"]" * 100_000), "corrupt safetensors header"),
    "entry an int": (safetensors({"w": 5}), "tensor 'w' is a JSON int"),
    "entry without data_offsets": (safetensors({"w": {"dtype": "F32", "shape": [2, 2]}}), "tensor 'w' has data_offsets None"),
    "entry without shape": (safetensors({"w": {"dtype": "F32", "data_offsets": [0, 16]}}), "tensor 'w' has shape None"),
    "unknown dtype": (safetensors({"w": {**GOOD["w"], "dtype": "F128"}}), "tensor 'w' has unsupported dtype 'F128'"),
    "dtype a list": (safetensors({"w": {**GOOD["w"], "dtype": ["F32"]}}), "tensor 'w' has unsupported dtype"),
    "negative dimension": (safetensors({"w": {**GOOD["w"], "shape": [-2, -2]}}), "tensor 'w' has shape"),
    "dimension a string": (safetensors({"w": {**GOOD["w"], "shape": ["2", 2]}}), "tensor 'w' has shape"),
    "offsets reversed": (safetensors({"w": {**GOOD["w"], "data_offsets": [16, 0]}}), "tensor 'w' has data_offsets"),
    "offsets of one number": (safetensors({"w": {**GOOD["w"], "data_offsets": [16]}}), "tensor 'w' has data_offsets"),
    "offsets floats": (safetensors({"w": {**GOOD["w"], "data_offsets": [0.0, 16.0]}}), "tensor 'w' has data_offsets"),
    "offsets past the end": (safetensors({"w": {**GOOD["w"], "data_offsets": [0, 16]}}, bytes(8)), "file is truncated: tensor 'w'"),
    "size not the shape's": (safetensors({"w": {**GOOD["w"], "shape": [3, 3]}}), "tensor 'w' of shape [3, 3] F32 needs 36 bytes"),
    "metadata a list": (safetensors({"__metadata__": ["x"], **GOOD}), "__metadata__ must map names to strings"),
    "metadata values not strings": (safetensors({"__metadata__": {"a": 1}, **GOOD}), "__metadata__ must map"),
}


@pytest.mark.parametrize("content, message", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_safetensors_file_is_named_with_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"^{path}: .*{re.escape(message)}"):
        open_checkpoint(path)


def test_a_well_formed_tiny_file_opens(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors(GOOD))
    assert torch.equal(open_checkpoint(path).load("w"), torch.zeros(2, 2))


PTH = {
    "not a pickle": b"definitely not a torch file",
    "a truncated zip": b"PK\x03\x04" + bytes(40),
}


@pytest.mark.parametrize("content", PTH.values(), ids=PTH.keys())
def test_a_corrupt_pth_file_is_named(tmp_path, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"^{path}: cannot read as a PyTorch checkpoint"):
        open_checkpoint(path)


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model.pth"
    torch.save({"w": Payload()}, path)
    with pytest.raises(CheckpointError, match=rf"^{path}: cannot read"):
        open_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_a_pth_that_is_not_a_state_dict_is_named(tmp_path):
    path = tmp_path / "model.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match=rf"^{path}: expected a state dict of tensors"):
        open_checkpoint(path)


LOADERS = {"dit": load_dit, "vae": load_vae, "text_encoder": load_text_encoder, "clip_vision": load_clip_vision}
WRONG_FILE = {"dit": "vae/wan_2.1_vae.safetensors", "vae": "clip_vision/clip_vision_h.safetensors",
              "text_encoder": "vae/wan_2.1_vae.safetensors", "clip_vision": "vae/wan_2.1_vae.safetensors"}


@pytest.mark.parametrize("kind", LOADERS)
def test_a_model_file_of_another_kind_is_named(tiny_models, kind):
    path = tiny_models / WRONG_FILE[kind]
    with pytest.raises(CheckpointError, match=str(path)):
        LOADERS[kind](path, device="cpu")


@pytest.mark.parametrize("kind", LOADERS)
def test_a_well_formed_but_empty_checkpoint_is_named(tmp_path, kind):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(safetensors({}, b""))
    with pytest.raises(CheckpointError, match=str(path)):
        LOADERS[kind](path, device="cpu")


def test_a_missing_file_and_a_folder_without_weights_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / 'absent.safetensors'}: no such file"):
        open_checkpoint(tmp_path / "absent.safetensors")
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / 'folder.safetensors'}: folder has no"):
        open_checkpoint(tmp_path / "folder.safetensors")


# Model folders


def models_with(tmp_path, build) -> HeadlessHost:
    folder = tmp_path / "models" / "diffusion_models"
    folder.mkdir(parents=True)
    (folder / "real.safetensors").write_bytes(b"")
    build(folder)
    return HeadlessHost.from_paths(tmp_path / "models")


FOLDERS = {
    "a link to itself": lambda f: (f / "a").symlink_to("."),
    "two links to itself": lambda f: ((f / "a").symlink_to("."), (f / "b").symlink_to(".")),
    "a link to its parent": lambda f: (f / "up").symlink_to(".."),
    "a link cycle": lambda f: ((f / "x").mkdir(), (f / "x" / "y").symlink_to(f), (f / "z").symlink_to(f / "x")),
    "a dangling link": lambda f: (f / "gone.safetensors").symlink_to(f / "nowhere"),
    "a link to itself by name": lambda f: (f / "self.safetensors").symlink_to("self.safetensors"),
    "a tree deeper than the bound": lambda f: os.makedirs(f / "/".join(["d"] * (MODEL_FOLDER_DEPTH + 5))),
}


@pytest.mark.parametrize("build", FOLDERS.values(), ids=FOLDERS.keys())
def test_listing_a_model_folder_ends_quickly_and_finds_its_files(tmp_path, build):
    host = models_with(tmp_path, build)
    start = time.monotonic()
    files = host.model_files("diffusion_models")
    assert time.monotonic() - start < 5
    assert "real.safetensors" in files
    assert len(files) < 100


def test_files_deeper_than_the_bound_are_not_listed_but_still_load_by_name(tmp_path):
    deep = "/".join(["d"] * (MODEL_FOLDER_DEPTH + 1))
    host = models_with(tmp_path, lambda f: (os.makedirs(f / deep), (f / deep / "m.safetensors").write_bytes(b"")))
    assert host.model_files("diffusion_models") == ["real.safetensors"]
    assert host.model_path("diffusion_models", f"{deep}/m.safetensors").endswith("m.safetensors")
    shallower = "/".join(["d"] * MODEL_FOLDER_DEPTH)
    (tmp_path / "models" / "diffusion_models" / shallower / "n.safetensors").write_bytes(b"")
    assert f"{shallower}/n.safetensors" in host.model_files("diffusion_models")
