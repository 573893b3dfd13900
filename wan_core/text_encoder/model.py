"""UMT5 encoder (the text encoder of every Wan model) and its prompt -> context wrapper.

Parameter names follow the official ``wan/modules/t5.py`` ``T5Encoder`` so its ``.pth`` loads as is.
Per block::

    x = x + attn(norm1(x), bias = rel_pos_bias_i + key_mask)     # T5 attention: no 1/sqrt(d)
    x = x + fc2(fc1(norm2(x)) * gelu_tanh(gate(norm2(x))))       # gated GELU FFN

with one relative-position-bias table per block (UMT5; T5 v1.1 shares block 0's), and a final
RMSNorm. Computed in the weights' dtype, which the loader keeps to bf16 or fp32: T5 activations
overflow fp16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import RMSNorm
from ..parallel import once


@dataclass(frozen=True)
class UMT5Config:
    vocab_size: int = 256384
    dim: int = 4096
    num_heads: int = 64
    head_dim: int = 64
    ffn_dim: int = 10240
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6


def relative_position_buckets(length: int, num_buckets: int, max_distance: int,
                              device=None) -> torch.Tensor:
    """Bidirectional T5 buckets of ``key - query`` offsets, ``[L, L]`` int64.

    Half the buckets per direction; within a half, offsets below ``half / 2`` get their own
    bucket, larger ones share log-spaced buckets up to ``max_distance`` (then the last one).
    """
    pos = torch.arange(length, device=device)
    offset = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    exact = half // 2
    distance = offset.abs()
    log_ratio = torch.log(distance.clamp(min=exact).float() / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return (offset > 0).long() * half + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """Learned per-head bias for each bucket: ``[L, L]`` buckets -> ``[1, H, L, L]``."""

    def __init__(self, num_buckets: int, num_heads: int):
        super().__init__()
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, buckets: torch.Tensor) -> torch.Tensor:
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


class T5Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, num_heads * head_dim, bias=False)
        self.k = nn.Linear(dim, num_heads * head_dim, bias=False)
        self.v = nn.Linear(dim, num_heads * head_dim, bias=False)
        self.o = nn.Linear(num_heads * head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x ``[B, L, C]``, bias ``[B, H, L, L]`` (position bias + key mask) -> ``[B, L, C]``."""
        q, k, v = (proj(x).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        return self.o(out.transpose(1, 2).flatten(2))


class T5FeedForward(nn.Module):
    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, ffn_dim, bias=False), nn.GELU(approximate="tanh"))
        self.fc1 = nn.Linear(dim, ffn_dim, bias=False)
        self.fc2 = nn.Linear(ffn_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x) * self.gate(x))


class UMT5Block(nn.Module):
    def __init__(self, cfg: UMT5Config):
        super().__init__()
        self.norm1 = RMSNorm(cfg.dim, eps=cfg.eps)
        self.attn = T5Attention(cfg.dim, cfg.num_heads, cfg.head_dim)
        self.norm2 = RMSNorm(cfg.dim, eps=cfg.eps)
        self.ffn = T5FeedForward(cfg.dim, cfg.ffn_dim)
        self.pos_embedding = RelativePositionBias(cfg.num_buckets, cfg.num_heads)

    def forward(self, x: torch.Tensor, buckets: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x ``[B, L, C]``; buckets ``[L, L]``; key_mask ``[B, 1, 1, L]`` (0 or -inf)."""
        x = x + self.attn(self.norm1(x), self.pos_embedding(buckets) + key_mask)
        return x + self.ffn(self.norm2(x))


class UMT5Encoder(nn.Module):
    """Token ids ``[B, L]`` + mask ``[B, L]`` (True for real tokens) -> hidden states ``[B, L, C]``."""

    def __init__(self, cfg: UMT5Config):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(UMT5Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.dim, eps=cfg.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids)
        buckets = relative_position_buckets(ids.shape[1], self.cfg.num_buckets,
                                            self.cfg.max_distance, device=ids.device)
        key_mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
        key_mask = key_mask.masked_fill(~mask, float("-inf"))[:, None, None, :]
        for block in self.blocks:
            x = block(x, buckets, key_mask)
        return self.norm(x)


class TextEncoder(nn.Module):
    """Prompts -> Wan's text context ``[B, 512, C]``.

    Each prompt is cleaned, tokenized with a final EOS and encoded at its true length (the batch
    runs at its longest prompt with padded keys masked), then zero-padded to ``text_len`` rows,
    as the official ``T5EncoderModel`` + ``WanModel`` do. Output dtype: the encoder's (bf16 or
    fp32).
    """

    def __init__(self, model: UMT5Encoder, tokenizer, text_len: int = 512):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.text_len = text_len

    @property
    def dtype(self) -> torch.dtype:
        return self.model.token_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.token_embedding.weight.device

    @once
    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        if (not isinstance(prompts, (list, tuple)) or not prompts
                or not all(isinstance(p, str) for p in prompts)):
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}")
        ids = self.tokenizer(list(prompts), max_length=self.text_len)
        lengths = torch.tensor([len(i) for i in ids])
        tokens = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
        for row, i in zip(tokens, ids):
            row[:len(i)] = torch.tensor(i)
        mask = torch.arange(tokens.shape[1]) < lengths[:, None]
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        context = self.model(tokens, mask) * mask[..., None]
        return F.pad(context, (0, 0, 0, self.text_len - tokens.shape[1]))
