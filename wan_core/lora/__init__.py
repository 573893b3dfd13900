"""LoRA for the Wan DiT: ``load_lora(path)`` and ``apply_lora(dit, lora, strength, mode=)``.

``apply_lora`` returns a NEW model that shares every tensor it does not patch with ``dit`` and
leaves ``dit`` as it was (loader outputs are cached and graphs branch); stacking LoRAs is calling
it again on the result. Per patched parameter ``W`` (math as ComfyUI's ``comfy.lora``)::

    W + strength * alpha / rank * (up @ down)     low-rank pair (alpha absent: scale 1)
    W + strength * diff                           full-tensor deltas: .diff, .diff_b, .diff_m

* ``mode="merge"`` bakes the sum into the weight, computed in fp32 and rounded once to the
  weight's dtype; an fp8 weight is re-quantised with a new per-row scale (its memory unchanged).
* ``mode="runtime"`` keeps the base weight (fp8 stays fp8, untouched) and adds the low-rank path
  at matmul time (:class:`~wan_core.dit.model.LoRALinear`): changing the strength costs a new
  ``apply_lora`` on the base model, no weight rewrite. Full-tensor deltas are merged in both modes.

Fused projections (``WanModel.fuse_projections``: ``self_attn.fused.q_k_v``...) take the LoRA of
each part on its rows, so a LoRA applies the same before or after fusing. ``diff_m`` (lightx2v:
``blocks.N.diff_m``) patches ``blocks.N.modulation``; ComfyUI 0.33.0 leaves such tensors out with
a "lora key not loaded" warning. Tensors that match no parameter of the model are reported in one
:class:`LoRAKeyWarning` naming them; a LoRA made for another model size is a
:class:`~wan_core.checkpoint.CheckpointError` naming the file and the tensor.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..checkpoint import FP8_DTYPES, CheckpointError, open_checkpoint
from ..dit.model import LoRALinear, WanModel, dequantise, weight_sharing_copy
from . import keys as lora_keys

MODES = ("merge", "runtime")


class LoRAKeyWarning(UserWarning):
    """Tensors of a LoRA file that no parameter of the model takes."""


@dataclass
class LoRA:
    """A LoRA file's tensors, grouped by the module they patch (names as in the file)."""

    name: str
    tensors: dict[str, torch.Tensor]
    groups: dict[str, dict[str, str]] = field(default_factory=dict)  # stem -> role -> name


def load_lora(path: str | os.PathLike) -> LoRA:
    """Read a LoRA file (safetensors or a ``.pt`` state dict) and group its tensors by module."""
    ckpt = open_checkpoint(path)
    lora = LoRA(str(path), {key: ckpt.load(key) for key in ckpt})
    for key in lora.tensors:
        kind = lora_keys.unsupported(key)
        if kind:
            raise CheckpointError(f"{path}: tensor {key!r} belongs to a {kind} adapter, which "
                                  f"WanRT does not apply (plain LoRA and diff patches only)")
        parts = lora_keys.split(key)
        if parts is not None:  # others are reported by apply_lora as not applied
            lora.groups.setdefault(parts[0], {})[parts[1]] = key
    if not lora.tensors:
        raise CheckpointError(f"{path}: the LoRA file holds no tensors")
    return lora


@dataclass
class _Delta:
    """One patch of an official parameter: ``up @ down * scale`` or ``diff``; ``key`` names it."""

    key: str
    diff: torch.Tensor | None = None
    up: torch.Tensor | None = None
    down: torch.Tensor | None = None
    scale: float = 1.0

    def full(self, device: torch.device) -> torch.Tensor:
        """The delta as a dense fp32 tensor on ``device`` (the parameter's shape)."""
        if self.diff is not None:
            return self.diff.to(device, torch.float32)
        up, down = (m.to(device, torch.float32).flatten(1) for m in (self.up, self.down))
        return self.scale * torch.mm(up, down)


def apply_lora(dit: WanModel, lora: LoRA | str | os.PathLike, strength: float = 1.0, *,
               mode: str = "merge") -> WanModel:
    """``dit`` with ``lora`` (a path or a :func:`load_lora` result) applied at ``strength``; a new
    model, ``dit`` untouched (see the module docstring for ``mode``)."""
    if mode not in MODES:
        raise ValueError(f"LoRA mode must be one of {MODES}, got {mode!r}")
    if not isinstance(lora, LoRA):
        lora = load_lora(lora)
    deltas = _deltas(dit, lora)
    model = weight_sharing_copy(dit)
    if strength == 0:
        return model
    low_rank: dict[str, list[tuple[_Delta, slice | None]]] = {}
    dense: dict[tuple[str, str], list[tuple[_Delta, slice | None]]] = {}
    for official, delta in deltas:
        module, attr, rows = _locate(model, official)
        if mode == "runtime" and delta.up is not None and isinstance(
                model.get_submodule(module), nn.Linear):
            low_rank.setdefault(module, []).append((delta, rows))
        else:
            dense.setdefault((module, attr), []).append((delta, rows))
    with torch.no_grad():
        for (module, attr), patches in dense.items():
            _merge(model.get_submodule(module), attr, patches, strength)
        for module, patches in low_rank.items():
            _add_runtime(model, module, patches, strength)
    return model


