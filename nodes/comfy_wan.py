"""WanRT's fast path for ComfyUI's own Wan model (``comfy.ldm.wan.model.WanModel``), inside ComfyUI.

:func:`accelerate` takes ComfyUI's ``ModelPatcher`` and returns a clone whose transformer blocks
run through WanRT's fused kernels (norm + modulate, gated residual, RMSNorm, RoPE), its attention
backends and compile modes. Everything else stays ComfyUI's:

- Each block's ``forward`` is replaced by an object patch (``add_object_patch``) that ComfyUI
  applies and removes with the model. The patch calls the block's own submodules for every
  projection and the FFN, so these stay ComfyUI's layers: LoRA and other weight patches, fp8 /
  quantised weights, low-VRAM offload and casting work as before. Norm weights are taken the
  way ComfyUI's ops take them (``comfy.ops.cast_bias_weight``).
- Embeddings, head, model sampling (``ModelSamplingSD3`` shift), wrappers, ``patches_replace``
  block replacements and ``double_block`` patches run ComfyUI's own code.
- A call with a patch the fast path does not implement (``attn1_patch`` / ``attn2_patch``) runs
  the block's own forward; an ``optimized_attention_override`` set by another node keeps
  ComfyUI's attention (with the fused kernels around it).
- Compile ``blocks`` compiles the block computation once (one graph shared by all blocks);
  ``full`` uses ComfyUI's ``set_torch_compile_wrapper`` on the whole diffusion model. Either way
  the clone is a plain (non-dynamic-VRAM) ModelPatcher, as ComfyUI's own TorchCompileModel makes
  it: ComfyUI reloads such a model from its file when the input streamed its weights.

Imported only inside ComfyUI (by ``accelerate.py``, when the node runs).
"""

from __future__ import annotations

import copy
import functools

import comfy.ldm.wan.model
import comfy.model_management
import comfy.ops
import torch
from comfy.ldm.modules.attention import optimized_attention
from torch import nn

from .. import kernels
from ..wan_core.attention import get_backend
from ..wan_core.runtime import AttentionOptions, RuntimeOptions


def accelerate(patcher, compile_mode: str, attention: AttentionOptions):
    """A clone of ``patcher`` (ComfyUI's MODEL holding a Wan model) whose plain Wan blocks run
    WanRT's fast path with the attention plan ``attention``; a TypeError if the diffusion model
    has none."""
    compiled = compile_mode != "off" and kernels.current_platform().compile
    model = patcher.clone(disable_dynamic=True) if compiled else patcher.clone()
    blocks = getattr(model.get_model_object("diffusion_model"), "blocks", ())
    indices = [i for i, block in enumerate(blocks)
               if type(block) is comfy.ldm.wan.model.WanAttentionBlock]
    if not indices:
        name = type(model.get_model_object("diffusion_model")).__name__
        raise TypeError(f"WanRT Accelerate: the model is a {name} without Wan transformer "
                        f"blocks; connect a Wan 2.1 / 2.2 model (UNETLoader)")
    run = compiled_block if compiled and compile_mode == "blocks" else run_block
    impl = RuntimeOptions.from_env().kernel_impl()  # WANRT_DISABLE_FUSED_KERNELS reaches here
    for i in indices:
        model.add_object_patch(f"diffusion_model.blocks.{i}.forward",
                               AcceleratedBlock(blocks[i], i, run, attention, impl))
    if compiled and compile_mode == "full":
        from comfy_api.torch_helpers import set_torch_compile_wrapper
        set_torch_compile_wrapper(model, backend="inductor",
                                  options={"guard_filter_fn": _skip_transformer_options})
    return model


def _skip_transformer_options(guard_entries):
    """ComfyUI's own guard filter for whole-model compile: no guards on ``transformer_options``."""
    return ["transformer_options" not in entry.name for entry in guard_entries]


