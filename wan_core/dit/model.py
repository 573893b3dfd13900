"""The Wan DiT (``WanModel`` of Wan 2.1 / 2.2) built from the dispatching layers.

Parameter names are the official ones, so official and ComfyUI files load as they are. Per block,
with ``(shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff) = modulation + e0``::

    x = x + gate_sa * self_attn(LN1(x) * (1 + scale_sa) + shift_sa)
    x = x + cross_attn(LN3_affine(x), context)
    x = x + gate_ff * ffn(LN2(x) * (1 + scale_ff) + shift_ff)

Dtypes: weights and the residual stream ``[B, L, C]`` (contiguous, in the model dtype); the
timestep path (sinusoid, ``time_embedding``, ``time_projection``, the modulation tables) in fp32.
:meth:`WanModel.fuse_projections` stacks the projections that read one input (self-attention
q/k/v, cross-attention k/v) into one GEMM each.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ... import kernels
from ...kernels.fp8 import fp8_linear
from ..attention import attention
from ..checkpoint import FP8_DTYPES
from ..layers import (GatedResidual, GatedResidualNormModulate, NormModulate, RMSNorm,
                      RotaryEmbedding)
from ..parallel import SequenceParallel
from ..runtime import AttentionOptions
from .config import DiTConfig


def keeps_fp32(name: str) -> bool:
    """Parameters that stay fp32 whatever the model dtype: the timestep path."""
    return name.startswith(("time_embedding.", "time_projection.")) or name.endswith("modulation")


def dequantise(weight: torch.Tensor, scale: torch.Tensor | None,
               dtype: torch.dtype) -> torch.Tensor:
    """An fp8 ``weight`` in ``dtype``: ``weight * scale``, the scale per tensor (``[]``) or per
    output row (``[out]``, ``[out, 1]``); no scale means 1."""
    w = weight.to(dtype)
    if scale is None:
        return w
    s = scale.to(dtype)
    return w * (s if s.numel() == 1 else s.reshape(-1, *[1] * (w.dim() - 1)))


class Linear(nn.Linear):
    """``nn.Linear`` whose weight may stay fp8 in memory (with an optional ``weight_scale``),
    dequantised to the input dtype at matmul time, or, with ``fp8_matmul`` set ("row" /
    "tensor" activation scales) where the device has fp8 GEMMs, multiplied in fp8."""

    weight_scale: torch.Tensor | None = None
    fp8_matmul: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, scale = self.weight, self.weight_scale
        rowwise = self.fp8_matmul == "row" or (scale is not None and scale.numel() > 1)
        if w.dtype == torch.float8_e4m3fn and self.fp8_matmul and kernels.fp8_matmul_supported(
                x.device.type, x.device.index, rowwise):
            return fp8_linear(x, w, scale, self.bias, self.fp8_matmul)
        if w.dtype in FP8_DTYPES:
            w = dequantise(w, self.weight_scale, x.dtype)
        return F.linear(x, w, self.bias)


class LoRALinear(Linear):
    """A :class:`Linear` plus a low-rank path kept apart from its (possibly fp8) weight:
    ``linear(x) + (x @ lora_down.T) @ lora_up.T``; ``lora_down: [R, in]``, ``lora_up: [out, R]``
    (the LoRAs' strength and scale folded in), in the compute dtype. Several LoRAs stack along R.
    Built by ``wan_core.lora.apply_lora(..., mode="runtime")``."""

    lora_down: torch.Tensor
    lora_up: torch.Tensor

    @classmethod
    def wrap(cls, linear: Linear, down: torch.Tensor, up: torch.Tensor) -> LoRALinear:
        """A LoRALinear sharing ``linear``'s weight, bias and scale, its low-rank path
        ``down``/``up`` appended to the one ``linear`` already has."""
        if isinstance(linear, LoRALinear):
            down, up = torch.cat([linear.lora_down, down]), torch.cat([linear.lora_up, up], 1)
        with torch.device("meta"):
            new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        new.weight, new.bias, new.weight_scale = linear.weight, linear.bias, linear.weight_scale
        new.register_buffer("lora_down", down)
        new.register_buffer("lora_up", up)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + F.linear(F.linear(x, self.lora_down), self.lora_up)


def weight_sharing_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree that shares every tensor with it (parameters, buffers,
    tensor attributes such as fp8 ``weight_scale``): modules of the copy can be changed or
    replaced without touching ``model``."""
    tensors = itertools.chain(model.parameters(), model.buffers(),
                              (v for m in model.modules() for v in vars(m).values()
                               if isinstance(v, torch.Tensor)))
    return copy.deepcopy(model, {id(t): t for t in tensors})


def row_scale(linear: Linear) -> torch.Tensor:
    """The fp8 ``weight_scale`` of ``linear`` as one fp32 factor per output row ``[out]``."""
    rows = linear.weight.shape[0]
    if linear.weight_scale is None:
        return torch.ones(rows, device=linear.weight.device)
    return linear.weight_scale.float().reshape(-1).expand(rows)


@torch.no_grad()
def fuse_linears(linears: list[Linear]) -> Linear | None:
    """One Linear computing ``cat([l(x) for l in linears], -1)``: weights (and biases, fp8
    scales as per-row scales) stacked by rows. None where the weights differ in dtype, device or
    input width, or only some have a bias, or any carries a runtime LoRA."""
    weights = [linear.weight for linear in linears]
    if (len({(w.dtype, w.device, w.shape[1]) for w in weights}) > 1
            or len({linear.bias is None for linear in linears}) > 1
            or any(isinstance(linear, LoRALinear) for linear in linears)):
        return None
    with torch.device("meta"):
        fused = Linear(weights[0].shape[1], sum(w.shape[0] for w in weights),
                       bias=linears[0].bias is not None)
    grad = weights[0].requires_grad
    fused.weight = nn.Parameter(torch.cat(weights), requires_grad=grad)
    if fused.bias is not None:
        fused.bias = nn.Parameter(torch.cat([linear.bias for linear in linears]),
                                  requires_grad=grad)
    if any(linear.weight_scale is not None for linear in linears):
        fused.weight_scale = torch.cat([row_scale(linear) for linear in linears])
    return fused


class PatchEmbedding(nn.Module):
    """``Conv3d(in_dim, dim, kernel=stride=patch)`` computed as a matmul over patches, so the
    output is the contiguous token sequence ``[B, L, dim]`` (tokens in row-major f, h, w order).

    The bias is added on its own (not inside ``F.linear``) so that the output is a fresh tensor,
    not a view of a 2-D GEMM result: block 0 then gets the same kind of input as every other
    block, and a regionally compiled block keeps one graph for all blocks under dynamic shapes
    (Dynamo guards on the base of a view input).
    """

    def __init__(self, in_dim: int, dim: int, patch_size: tuple[int, int, int]):
        super().__init__()
        self.patch_size = patch_size
        self.weight = nn.Parameter(torch.empty(dim, in_dim, *patch_size))
        self.bias = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        pt, ph, pw = self.patch_size
        patches = x.to(self.bias.dtype).view(b, c, f // pt, pt, h // ph, ph, w // pw, pw)
        patches = patches.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, -1, c * pt * ph * pw)
        return patches @ self.weight.flatten(1).T + self.bias


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``[N] -> [N, dim]`` fp32: ``cat(cos(t w), sin(t w))``, ``w_k = 10000^(-k / (dim/2))``,
    evaluated in float64 (float32 on devices without it)."""
    dtype = torch.float64 if kernels.float64_supported(t.device) else torch.float32
    half = dim // 2
    freqs = torch.pow(10000, -torch.arange(half, dtype=dtype, device=t.device) / half)
    angles = torch.outer(t.to(dtype), freqs)
    return torch.cat([angles.cos(), angles.sin()], dim=1).float()


def rope_table(grid: tuple[int, int, int], head_dim: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``kernels.wan_rope_cos_sin`` for a token grid: cached per grid and device when eager,
    computed in the graph when traced by ``torch.compile`` (whole-model compile)."""
    if torch.compiler.is_compiling():
        return kernels.wan_rope_cos_sin(grid, head_dim, device=device)
    return _cached_rope_table(grid, head_dim, device)


@functools.lru_cache(maxsize=8)
def _cached_rope_table(grid, head_dim, device):
    with torch.inference_mode(False):  # ordinary tensors, usable outside inference mode too
        return kernels.wan_rope_cos_sin(grid, head_dim, device=device)


class _Attention(nn.Module):
    """q, k, v, o projections with RMSNorm on q and k across all heads.

    :meth:`fuse` stacks projections of one input into a single Linear under ``fused``
    (``fused.q_k_v``); :meth:`project` computes them either way.
    """

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.backend = "sdpa"
        self.q, self.k, self.v, self.o = (Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)
        self.fused = nn.ModuleDict()

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, C] -> [B, L, H, C/H]``."""
        return x.unflatten(2, (self.num_heads, -1))

    def project(self, x: torch.Tensor, *names: str) -> tuple[torch.Tensor, ...]:
        """The projections ``names`` of ``x``, each ``[B, L, C]``; one GEMM once fused."""
        key = "_".join(names)
        if key in self.fused:
            return self.fused[key](x).chunk(len(names), dim=-1)
        return tuple(getattr(self, name)(x) for name in names)

    def fuse(self, *names: str) -> None:
        """Replace the Linears ``names`` by one with their weights stacked (kept apart where
        :func:`fuse_linears` cannot stack them)."""
        fused = fuse_linears([getattr(self, name) for name in names])
        if fused is not None:
            self.fused["_".join(names)] = fused
            for name in names:
                delattr(self, name)


class SelfAttention(_Attention):
    """Self-attention with 3-D RoPE; over a token shard, through ``sequence_parallel`` (a
    :class:`~wan_core.parallel.SequenceParallel`), when the model is split over ranks."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__(dim, num_heads, eps)
        self.rope = RotaryEmbedding()
        self.sequence_parallel: SequenceParallel | None = None

    def fuse_projections(self) -> None:
        self.fuse("q", "k", "v")

    def forward(self, x, cos, sin):
        """``x: [B, L, C]``, rotary table ``cos, sin: [L, C/H/2]`` -> ``[B, L, C]``."""
        q, k, v = self.project(x, "q", "k", "v")
        q = self.rope(self.heads(self.norm_q(q)), cos, sin)
        k = self.rope(self.heads(self.norm_k(k)), cos, sin)
        if self.sequence_parallel is None:
            out = attention(q, k, self.heads(v), backend=self.backend)
        else:
            out = self.sequence_parallel.attention(q, k, self.heads(v), backend=self.backend)
        return self.o(out.flatten(2))