def _deltas(dit: WanModel, lora: LoRA) -> list[tuple[str, _Delta]]:
    """``(official parameter, delta)`` for every tensor group of ``lora`` this model takes;
    warns once about the rest, errors on shape mismatches."""
    shapes = lora_keys.official_parameters(dit.config)
    index = lora_keys.module_index(shapes)
    t = lora.tensors
    found, used = [], set()
    for stem, roles in lora.groups.items():
        module = lora_keys.official_module(stem, index)
        if module is None:
            continue
        patches = []  # (official parameter, delta, the tensor names it consumes)
        if "up" in roles and "down" in roles:
            up, down = t[roles["up"]], t[roles["down"]]
            alpha = t[roles["alpha"]].item() if "alpha" in roles else None
            patches.append((module + ".weight",
                            _Delta(roles["up"], None, up, down,
                                   alpha / down.shape[0] if alpha is not None else 1.0),
                            [roles[r] for r in ("up", "down", "alpha") if r in roles]))
        for role, target in (("diff", module + ".weight" if module + ".weight" in shapes
                              else module),
                             ("diff_b", module + ".bias"), ("diff_m", module + ".modulation")):
            if role in roles:
                patches.append((target, _Delta(roles[role], t[roles[role]]), [roles[role]]))
        for official, delta, names in patches:
            if official not in shapes:
                continue
            _check_shape(lora, dit, official, shapes[official], delta)
            found.append((official, delta))
            used.update(names)
    if not found:
        raise CheckpointError(f"{lora.name}: no tensor of this file patches a parameter of the "
                              f"{dit.config.variant} Wan model (first tensor "
                              f"{next(iter(t))!r}); is it a Wan LoRA?")
    unmatched = sorted(set(t) - used)
    if unmatched:
        warnings.warn(LoRAKeyWarning(
            f"{lora.name}: {len(unmatched)} tensors match no parameter of this "
            f"{dit.config.variant} model and were not applied: {', '.join(unmatched)}"),
            stacklevel=3)
    return found


def _check_shape(lora: LoRA, dit: WanModel, official: str, shape: tuple[int, ...],
                 delta: _Delta) -> None:
    if delta.diff is not None:
        got, fits = tuple(delta.diff.shape), tuple(delta.diff.shape) == shape
    else:
        got = (delta.up.shape[0], delta.down[0].numel())
        fits = got == (shape[0], math.prod(shape[1:])) and delta.up.shape[1] == delta.down.shape[0]
    if not fits:
        raise CheckpointError(
            f"{lora.name}: LoRA tensor {delta.key!r} patches {official} with shape {got}, but "
            f"this {dit.config.variant} model's is {shape}: the LoRA was made for another Wan "
            f"model (size or variant)")


def _locate(model: nn.Module, official: str) -> tuple[str, str, slice | None]:
    """``(module path, attribute, rows)`` holding official parameter ``official`` in ``model``:
    the module itself, or the fused projection (``...fused.q_k_v``) with the part's rows."""
    module, _, attr = official.rpartition(".")
    try:
        model.get_submodule(module)
        return module, attr, None
    except AttributeError:
        pass
    parent, _, part = module.rpartition(".")
    for name, fused in model.get_submodule(parent).fused.items():
        parts = re.findall(r"k_img|v_img|[qkvo]", name)
        if part in parts:
            n = fused.weight.shape[0] // len(parts)
            i = parts.index(part)
            return f"{parent}.fused.{name}", attr, slice(i * n, (i + 1) * n)
    raise AttributeError(f"{official} is neither a parameter nor a fused part of the model")


def _merge(module: nn.Module, attr: str, patches, strength: float) -> None:
    """Add the patches to ``module.<attr>`` in fp32 and store it back in its dtype; an fp8
    weight is dequantised, patched and re-quantised with per-row scales."""
    param = getattr(module, attr)
    fp8 = param.dtype in FP8_DTYPES
    weight = (dequantise(param, getattr(module, "weight_scale", None), torch.float32) if fp8
              else param.to(torch.float32, copy=True))
    for delta, rows in patches:
        target = weight if rows is None else weight[rows]
        target += strength * delta.full(weight.device).reshape(target.shape)
    if fp8:
        weight, module.weight_scale = _quantise(weight, param.dtype)
    setattr(module, attr, nn.Parameter(weight.to(param.dtype), requires_grad=False))


def _quantise(weight: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 ``[out, in]`` -> (fp8 weight, per-row fp32 scale ``[out]``), rows scaled to the
    fp8 range."""
    top = torch.finfo(dtype).max
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / top
    return (weight / scale[:, None]).clamp(-top, top).to(dtype), scale


def _add_runtime(model: nn.Module, path: str, patches, strength: float) -> None:
    """Replace the Linear at ``path`` by a :class:`LoRALinear` with the patches' low-rank path
    (parts of a fused projection write their rows of ``up``)."""
    linear = model.get_submodule(path)
    dtype, device = model.dtype, linear.weight.device
    downs, ups = [], []
    for delta, rows in patches:
        up = strength * delta.scale * delta.up.float()
        if rows is not None:
            up = torch.zeros(linear.out_features, up.shape[1]).index_copy_(
                0, torch.arange(rows.start, rows.stop), up)
        downs.append(delta.down.float())
        ups.append(up)
    down = torch.cat(downs).to(device, dtype)
    up = torch.cat(ups, dim=1).to(device, dtype)
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent), name, LoRALinear.wrap(linear, down, up))


__all__ = ["LoRA", "LoRAKeyWarning", "MODES", "apply_lora", "load_lora"]