class AcceleratedBlock:
    """Stands in for ``WanAttentionBlock.forward`` (same arguments) of block ``index``; its
    self-attention backend is the one ``plan`` gives that block at the current step, its
    kernels run ``impl`` (``RuntimeOptions.kernel_impl``)."""

    stack = None  # a step cache's CachedStack (``comfy_step_cache``) when one is attached

    def __init__(self, block: nn.Module, index: int, run, plan: AttentionOptions,
                 impl: str | None = None):
        self.block, self.index, self.run, self.plan, self.impl = block, index, run, plan, impl
        self.cross_attend = get_backend(plan.cross_backend)

    def in_stack(self, stack) -> AcceleratedBlock:
        """This block, its stack run by the step cache ``stack``."""
        block = copy.copy(self)
        block.stack = stack
        return block

    def __call__(self, x, e, freqs, context, context_img_len=257, transformer_options={}):
        if self.stack is not None:
            return self.stack.block(self, x, e, freqs, context, context_img_len,
                                    transformer_options)
        return self.compute(x, e, freqs, context, context_img_len, transformer_options)

    def compute(self, x, e, freqs, context, context_img_len=257, transformer_options={}):
        """The block's output through WanRT's path (ComfyUI's own forward for patches it does
        not implement)."""
        patches = transformer_options.get("patches", {})
        if "attn1_patch" in patches or "attn2_patch" in patches:
            return type(self.block).forward(self.block, x, e, freqs, context, context_img_len,
                                            transformer_options)
        x = x.contiguous()  # as ComfyUI's block; one stride for every block (one compiled graph)
        rope = rope_cos_sin(freqs)
        if "optimized_attention_override" in transformer_options:
            attend = functools.partial(_comfy_attention, transformer_options=transformer_options)
            return run_block(self.block, x, e, rope, context, context_img_len, attend, attend,
                             self.impl)
        step = sampling_step(transformer_options) if self.plan.varies_by_step else (None, None)
        attend = get_backend(self.plan.backend_for(self.index, *step))
        return self.run(self.block, x, e, rope, context, context_img_len, attend,
                        self.cross_attend, self.impl)


_step_memo: list = []  # [(sigmas, (step, steps))]: the last forward's, shared by its blocks


def sampling_step(transformer_options: dict) -> tuple[int | None, int | None]:
    """``(step, steps)`` of the sampler call running: the current σ's place in ComfyUI's
    ``sample_sigmas`` (each KSampler / KSamplerAdvanced call counts its own steps); ``(None,
    None)`` outside sampling. Read off the device once per forward, not once per block."""
    schedule, sigma = transformer_options.get("sample_sigmas"), transformer_options.get("sigmas")
    if schedule is None or sigma is None:
        return None, None
    if not _step_memo or _step_memo[0][0] is not sigma:
        _step_memo[:] = [(sigma, (int((schedule - sigma.flatten()[0]).abs().argmin()),
                                  len(schedule) - 1))]
    return _step_memo[0][1]


def _comfy_attention(q, k, v, transformer_options):
    """ComfyUI's ``optimized_attention`` (with its override) on ``[B, L, H, D]`` tensors."""
    heads = q.shape[2]
    out = optimized_attention(q.flatten(2), k.flatten(2), v.flatten(2), heads=heads,
                              transformer_options=transformer_options)
    return out.unflatten(2, (heads, -1))


_rope_cache: list = []  # [(freqs, (cos, sin))]: the last forward's table, shared by its blocks


def rope_cos_sin(freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI's RoPE rotation matrices ``[B', L, 1, D/2, 2, 2]`` (``[[cos, -sin], [sin, cos]]``)
    as the kernels' ``cos, sin``: ``[L, D/2]`` (``[B', L, D/2]`` if B' > 1), fp32, contiguous."""
    if not torch.compiler.is_compiling() and _rope_cache and _rope_cache[0][0] is freqs:
        return _rope_cache[0][1]
    table = freqs[:, :, 0].float()
    if table.shape[0] == 1:
        table = table[0]
    rope = table[..., 0, 0].contiguous(), table[..., 1, 0].contiguous()
    if not torch.compiler.is_compiling():
        _rope_cache[:] = [(freqs, rope)]
    return rope


