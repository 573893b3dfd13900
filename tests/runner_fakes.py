"""Small fake node classes (classic ComfyUI node API) for the runner and host tests.

``CALLS`` counts executions per class so tests can see what the cache reused.
"""

from __future__ import annotations

import collections
import json
import pathlib

from wanrt.nodes import base, host
from wanrt.wan_core.file_names import final_name
from wanrt.wan_core.video_io import next_counter, resolve_prefix

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "runner"
CALLS: collections.Counter = collections.Counter()


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def write_model(models_dir: pathlib.Path, name: str = "tiny.safetensors", scale: int = 3) -> None:
    """A fake "model file": a text file holding the model's scale, in diffusion_models/."""
    (models_dir / "diffusion_models").mkdir(parents=True, exist_ok=True)
    (models_dir / "diffusion_models" / name).write_text(str(scale))


class Number:
    CATEGORY = "test"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1, "min": -100, "max": 100})}}

    def run(self, value):
        CALLS["Number"] += 1
        return (value,)


class Add:
    CATEGORY = "test"
    RETURN_TYPES = ("INT",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0, "min": -1000, "max": 1000}),
                             "b": ("INT", {"default": 0, "min": -1000, "max": 1000})}}

    def add(self, a, b):
        CALLS["Add"] += 1
        return (a + b,)


class LoadModel:
    """Reads a fake model file: its text is the model's scale."""

    CATEGORY = "test"
    RETURN_TYPES = ("FAKE_MODEL",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": base.model_file_input("diffusion_models", "a fake model file")}}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name):
        return base.validate_model_file("diffusion_models", model_name)

    def load(self, model_name):
        CALLS["LoadModel"] += 1
        path = host.current().model_path("diffusion_models", model_name)
        return ({"scale": int(pathlib.Path(path).read_text())},)


class Sample:
    """Stands for a sampler: one progress step per step; ``on_step`` lets a test act mid-run."""

    CATEGORY = "test"
    RETURN_TYPES = ("INT",)
    FUNCTION = "sample"
    on_step = None

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("FAKE_MODEL",),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff}),
                             "steps": ("INT", {"default": 2, "min": 1, "max": 100}),
                             "mode": (["add", "mul"],)}}

    def sample(self, model, seed, steps, mode):
        CALLS["Sample"] += 1
        bar = host.current().progress(steps)
        for _ in range(steps):
            if Sample.on_step is not None:
                Sample.on_step()
            bar.update(1)
        return (model["scale"] + seed if mode == "add" else model["scale"] * seed,)


class SaveNumber:
    """Output node: writes the value to ``<prefix>_00001_.txt`` in the host's output directory."""

    CATEGORY = "test"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}),
                             "filename_prefix": ("STRING", {"default": "number"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix):
        return base.validate_filename_prefix(filename_prefix)

    def save(self, value, filename_prefix):
        CALLS["SaveNumber"] += 1
        folder, name, subfolder = resolve_prefix(host.current().output_dir(), filename_prefix)
        folder.mkdir(parents=True, exist_ok=True)
        filename = final_name(name, next_counter(folder, name), "txt")
        (folder / filename).write_text(str(value))
        return {"ui": {"text": [str(value)],
                       "files": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}}


class Text:
    CATEGORY = "test"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "", "multiline": True})}}

    def run(self, text):
        return (text,)


class Fail:
    CATEGORY = "test"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    def run(self, value):
        raise RuntimeError(f"fake failure on {value}")


class AlwaysRerun:
    """IS_CHANGED returns NaN: never taken from the cache."""

    CATEGORY = "test"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    @classmethod
    def IS_CHANGED(cls, value):
        return float("nan")

    def run(self, value):
        CALLS["AlwaysRerun"] += 1
        return (value,)


class Widgets:
    """Every widget kind whose saved ``widgets_values`` carry helper values (or do not)."""

    CATEGORY = "test"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("FAKE_MODEL",),
                             "seed": ("INT", {"default": 0}),  # implicit control_after_generate
                             "count": ("INT", {"default": 1, "control_after_generate": True}),
                             "flag": ("BOOLEAN", {"default": False}),
                             "mode": (["a", "b"], {"control_after_generate": True}),  # mode + filter
                             "image": (["x.png", "y.png"], {"image_upload": True}),
                             "linked": ("INT", {"forceInput": True})},
                "optional": {"noise_seed": ("INT", {"default": 5, "control_after_generate": False}),
                             "values": ("STRING", {"default": "x"}),
                             "strength": ("FLOAT", {"default": 1.0})}}

    def run(self, **kwargs):
        return (0,)


FAKE_NODES = {cls.__name__: cls for cls in (Number, Add, LoadModel, Sample, SaveNumber, Text, Fail,
                                             AlwaysRerun, Widgets)}


def headless_host(tmp_path: pathlib.Path) -> host.HeadlessHost:
    """A headless host in ``tmp_path`` with one fake model, ``tiny.safetensors`` (scale 3)."""
    write_model(tmp_path / "models")
    return host.HeadlessHost.from_paths(tmp_path / "models", output_dir=tmp_path / "output",
                                        input_dir=tmp_path / "input", temp_dir=tmp_path / "temp",
                                        show_progress=False)
