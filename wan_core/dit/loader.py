"""``load_dit``: any supported Wan DiT checkpoint -> :class:`WanModel` with its weights.

Accepted: an official Wan-AI folder (``config.json`` + ``diffusion_pytorch_model*.safetensors``,
sharded with an index json) or one of its files; ComfyUI single files, bare or prefixed
``model.diffusion_model.``, in fp16 / bf16 / fp8_e4m3fn / legacy ``scaled_fp8`` + ``scale_weight``
/ ``weight_scale`` + ``comfy_quant``; a diffusers folder (pipeline root with ``transformer/``, or
the transformer folder) or file. The model is built on the meta device and each tensor is read
from the file straight into its final dtype and device, so the whole model is never held twice.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import torch

from ...kernels import current_platform
from .. import parallel
from ..attention import get_backend
from ..checkpoint import (FP8_DTYPES, Checkpoint, CheckpointError, assign_weights, fp8_scales,
                          open_checkpoint)
from .config import detect_config
from .formats import to_official
from .model import Linear, WanModel, dequantise


def load_dit(path: str | os.PathLike, *, dtype: torch.dtype | None = None,
             device: torch.device | str | None = None, keep_fp8: bool = False,
             attention_backend: str = "auto") -> WanModel:
    """Load a Wan 2.1 / 2.2 DiT; the variant is detected from tensor names and shapes.

    ``dtype``: weights and compute dtype (default bf16, fp16 where the platform has no bf16); the
    timestep path stays fp32. ``device``: default the current platform's device. ``keep_fp8``:
    fp8 Linear weights stay fp8 in memory and are dequantised at matmul time (otherwise they are
    dequantised to ``dtype`` while loading). Errors are :class:`CheckpointError` naming the file
    and the first offending tensor; no partly loaded model is ever returned. In a parallel
    run (``wan_core.parallel.init``) the model shards its tokens over this rank's sequence group.
    """
    get_backend(attention_backend)
    platform = current_platform()
    dtype = dtype or (torch.bfloat16 if platform.bf16 else torch.float16)
    device = torch.device(device) if device is not None else platform.device()

    files, config_json = _open(Path(path))
    files = to_official(files)
    ckpt, scales = fp8_scales(files)
    config = detect_config(ckpt, config_json)
    fp8 = [k for k in ckpt if ckpt[k].dtype in FP8_DTYPES]
    if fp8 and keep_fp8 and not platform.fp8:
        raise CheckpointError(f"{ckpt.description}: holds float8 weights (first {fp8[0]!r}) but "
                              f"the {platform.name} platform has no float8 dtype; load with "
                              f"keep_fp8=False to dequantise them to {dtype}")
    mesh = parallel.current()
    if mesh is not None:
        mesh.layout.check_heads(config.num_heads)

    with torch.device("meta"):
        model = WanModel(config, dtype=dtype, attention_backend=attention_backend)
    params = model.state_dict(keep_vars=True)
    kept = {k for k in fp8 if keep_fp8 and k in params and _is_linear_weight(model, k)}

    def scale(key: str) -> torch.Tensor | None:
        return files.load(scales[key]).to(device, torch.float32) if key in scales else None

    def read(key: str) -> torch.Tensor:
        """One tensor, on ``device`` in its final dtype (fp8 kept, or dequantised in fp32)."""
        t = files.load(key).to(device)
        if key in kept:
            return t
        if t.dtype in FP8_DTYPES:
            t = dequantise(t, scale(key), torch.float32)
        return t.to(params[key].dtype if key in params else dtype)

    view = Checkpoint({k: ckpt[k] for k in ckpt}, {k: partial(read, k) for k in ckpt},
                      ckpt.description, ckpt.metadata)
    assign_weights(model, view, what=f"{config.variant} Wan DiT", device=device, keep_fp8=True)
    for key in kept:
        model.get_submodule(key.rpartition(".")[0]).weight_scale = scale(key)
    if mesh is not None:
        model.set_sequence_parallel(mesh.sequence_parallel)
    return model


def _open(path: Path) -> tuple[Checkpoint, Path | None]:
    """The checkpoint at ``path`` and, for a folder, its ``config.json``."""
    if not path.is_dir():
        return open_checkpoint(path), None
    for pair in (("high_noise_model", "low_noise_model"), ("transformer", "transformer_2")):
        if all((path / name).is_dir() for name in pair):
            raise CheckpointError(f"{path}: holds the two experts of a Wan 2.2 A14B model "
                                  f"({pair[0]}/ and {pair[1]}/); load each folder with load_dit")
    if (path / "transformer").is_dir() and not any(path.glob("diffusion_pytorch_model*")):
        path = path / "transformer"  # diffusers pipeline root
    return open_checkpoint(path, stem="diffusion_pytorch_model"), path / "config.json"


def _is_linear_weight(model: WanModel, key: str) -> bool:
    module, _, param = key.rpartition(".")
    return param == "weight" and isinstance(model.get_submodule(module), Linear)
