"""Runs the tiny T2V, I2V and TI2V example workflows and saves each sampler's output latent.

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

WORKFLOWS = ("wan2.1_t2v_1.3B", "wan2.1_i2v_480p_14B", "wan2.2_ti2v_5B")
# 9 frames of 48×32 px: 18 tokens for the Wan 2.1 models, so shards are padded on 4 ranks; of
# 32×32 for TI2V 5B (16× VAE): 3 tokens, padded on 2 and 4. fp32 weights: the comparison is at
# fp32 rounding.
TINY = {"6.width": 48, "6.height": 32, "6.length": 9, "7.steps": 2, "2.mode": "off",
        "1.weight_dtype": "fp32"}
WIDTH = {"wan2.2_ti2v_5B": 32}
SAMPLER = "7"


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
    path = pathlib.Path(wanrt.__file__).parent / "workflows" / "api" / f"{name}.json"
    prompt = {node_id: node for node_id, node in json.loads(path.read_text()).items()
              if node["class_type"] not in ("WanRTVAEDecode", "WanRTSaveVideo")}
    prompt["99"] = {"class_type": "CaptureLatent", "inputs": {"samples": [SAMPLER, 0]}}
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
        result = executor.run(capture_prompt(name), {**TINY, "6.width": WIDTH.get(name, 48),
                                                     **(settings or {})})
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
