"""Runs the tiny T2V, I2V and TI2V example workflows (and T2V in its ComfyUI-native flavour) and
saves each sampler's output latent.

In the test process (``run_workflows(models, out, "single")``) it gives the one-process
reference; under ``torchrun --nproc-per-node N parallel_driver.py MODELS OUT MODE...`` every rank
runs each workflow once per ``--parallel`` MODE and saves ``MODE-rankR-WORKFLOW.pt``, or
``MODE-rankR-error.txt`` where the mode cannot run these models.
"""

from __future__ import annotations

import json
import pathlib
import sys

import torch

import wanrt
from wanrt.nodes import runner_node_classes
from wanrt.nodes.host import HeadlessHost
from wanrt.runner import Executor

# name -> (API file under workflows/, its sampler node, the overrides that make it tiny). 9 frames of
# 48×32 px: 18 tokens for the Wan 2.1 models, so shards are padded on 4 ranks; of 32×32 for TI2V
# 5B (16× VAE): 3 tokens, padded on 2 and 4. fp32 weights where the loader offers them: the
# comparison is at fp32 rounding. The ComfyUI-native flavour (core nodes, KSampler) splits its
# guidance passes on its own code path.
_WANRT_TINY = {"6.width": 48, "6.height": 32, "6.length": 9, "7.steps": 2, "2.mode": "off",
               "1.weight_dtype": "fp32"}
EXAMPLES = {
    "wan2.1_t2v_1.3B": ("api/wan2.1_t2v_1.3B.json", "7", _WANRT_TINY),
    "wan2.1_i2v_480p_14B": ("api/wan2.1_i2v_480p_14B.json", "7", _WANRT_TINY),
    "wan2.2_ti2v_5B": ("api/wan2.2_ti2v_5B.json", "7", {**_WANRT_TINY, "6.width": 32}),
    "native_wan2.1_t2v_1.3B": ("comfyui_native/api/wan2.1_t2v_1.3B.json", "9",
                               {"8.width": 48, "8.height": 32, "8.length": 9, "9.steps": 2,
                                "2.compile": "off"}),
}
WORKFLOWS = tuple(EXAMPLES)
AFTER_SAMPLING = ("WanRTVAEDecode", "WanRTSaveVideo", "VAEDecode", "CreateVideo", "SaveVideo")


class CaptureLatent:
    """Output node: saves its LATENT's samples to ``CaptureLatent.path``."""
    CATEGORY = "test"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    path: pathlib.Path

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def save(self, samples):
        torch.save(samples["samples"], CaptureLatent.path)
        return {}


def capture_prompt(name: str) -> dict:
    """The API prompt of example ``name`` ending at the sampler (no decode, no video)."""
    file, sampler, _ = EXAMPLES[name]
    path = pathlib.Path(wanrt.__file__).parent / "workflows" / file
    prompt = {node_id: node for node_id, node in json.loads(path.read_text()).items()
              if node["class_type"] not in AFTER_SAMPLING}
    prompt["99"] = {"class_type": "CaptureLatent", "inputs": {"samples": [sampler, 0]}}
    return prompt


# The Compile node tracing every block (Dynamo and AOTAutograd, no Inductor: seconds on a CPU):
# the sharded attention's collectives must trace as they run.
TRACED = {"2.mode": "blocks", "2.backend": "aot_eager"}


def run_workflows(models: pathlib.Path, out: pathlib.Path, tag: str,
                  workflows: tuple[str, ...] = WORKFLOWS, settings: dict | None = None) -> None:
    """Each workflow once, latents to ``out/TAG-WORKFLOW.pt``; a failure to ``out/TAG-error.txt``."""
    executor = Executor(HeadlessHost.from_paths(models, output_dir=out / "unused", show_progress=False),
                        node_classes={**runner_node_classes(), "CaptureLatent": CaptureLatent})
    for name in workflows:
        CaptureLatent.path = out / f"{tag}-{name}.pt"
        result = executor.run(capture_prompt(name), {**EXAMPLES[name][2], **(settings or {})})
        if not result.ok:
            (out / f"{tag}-error.txt").write_text(result.error["exception_message"])
            return


def main(models: str, out: str, *modes: str) -> None:
    from wanrt.wan_core import parallel

    for mode in modes:
        traced = mode.endswith("@traced")  # e.g. ring@traced: the T2V workflow, compiled
        mode = mode.removesuffix("@traced")
        mesh = parallel.init(mode, timeout_s=120)
        if traced:
            run_workflows(pathlib.Path(models), pathlib.Path(out), f"{mode}@traced-rank{mesh.rank}",
                          WORKFLOWS[:1], TRACED)
        else:
            run_workflows(pathlib.Path(models), pathlib.Path(out), f"{mode}-rank{mesh.rank}")
    parallel.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
