"""``wanrt run`` in a child process that a test can signal at a chosen stage.

Children come from a multiprocessing forkserver that has imported WanRT once, so each costs
milliseconds instead of a fresh interpreter's torch import. The child runs the real CLI on the
workflow of :func:`workflow` (fake loader and sampler, then a fake frame source feeding the real
WanRT Save Video node) and, at ``stage``, writes ``<workdir>/at-stage`` (holding the encoder's
pid at "save") and waits there until it is signalled:

- ``validate``: inside a node's VALIDATE_INPUTS, before any work;
- ``load``: in a node right after the (fake) model loader;
- ``sample``: inside the sampler's progress loop;
- ``save``: inside the mp4 write, after the first frame went to ffmpeg.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np
from runner_fakes import FAKE_NODES, Sample

import wanrt.nodes
import wanrt.runner  # imported here, so the forkserver's children start with it
from wanrt.__main__ import main
from wanrt.nodes.files import WanRTSaveVideo

STAGES = ("validate", "load", "sample", "save")
PREFIX = "fault/v"
MARKER = "at-stage"
_POPEN = subprocess.Popen
_stall_at: str | None = None
_workdir = pathlib.Path(".")


def _stall(stage: str, note: str = "") -> None:
    if stage == _stall_at:
        (_workdir / MARKER).write_text(note)
        time.sleep(600)


class Stage:
    """Passes its model through; stalls at "load", or in VALIDATE_INPUTS at "validate"."""

    CATEGORY = "test"
    RETURN_TYPES = ("FAKE_MODEL",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("FAKE_MODEL",)}}

    @classmethod
    def VALIDATE_INPUTS(cls):
        _stall("validate")
        return True

    def run(self, model):
        _stall("load")
        return (model,)


class Frames:
    """``frames`` random uint8 frames ``[T, H, W, 3]`` (seeded by ``value``): a video to save."""

    CATEGORY = "test"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}),
                             "frames": ("INT", {"default": 8, "min": 1, "max": 1000}),
                             "size": ("INT", {"default": 64, "min": 2, "max": 4096})}}

    def run(self, value, frames, size):
        rng = np.random.default_rng(value)
        return (rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8),)


NODES = {**FAKE_NODES, "Stage": Stage, "Frames": Frames, "WanRTSaveVideo": WanRTSaveVideo}


def workflow(seed: int = 1, format: str = "mp4", frames: int = 8, size: int = 64) -> dict:
    return {"1": {"class_type": "LoadModel", "inputs": {"model_name": "tiny.safetensors"}},
            "2": {"class_type": "Stage", "inputs": {"model": ["1", 0]}},
            "3": {"class_type": "Sample", "inputs": {"model": ["2", 0], "seed": seed, "steps": 3, "mode": "add"}},
            "4": {"class_type": "Frames", "inputs": {"value": ["3", 0], "frames": frames, "size": size}},
            "5": {"class_type": "WanRTSaveVideo", "inputs": {
                "images": ["4", 0], "filename_prefix": PREFIX, "format": format, "fps": 16.0, "quality": 80,
                "crf": 30}}}


class _StallingPopen(_POPEN):
    """subprocess.Popen whose stdin pipe stalls at "save" once the first frame is written."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.stdin is not None:
            self.stdin = _StallingPipe(self.stdin, self.pid)


class _StallingPipe:
    def __init__(self, pipe, pid: int):
        self._pipe, self._pid = pipe, pid

    def write(self, data):
        written = self._pipe.write(data)
        _stall("save", str(self._pid))
        return written

    def __getattr__(self, name):
        return getattr(self._pipe, name)


def run(workdir: str, stage: str | None = None, *, seed: int = 1, format: str = "mp4", frames: int = 8,
        size: int = 64, file_size_limit: int | None = None) -> None:
    """The child: ``wanrt run`` on :func:`workflow` in ``workdir`` (its models/ written by
    runner_fakes.write_model; output/; stderr to ``stderr-<pid>.txt``), stalling at ``stage``;
    exits with the CLI's status."""
    global _stall_at, _workdir
    _stall_at, _workdir = stage, pathlib.Path(workdir)
    with open(_workdir / f"stderr-{os.getpid()}.txt", "w") as err:
        os.dup2(err.fileno(), 2)
    wanrt.nodes.NODE_CLASS_MAPPINGS = NODES
    Sample.on_step = lambda: _stall("sample")
    subprocess.Popen = _StallingPopen  # in this child only: video_io starts ffmpeg through it
    path = _workdir / f"workflow-{os.getpid()}.json"
    path.write_text(json.dumps(workflow(seed, format, frames, size)))
    if file_size_limit is not None:  # a full disk: writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    sys.exit(main(["run", str(path), "--models-dir", str(_workdir / "models"),
                   "--output-dir", str(_workdir / "output"), "--no-progress"]))