def run_block(block, x, e, rope, context, context_img_len, attend, cross_attend, impl=None):
    """``WanAttentionBlock.forward`` on WanRT's kernels; ``x: [B, L, C]`` contiguous,
    ``e: [B, 6, C]`` or ``[B, F, 6, C]`` (per-frame / per-token timesteps), ``rope``: ``cos, sin``
    of :func:`rope_cos_sin`, ``attend(q, k, v)`` / ``cross_attend`` on ``[B, L, H, D]``, ``impl``
    the kernels' (``kernels.ops``: None lets the platform choose, "torch")."""
    shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = _modulation(block, e, x)
    h = kernels.norm_modulate(x, shift_sa, scale_sa, eps=block.norm1.eps, impl=impl)
    y = _self_attention(block.self_attn, h, rope, attend, impl)
    if isinstance(block.norm3, nn.Identity):
        x = h = kernels.gated_residual(x, y, gate_sa, impl=impl)
    else:
        weight, bias = _norm_weights(block.norm3, x)
        h, x = kernels.gated_residual_norm_modulate(x, y, gate_sa, None, None, eps=block.norm3.eps,
                                                    weight=weight, bias=bias, impl=impl)
    y = _cross_attention(block.cross_attn, h, context, context_img_len, cross_attend, impl)
    h, x = kernels.gated_residual_norm_modulate(x, y, None, shift_ff, scale_ff,
                                                eps=block.norm2.eps, impl=impl)
    return kernels.gated_residual(x, block.ffn(h), gate_ff, impl=impl)


@functools.cache
def _compiled_run_block():
    return torch.compile(run_block)


def compiled_block(*args):
    """:func:`run_block` compiled once per process: all blocks share its graph."""
    return _compiled_run_block()(*args)


def _modulation(block, e, x):
    """The six modulation tensors (block table + ``e``, in x's dtype as ComfyUI adds them) in a
    layout the kernels take: ``[B, 1, C]``, ``[B, F, 1, C]`` or ``[B, L, C]``."""
    table = comfy.model_management.cast_to(block.modulation, dtype=x.dtype, device=x.device)
    if e.ndim < 4:
        return (table + e).chunk(6, dim=1)
    parts = (table.unsqueeze(0) + e).unbind(2)
    if x.shape[1] % e.shape[1] == 0:
        return tuple(part.unsqueeze(2) for part in parts)
    return tuple(comfy.ldm.wan.model.repeat_e(part, x) for part in parts)


def _norm_weights(norm: nn.Module, x: torch.Tensor):
    """``(weight, bias)`` of a ComfyUI norm layer as its own forward would use them: cast to
    x's device and dtype with weight patches applied where ComfyUI casts, else as stored."""
    if norm.comfy_cast_weights or norm.weight_function or norm.bias_function:
        return comfy.ops.cast_bias_weight(norm, x)
    return norm.weight, getattr(norm, "bias", None)


def _rms(norm: nn.Module, x: torch.Tensor, impl: str | None) -> torch.Tensor:
    if isinstance(norm, nn.Identity):
        return x
    weight, _ = _norm_weights(norm, x)
    eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
    return kernels.rms_norm(x, weight, eps=eps, impl=impl)


def _self_attention(attn, x, rope, attend, impl):
    """``WanSelfAttention``: q/k RMSNorm across heads, RoPE, attention, output projection."""
    heads = attn.num_heads

    def rotated(norm, projected):
        return kernels.rotary_embedding(_rms(norm, projected, impl).unflatten(2, (heads, -1)),
                                        *rope, impl=impl)
    q, k = rotated(attn.norm_q, attn.q(x)), rotated(attn.norm_k, attn.k(x))
    out = attend(q, k, attn.v(x).unflatten(2, (heads, -1)))
    return attn.o(out.flatten(2))


def _cross_attention(attn, x, context, context_img_len, attend, impl):
    """``WanT2VCrossAttention``, or ``WanI2VCrossAttention`` (CLIP image tokens first in
    ``context``, attended through ``k_img`` / ``v_img``, the two results summed)."""
    heads = attn.num_heads

    def heads_of(norm, projected):
        return _rms(norm, projected, impl).unflatten(2, (heads, -1))
    q = heads_of(attn.norm_q, attn.q(x))
    image = None
    if hasattr(attn, "k_img"):
        context_img, context = context[:, :context_img_len], context[:, context_img_len:]
        image = attend(q, heads_of(attn.norm_k_img, attn.k_img(context_img)),
                       attn.v_img(context_img).unflatten(2, (heads, -1)))
    out = attend(q, heads_of(attn.norm_k, attn.k(context)),
                 attn.v(context).unflatten(2, (heads, -1)))
    if image is not None:
        out = out + image
    return attn.o(out.flatten(2))