class CrossAttention(_Attention):
    """Attention to the text tokens; with ``image=True`` (Wan 2.1 I2V / FLF2V) also to the CLIP
    image tokens through ``k_img`` / ``v_img``, the two results summed before ``o``."""

    def __init__(self, dim: int, num_heads: int, eps: float, image: bool):
        super().__init__(dim, num_heads, eps)
        if image:
            self.k_img, self.v_img = Linear(dim, dim), Linear(dim, dim)
            self.norm_k_img = RMSNorm(dim, eps)
        self.image = image

    def fuse_projections(self) -> None:
        self.fuse("k", "v")
        if self.image:
            self.fuse("k_img", "v_img")

    def forward(self, x, context, context_img=None):
        """``x: [B, L, C]``, ``context: [B, L_text, C]``, ``context_img: [B, N, C]``."""
        q = self.heads(self.norm_q(self.q(x)))
        k, v = self.project(context, "k", "v")
        out = attention(q, self.heads(self.norm_k(k)), self.heads(v), backend=self.backend)
        if context_img is not None:
            k_img, v_img = self.project(context_img, "k_img", "v_img")
            out = out + attention(q, self.heads(self.norm_k_img(k_img)), self.heads(v_img),
                                  backend=self.backend)
        return self.o(out.flatten(2))


