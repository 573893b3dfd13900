"""Tiny random LoRAs for the tiny DiTs, under the file names users (and ComfyUI's own Wan
templates, ``comfyui-workflow-templates-json`` 0.1.123) have, each in its file's real layout::

    loras/wan2.2_{t2v,i2v}_lightx2v_4steps_lora_* (high / low noise pairs)
    loras/lightx2v_{T2V,I2V}_14B_*_rank64_bf16.safetensors   (2.1 distill, with full deltas)
    loras/wan2.1_t2v_1.3B_*_{kohya,diffusers}.safetensors

Rank 4; deltas of about a tenth of a weight's spread, so a LoRA changes the output visibly while
sampling stays sane.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..dit.formats import official_to_diffusers
from ..lora.keys import official_parameters
from .dit import VARIANTS, _save

RANK = 4

# file -> (variant of the tiny DiT it fits, layout, storage dtype)
LORA_FILES: dict[str, tuple[str, str, torch.dtype]] = {
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise":
        ("wan2.2_t2v_high_noise_14B", "down_up_alpha", torch.bfloat16),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise":
        ("wan2.2_t2v_low_noise_14B", "down_up_alpha", torch.bfloat16),
    "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise":
        ("wan2.2_i2v_high_noise_14B", "A_B", torch.bfloat16),
    "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise":
        ("wan2.2_i2v_low_noise_14B", "A_B", torch.bfloat16),
    "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16":
        ("wan2.1_t2v_14B", "down_up_alpha+diff", torch.bfloat16),
    "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16":
        ("wan2.1_i2v_480p_14B", "down_up_alpha+diff", torch.bfloat16),
    "wan2.1_t2v_1.3B_style_kohya": ("wan2.1_t2v_1.3B", "kohya", torch.float16),
    "wan2.1_t2v_1.3B_style_diffusers": ("wan2.1_t2v_1.3B", "diffusers", torch.bfloat16),
}


def lora_tensors(variant: str, layout: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The fp32 tensors of a tiny LoRA for ``variant`` in ``layout``.

    Layouts: ``down_up_alpha`` (``diffusion_model.<module>.lora_down/lora_up.weight`` +
    ``.alpha``, the block Linears), ``A_B`` (``lora_A/lora_B``, no alpha), ``down_up_alpha+diff``
    (every Linear, plus ``.diff`` for norm scales, ``.diff_b`` for biases, ``blocks.N.diff_m``),
    ``kohya`` (``lora_unet_blocks_0_self_attn_q``), ``diffusers`` (``transformer.`` +
    diffusers module names, ``lora_A/lora_B``).
    """
    shapes = official_parameters(VARIANTS[variant])
    generator = torch.Generator().manual_seed(7919 * seed + sum(map(ord, variant + layout)))

    def randn(*shape, std):
        return torch.randn(shape, generator=generator) * std

    every = layout == "down_up_alpha+diff"
    out: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        module, _, attr = name.rpartition(".")
        in_block = name.startswith("blocks.")
        if attr == "weight" and len(shape) == 2 and (in_block or every):
            down, up = randn(RANK, shape[1], std=0.03), randn(shape[0], RANK, std=0.03)
            if layout == "kohya":
                stem = "lora_unet_" + module.replace(".", "_")
                out |= {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up,
                        f"{stem}.alpha": torch.tensor(float(RANK / 2))}
            elif layout == "diffusers":
                stem = "transformer." + official_to_diffusers(module)
                out |= {f"{stem}.lora_A.weight": down, f"{stem}.lora_B.weight": up}
            elif layout == "A_B":
                stem = "diffusion_model." + module
                out |= {f"{stem}.lora_A.weight": down, f"{stem}.lora_B.weight": up}
            else:
                stem = "diffusion_model." + module
                out |= {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up,
                        f"{stem}.alpha": torch.tensor(float(RANK))}
        elif every and attr == "bias":
            out[f"diffusion_model.{module}.diff_b"] = randn(*shape, std=0.002)
        elif every and attr == "weight" and len(shape) == 1:  # norm scales
            out[f"diffusion_model.{module}.diff"] = randn(*shape, std=0.002)
        elif every and attr == "modulation" and in_block:
            out[f"diffusion_model.{module}.diff_m"] = randn(*shape, std=0.002)
    return out


def write(outdir: Path, seed: int = 0) -> list[Path]:
    """Write every tiny LoRA under ``outdir/loras``; returns the paths written."""
    return [_save({k: v.to(dtype) for k, v in lora_tensors(variant, layout, seed).items()},
                  Path(outdir) / "loras" / f"{name}.safetensors")
            for name, (variant, layout, dtype) in LORA_FILES.items()]
