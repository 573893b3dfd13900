"""DiT checkpoint layouts and their mapping onto the official Wan tensor names.

* Official Wan-AI folders and ComfyUI files use the official names; ComfyUI files may prefix them
  with ``model.diffusion_model.`` (all-in-one files also hold ``vae.*`` / ``text_encoders.*``).
* diffusers ``WanTransformer3DModel`` renames modules (table below, no tensor is reshaped); its
  ``norm2`` is the official ``norm3`` (the affine LayerNorm before cross-attention).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..checkpoint import Checkpoint, CheckpointError

# Official module (or parameter) path -> diffusers path; top level, and inside ``blocks.N.``.
OFFICIAL_TO_DIFFUSERS_TOP = {
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "img_emb.emb_pos": "condition_embedder.image_embedder.pos_embed",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",
}
OFFICIAL_TO_DIFFUSERS_BLOCK = {
    **{f"self_attn.{a}": f"attn1.{b}" for a, b in (
        ("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"),
        ("norm_q", "norm_q"), ("norm_k", "norm_k"))},
    **{f"cross_attn.{a}": f"attn2.{b}" for a, b in (
        ("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"),
        ("norm_q", "norm_q"), ("norm_k", "norm_k"),
        ("k_img", "add_k_proj"), ("v_img", "add_v_proj"), ("norm_k_img", "norm_added_k"))},
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    "modulation": "scale_shift_table",
}


def _renamer(top: dict[str, str], block: dict[str, str]) -> Callable[[str], str]:
    """Map a tensor name through the tables; a name no table covers is returned unchanged."""
    def rename(key: str) -> str:
        m = re.match(r"(blocks\.\d+\.)(.*)", key)
        prefix, rest, table = (m[1], m[2], block) if m else ("", key, top)
        if rest in table:  # a parameter named in the table (modulation, emb_pos)
            return prefix + table[rest]
        module, _, param = rest.rpartition(".")
        return prefix + table[module] + "." + param if module in table else key
    return rename


official_to_diffusers = _renamer(OFFICIAL_TO_DIFFUSERS_TOP, OFFICIAL_TO_DIFFUSERS_BLOCK)
diffusers_to_official = _renamer({v: k for k, v in OFFICIAL_TO_DIFFUSERS_TOP.items()},
                                 {v: k for k, v in OFFICIAL_TO_DIFFUSERS_BLOCK.items()})

COMFY_PREFIX = "model.diffusion_model."

# Tensor-name markers of the other components a user may pick by mistake.
_OTHER_COMPONENTS = (
    ("text encoder (UMT5)", (".SelfAttention.", "shared.weight", "token_embedding.weight",
                             "spiece_model", "text_encoders.")),
    ("CLIP vision", ("vision_model.", "visual.", "textual.")),
    ("VAE", ("decoder.", "encoder.", "quant_conv.", "vae.")),
)


def to_official(ckpt: Checkpoint) -> Checkpoint:
    """A view of ``ckpt`` with official tensor names, from any supported layout; a clear error
    for other components (VAE, text encoder, CLIP) and unknown files."""
    if any(k.startswith(COMFY_PREFIX) for k in ckpt):  # ComfyUI; all-in-one files: the DiT part
        ckpt = ckpt.renamed(lambda k: k[len(COMFY_PREFIX):] if k.startswith(COMFY_PREFIX) else None)
    else:
        ckpt = ckpt.without_prefix("diffusion_model.", "model.", "module.", "_orig_mod.")
    if "head.modulation" in ckpt:
        return ckpt
    if "scale_shift_table" in ckpt:
        ckpt = ckpt.renamed(lambda k: None if ".norm_added_q." in k else diffusers_to_official(k))
        ckpt.description += " (diffusers layout; tensors named as in the official Wan code)"
        return ckpt
    for component, markers in _OTHER_COMPONENTS:
        key = next((k for k in ckpt if any(m in k for m in markers)), None)
        if key is not None:
            raise CheckpointError(f"{ckpt.description}: this looks like a {component} checkpoint "
                                  f"(tensor {key!r}), not a Wan diffusion model (DiT); pass it to "
                                  f"the {component} loader")
    first = next(iter(ckpt), None)
    raise CheckpointError(f"{ckpt.description}: not a Wan DiT checkpoint: it has no "
                          f"'head.modulation' (official/ComfyUI) or 'scale_shift_table' "
                          f"(diffusers) tensor; first tensor is {first!r}")