class WanBlock(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        dim, eps = config.dim, config.eps
        self.norm1 = NormModulate(dim, eps)
        self.self_attn = SelfAttention(dim, config.num_heads, eps)
        self.norm3 = GatedResidualNormModulate(dim, eps, affine=True)
        self.cross_attn = CrossAttention(dim, config.num_heads, eps, image=bool(config.image_dim))
        self.norm2 = GatedResidualNormModulate(dim, eps)
        self.ffn = nn.Sequential(Linear(dim, config.ffn_dim), nn.GELU(approximate="tanh"),
                                 Linear(config.ffn_dim, dim))
        self.ffn_residual = GatedResidual()
        self.modulation = nn.Parameter(torch.empty(1, 6, dim))

    def forward(self, x, e0, context, context_img, rope):
        """``x: [B, L, C]``; ``e0: [B, 6, S, C]`` fp32 with S = 1, or L for per-token timesteps."""
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (
            self.modulation.unsqueeze(2) + e0).unbind(1)
        h = self.norm1(x, shift_sa, scale_sa)
        h, x = self.norm3(x, self.self_attn(h, *rope), gate_sa)
        h, x = self.norm2(x, self.cross_attn(h, context, context_img), None, shift_ff, scale_ff)
        return self.ffn_residual(x, self.ffn(h), gate_ff)


class Head(nn.Module):
    """``LN(x) * (1 + scale) + shift`` (from the time embedding), then the projection to
    ``[B, L, prod(patch) * out_dim]``."""

    def __init__(self, dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float):
        super().__init__()
        self.norm = NormModulate(dim, eps)
        self.head = Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.empty(1, 2, dim))

    def forward(self, x, e):
        """``x: [B, L, C]``, ``e: [B, S, C]`` fp32 time embedding (S = 1 or L)."""
        shift, scale = (self.modulation.unsqueeze(2) + e.unsqueeze(1)).unbind(1)
        return self.head(self.norm(x, shift, scale))


