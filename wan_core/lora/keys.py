"""LoRA tensor names in every layout users have, mapped onto the official Wan parameter names.

A LoRA tensor name is ``<wrapper><module><suffix>``:

* wrapper (any, in this order): ``base_model.model.`` (PEFT), ``model.diffusion_model.`` /
  ``diffusion_model.`` (ComfyUI, lightx2v), ``transformer.`` (diffusers), ``unet.``;
* module: official (``blocks.0.self_attn.q``), diffusers (``blocks.0.attn1.to_q``,
  ``condition_embedder.time_embedder.linear_1``), or either with dots as underscores after
  ``lora_unet_`` (kohya; Wan Fun writes ``lora_unet__``), ``lora_transformer_`` (OneTrainer),
  ``lycoris_``;
* suffix: a role in :data:`ROLES` (``lora_down``/``lora_up`` + ``alpha``, ``lora_A``/``lora_B``
  with PEFT's ``.default``, full-tensor deltas ``diff`` / ``diff_b``), or ``diff_m`` after a block
  (``blocks.0.diff_m``, the delta of ``blocks.0.modulation``).
"""

from __future__ import annotations

import torch

from ..dit import DiTConfig, WanModel
from ..dit.formats import official_to_diffusers

# Name suffix -> role. up: [out, rank]; down: [rank, in]; alpha: scalar (scale = alpha / rank);
# diff: the delta of the module's weight (or of the parameter itself); diff_b: of its bias.
ROLES = {
    ".lora_up.weight": "up", ".lora_down.weight": "down",
    ".lora_B.weight": "up", ".lora_A.weight": "down",
    ".lora_B.default.weight": "up", ".lora_A.default.weight": "down",
    ".lora.up.weight": "up", ".lora.down.weight": "down",
    "_lora.up.weight": "up", "_lora.down.weight": "down",
    ".lora_B": "up", ".lora_A": "down",
    ".alpha": "alpha",
    ".diff": "diff", ".diff_b": "diff_b", ".diff_m": "diff_m",
}
# Suffixes of adapter kinds WanRT does not apply (a clear error rather than a wrong model).
UNSUPPORTED = {
    ".dora_scale": "DoRA", ".lora_mid.weight": "LoCon (Tucker)", ".hada_w1_a": "LoHa",
    ".lokr_w1": "LoKr", ".lokr_w1_a": "LoKr", ".oft_blocks": "OFT", ".reshape_weight":
    "reshaping LoRA", ".set_weight": "set-weight patch", ".w_norm": "GLoRA norm",
}
WRAPPERS = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.",
            "unet.")
UNDERSCORED = ("lora_unet_", "lora_transformer_", "lycoris_")


def split(key: str) -> tuple[str, str] | None:
    """``(module stem, role)`` of a LoRA tensor name, None for a name of no known role."""
    for suffix, role in ROLES.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


def unsupported(key: str) -> str | None:
    """The adapter kind of ``key`` if it is one WanRT does not apply."""
    return next((kind for suffix, kind in UNSUPPORTED.items() if key.endswith(suffix)), None)


def official_parameters(config: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Official parameter name -> shape of a Wan DiT of ``config`` (built on the meta device)."""
    with torch.device("meta"):
        model = WanModel(config)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def module_index(parameters) -> dict[str, str]:
    """Every accepted spelling of a module or parameter path -> its official path."""
    paths = set(parameters) | {name.rpartition(".")[0] for name in parameters}
    index: dict[str, str] = {}
    for path in paths:
        for spelling in (path, official_to_diffusers(path)):
            index[spelling] = index[spelling.replace(".", "_")] = path
    return index


def official_module(stem: str, index: dict[str, str]) -> str | None:
    """The official module (or parameter) path a LoRA stem names, None if it names none."""
    for wrapper in WRAPPERS:
        if stem.startswith(wrapper):
            stem = stem[len(wrapper):]
    for prefix in UNDERSCORED:
        if stem.startswith(prefix):
            return index.get(stem[len(prefix):].lstrip("_"))
    return index.get(stem.replace(".processor.", "."))