class ImageEmbedding(nn.Module):
    """CLIP tokens ``[B, N, image_dim] -> [B, N, dim]`` (LN, Linear, GELU, Linear, LN). FLF2V first
    adds a learned position embedding over the first||last image tokens (``N = image_tokens``)."""

    def __init__(self, image_dim: int, dim: int, image_tokens: int | None):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(image_dim), Linear(image_dim, image_dim), nn.GELU(),
                                  Linear(image_dim, dim), nn.LayerNorm(dim))
        self.emb_pos = (nn.Parameter(torch.empty(1, image_tokens, image_dim)) if image_tokens
                        else None)

    def forward(self, clip_fea):
        if self.emb_pos is not None:
            clip_fea = clip_fea + self.emb_pos
        return self.proj(clip_fea)


class WanModel(nn.Module):
    """Wan DiT. ``model(x, t, context, clip_fea=, y=)`` predicts the flow velocity.

    Built from a :class:`DiTConfig`; weights come from :func:`wan_core.load_dit` (or
    :func:`init_random_` for tests and benchmarks). Do not ``.to(dtype)`` the whole module: the
    timestep path must stay fp32 (see :func:`keeps_fp32`).

    ``block_hook`` (None: run every block): ``hook(x, e, e0, blocks) -> x`` replaces the block
    loop, with ``x: [B, L, C]`` the embedded tokens, ``e: [B, S, C]`` / ``e0: [B, 6, S, C]`` the
    time embedding and its projection, and ``blocks(x, start=0, stop=None)`` running blocks
    ``start:stop``; step caches (``wan_core.step_cache``) decide there what to run.

    ``sequence_parallel`` (see :meth:`set_sequence_parallel`): the blocks and the head run on
    this rank's shard of the tokens (``x``, the RoPE table and per-token timesteps sharded after
    the patch embedding), and the outputs are gathered before unpatchifying.
    """

    block_hook = None
    sequence_parallel: SequenceParallel | None = None

    def __init__(self, config: DiTConfig, *, dtype: torch.dtype = torch.float32,
                 attention_backend: str | AttentionOptions = "auto"):
        super().__init__()
        self.config = config
        dim = config.dim
        self.patch_embedding = PatchEmbedding(config.in_dim, dim, config.patch_size)
        self.text_embedding = nn.Sequential(Linear(config.text_dim, dim),
                                            nn.GELU(approximate="tanh"), Linear(dim, dim))
        self.time_embedding = nn.Sequential(Linear(config.freq_dim, dim), nn.SiLU(),
                                            Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(WanBlock(config) for _ in range(config.num_layers))
        self.head = Head(dim, config.out_dim, config.patch_size, config.eps)
        self.img_emb = (ImageEmbedding(config.image_dim, dim, config.image_tokens)
                        if config.image_dim else None)
        for name, p in self.named_parameters():
            p.data = p.data.to(torch.float32 if keeps_fp32(name) else dtype)
        self.attention_options = AttentionOptions()
        self.set_attention(attention_backend if isinstance(attention_backend, AttentionOptions)
                           else AttentionOptions(backend=attention_backend))
        self.block_swap = None  # a wan_core.block_swap.BlockSwap streams blocks from the CPU

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (weights and residual stream)."""
        return self.patch_embedding.bias.dtype

    def set_attention_backend(self, name: str) -> None:
        """Route every attention of the model to backend ``name`` (see ``wan_core.attention``;
        cross-attention stays dense for an 8-bit backend, see :class:`AttentionOptions`)."""
        self.set_attention(AttentionOptions(backend=name))

    def set_attention(self, options: AttentionOptions) -> None:
        """Use the attention plan ``options``; outside sampling no step is excluded."""
        self.attention_options = options
        self.set_sampling_step(None, None)

    def set_sampling_step(self, step: int | None, steps: int | None) -> None:
        """Announce sampling step ``step`` (from 0) of ``steps``: each block's self-attention
        takes the backend the attention plan gives it for that step. Under ``torch.compile`` a
        change of backend is a guard miss: one recompile per distinct plan, then cached."""
        for i, block in enumerate(self.blocks):
            block.self_attn.backend = self.attention_options.backend_for(i, step, steps)
            block.cross_attn.backend = self.attention_options.cross_backend

    def set_sequence_parallel(self, sequence_parallel: SequenceParallel | None) -> WanModel:
        """Split the tokens of every forward over the ranks of ``sequence_parallel`` (None: one
        rank). Ulysses needs the rank count to divide the head count."""
        if sequence_parallel is not None and sequence_parallel.kind == "ulysses" \
                and self.config.num_heads % sequence_parallel.size:
            raise ValueError(f"Ulysses splits the {self.config.num_heads} heads of this "
                             f"{self.config.variant} model over {sequence_parallel.size} ranks: "
                             f"{sequence_parallel.size} does not divide {self.config.num_heads}; "
                             f"use ring attention")
        self.sequence_parallel = sequence_parallel
        for block in self.blocks:
            block.self_attn.sequence_parallel = sequence_parallel
        return self

    def use_fp8_matmul(self, granularity: str | None = "row") -> WanModel:
        """Run the transformer blocks' fp8 (e4m3) Linears as fp8 GEMMs, activations quantised
        per ``granularity`` ("row" / "tensor"), on devices that have them (the platform's
        ``fp8_matmul``); elsewhere, and for ``None``, they dequantise. Opt-in: the activation
        rounding costs accuracy (see ``kernels.fp8``)."""
        for module in self.blocks.modules():
            if isinstance(module, Linear):
                module.fp8_matmul = granularity
        return self

    def fuse_projections(self) -> WanModel:
        """Stack q/k/v of every self-attention and k/v of every cross-attention into one Linear
        each (same outputs, fewer and larger GEMMs). Call after the weights are loaded: the
        fused model's parameter names are no longer the official ones."""
        for module in self.modules():
            if isinstance(module, _Attention):
                module.fuse_projections()
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, *,
                clip_fea: torch.Tensor | None = None,
                y: torch.Tensor | None = None) -> torch.Tensor:
        """Flow velocity ``[B, out_dim, F, H, W]`` (fp32) for noisy latents ``x``.

        ``x``: ``[B, C_x, F, H, W]``; ``y`` (I2V models): ``[B, in_dim - C_x, F, H, W]``
        (4 mask + 16 image-latent channels), concatenated to ``x`` on channels.
        ``t``: ``[B]``, or ``[B, L]`` one timestep per token (TI2V), ``L = F * H/2 * W/2``.
        ``context``: ``[B, L_text, text_dim]`` text-encoder output (any ``L_text``; Wan pads to
        512).
        ``clip_fea`` (Wan 2.1 I2V / FLF2V): ``[B, N, image_dim]`` CLIP tokens, N = 257 for one
        image; FLF2V takes first||last image tokens, ``[B, 514, 1280]``.
        """
        grid = self._check_inputs(x, y, t, context, clip_fea)
        if y is not None:
            x = torch.cat([x, y.to(x.dtype)], dim=1)
        x = self.patch_embedding(x)

        steps = (t[:, None] if t.dim() == 1 else t).to(x.device)  # [B, S], S = 1 or L
        freq = sinusoidal_embedding(steps.flatten(), self.config.freq_dim).unflatten(0, steps.shape)
        e = self.time_embedding(freq)  # [B, S, C]
        e0 = self.time_projection(e).unflatten(2, (6, -1)).transpose(1, 2)  # [B, 6, S, C]

        context = self.text_embedding(context.to(self.dtype))
        context_img = self.img_emb(clip_fea.to(self.dtype)) if self.img_emb is not None else None
        rope = rope_table(grid, self.config.head_dim, x.device)
        sp = self.sequence_parallel
        if sp is not None:
            sp.begin(x.shape[1])
            x, rope = sp.shard(x, 1), tuple(sp.shard(table, 0) for table in rope)
            if steps.shape[1] > 1:  # per-token timesteps
                e, e0 = sp.shard(e, 1), sp.shard(e0, 2)
        blocks = functools.partial(self.run_blocks, e0=e0, context=context,
                                   context_img=context_img, rope=rope)
        x = blocks(x) if self.block_hook is None else self.block_hook(x, e, e0, blocks)
        x = self.head(x, e)
        if sp is not None:
            x = sp.gather(x)
        return self.unpatchify(x, grid).float()

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None, *, e0,
                   context, context_img, rope) -> torch.Tensor:
        """Blocks ``start:stop`` over the residual stream ``x: [B, L, C]`` (through the block
        swap, when one is set)."""
        stop = len(self.blocks) if stop is None else stop
        if self.block_swap is None:
            for i in range(start, stop):
                x = self.blocks[i](x, e0, context, context_img, rope)
            return x
        # closed on an error too: the swapped block in use gets its parked weights back now,
        # not when the traceback is freed (ComfyUI unloads models right after an OOM)
        with contextlib.closing(self.block_swap(self.blocks, start, stop)) as blocks:
            for block in blocks:
                x = block(x, e0, context, context_img, rope)
        return x

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """``[B, L, pt*ph*pw*C] -> [B, C, F, H, W]``; per token the outputs are ordered
        ``(pt, ph, pw, C)`` with C fastest."""
        f, h, w = grid
        pt, ph, pw = self.config.patch_size
        x = x.view(x.shape[0], f, h, w, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(x.shape[0], -1, f * pt, h * ph, w * pw)

    def _check_inputs(self, x, y, t, context, clip_fea) -> tuple[int, int, int]:
        """ValueError for inputs that do not fit this model; returns the token grid (F, H, W)."""
        cfg = self.config
        if x.dim() != 5:
            raise ValueError(f"x must be [B, C, F, H, W], got shape {tuple(x.shape)}")
        b, c = x.shape[:2]
        if y is not None:
            if y.dim() != 5 or y.shape[0] != b or y.shape[2:] != x.shape[2:]:
                raise ValueError(f"y must be [{b}, C_y, {', '.join(map(str, x.shape[2:]))}] like "
                                 f"x, got shape {tuple(y.shape)}")
            c += y.shape[1]
        if c != cfg.in_dim:
            need = (f"x with {cfg.out_dim} channels and y with {cfg.y_dim} (mask + image latent)"
                    if cfg.y_dim else f"x with {cfg.in_dim} channels")
            raise ValueError(f"this {cfg.variant} model takes {need}; got {c} channels in all")
        grid = tuple(n // p for n, p in zip(x.shape[2:], cfg.patch_size))
        if any(n % p for n, p in zip(x.shape[2:], cfg.patch_size)):
            raise ValueError(f"x frames/height/width {tuple(x.shape[2:])} must be multiples of "
                             f"the patch size {cfg.patch_size}")
        tokens = math.prod(grid)
        if tuple(t.shape) not in ((b,), (b, tokens)):
            raise ValueError(f"t must be [{b}] or, one per token, [{b}, {tokens}]; "
                             f"got shape {tuple(t.shape)}")
        if context.dim() != 3 or context.shape[0] != b or context.shape[2] != cfg.text_dim:
            raise ValueError(f"context must be [{b}, L_text, {cfg.text_dim}], "
                             f"got shape {tuple(context.shape)}")
        if cfg.image_dim is None:
            if clip_fea is not None:
                raise ValueError(f"this {cfg.variant} model has no CLIP image branch; "
                                 f"pass clip_fea=None")
        else:
            n = cfg.image_tokens or "N"
            if (clip_fea is None or clip_fea.dim() != 3 or clip_fea.shape[0] != b
                    or clip_fea.shape[2] != cfg.image_dim
                    or (cfg.image_tokens and clip_fea.shape[1] != cfg.image_tokens)):
                got = None if clip_fea is None else tuple(clip_fea.shape)
                what = " (first||last image tokens)" if cfg.image_tokens else ""
                raise ValueError(f"this {cfg.variant} model needs clip_fea [{b}, {n}, "
                                 f"{cfg.image_dim}]{what}; got {got}")
        return grid


@torch.no_grad()
def init_random_(model: WanModel, seed: int = 0, std: float = 0.02) -> WanModel:
    """Fill ``model`` (materialised, any device) with deterministic random weights for tests and
    benchmarks: ``N(0, std)`` for projections and biases, ``1 + N(0, std)`` for norm scales,
    ``N(0, 1/dim)`` for the modulation tables and the FLF2V position embedding (as the official
    init)."""
    norm_types = (nn.LayerNorm, NormModulate, RMSNorm)
    norm_scales = {id(m.weight) for m in model.modules()
                   if isinstance(m, norm_types) and m.weight is not None}
    device = model.patch_embedding.bias.device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=generator, device=device)
        if name.endswith(("modulation", "emb_pos")):
            noise /= model.config.dim ** 0.5
        elif id(p) in norm_scales:
            noise = 1 + std * noise
        else:
            noise *= std
        p.copy_(noise)
    return model
