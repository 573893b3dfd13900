"""Building blocks shared by the Wan 2.1 and Wan 2.2 VAEs (official module and parameter names).

Videos are ``[B, C, T, H, W]``. Encoding and decoding stream the video through the network in
chunks of frames; every causal 3-D convolution keeps the last input frames of the previous chunk
in a ``cache`` (a dict owned by one encode/decode call, keyed by module) and uses them in place of
its zero padding, so chunked processing equals processing the whole stream at once. Modules also
record in the cache that they have seen their first chunk, which some of them treat specially.

Blocks keep the memory format of their input. On GPUs the VAE runs channels-last (``[B, T, H, W,
C]`` in memory): cuDNN's fast layout, and the per-frame 2-D ops see ``[B·T, C, H, W]`` as a view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def new_empty(like: torch.Tensor, shape) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` with the dtype, device and memory format of ``like``."""
    channels_last = like.dim() == 5 and like.stride(1) == 1 and like.shape[1] > 1
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def frames(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T, H, W]`` → ``[B·T, C, H, W]`` (a view for channels-last input)."""
    return x.transpose(1, 2).flatten(0, 1)


def unframes(x: torch.Tensor, batch: int) -> torch.Tensor:
    """``[B·T, C, H, W]`` → ``[B, C, T, H, W]`` (a view)."""
    return x.unflatten(0, (batch, -1)).transpose(1, 2)


class RMS_norm(nn.Module):
    """``x / ‖x‖₂ · √C · γ`` over the channel dim (``F.normalize`` with eps 1e-12, not
    ``rsqrt(mean + eps)``); ``γ`` is ``[C, 1, 1, 1]`` for videos, ``[C, 1, 1]`` for images."""

    def __init__(self, dim: int, images: bool):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma

    def silu_into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out = SiLU(self(x))``, computed in place in ``out`` (same ops in the same order)."""
        torch.div(x, x.norm(2, dim=1, keepdim=True).clamp_min_(1e-12), out=out)
        return F.silu(out.mul_(self.scale).mul_(self.gamma), inplace=True)


class CausalConv3d(nn.Conv3d):
    """``nn.Conv3d`` that is causal in time: the ``2·p_t`` temporal padding frames all go in front
    of the first chunk, and later chunks are preceded by the previous chunk's last frames.

    The input of a chunk is assembled once in a ``[B, C, history + T, H, W]`` buffer (spatial
    padding stays inside the convolution); with ``pre`` (an :class:`RMS_norm`), ``SiLU(pre(x))``
    is written straight into that buffer, so the activation is never copied. 1×1×1 convs are
    plain convs; temporal ones need the ``cache``.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size, stride=1, padding=0):
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        super().__init__(in_dim, out_dim, (kt, kh, kw), stride, padding=(0, ph, pw))
        self.front_pad = 2 * pt                         # zero frames before the first chunk
        self.context = kt - self.stride[0]              # frames carried over between chunks

    def forward(self, x: torch.Tensor, cache: dict | None = None,
                pre: RMS_norm | None = None) -> torch.Tensor:
        """``x [B, C_in, T, H, W]`` → ``[B, C_out, T', H', W']``."""
        if self.kernel_size[0] == 1:
            return super().forward(x)
        history = cache.get(self)
        p = self.front_pad if history is None else history.shape[2]
        b, c, t, h, w = x.shape
        buf = new_empty(x, (b, c, p + t, h, w))
        if history is None:
            buf[:, :, :p].zero_()
        else:
            buf[:, :, :p].copy_(history)
        if pre is None:
            buf[:, :, p:].copy_(x)
        else:
            pre.silu_into(x, out=buf[:, :, p:])
        cache[self] = buf[:, :, buf.shape[2] - self.context:].clone()
        return super().forward(buf)


class ResidualBlock(nn.Module):
    """``x → conv(SiLU(norm(conv(SiLU(norm(x)))))) + shortcut(x)``; 1×1×1 shortcut conv when the
    width changes. ``residual`` keeps the official layout (indices 0, 2, 3, 6 hold weights)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.residual = nn.Sequential(
            RMS_norm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMS_norm(out_dim, images=False), nn.SiLU(), nn.Dropout(0.0),
            CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        norm1, _, conv1, norm2, _, _, conv2 = self.residual
        h = conv1(x, cache, pre=norm1)
        h = conv2(h, cache, pre=norm2)
        return h.add_(self.shortcut(x))


class AttentionBlock(nn.Module):
    """Single-head self-attention over the ``H·W`` positions of each frame, plus the input."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMS_norm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        qkv = self.to_qkv(self.norm(frames(x))).flatten(2).transpose(1, 2)   # [B·T, H·W, 3C]
        q, k, v = qkv.unsqueeze(1).chunk(3, dim=-1)                          # [B·T, 1, H·W, C]
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        y = self.proj(y.transpose(1, 2).unflatten(2, (h, w)))
        return unframes(y, b) + x


class Resample(nn.Module):
    """2× spatial up- or down-sampling of every frame (``resample``), with ``…3d`` modes also 2×
    in time through ``time_conv``.

    ``upsample3d``: ``time_conv`` (C → 2C) splits channels into two frame phases, interleaved into
    ``2T`` frames; the first chunk (the first latent frame) is not doubled and does not enter the
    ``time_conv`` stream. ``downsample3d``: the first chunk's single frame passes through; later
    chunks are convolved with stride 2 after the previous chunk's last frame.
    """

    def __init__(self, dim: int, mode: str, out_dim: int | None = None):
        super().__init__()
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          nn.Conv2d(dim, out_dim or dim, 3, padding=1))
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        else:
            raise ValueError(f"unknown Resample mode {mode!r}")
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        b, c, t, h, w = x.shape
        if self.mode == "upsample3d":
            if self in cache:
                phases = self.time_conv(x, cache).unflatten(1, (2, c)).movedim(1, 3)  # [B,C,T,2,H,W]
                x = new_empty(x, (b, c, 2 * t, h, w))
                x.unflatten(2, (t, 2)).copy_(phases)
            cache[self] = True
        x = unframes(self.resample(frames(x)), b)
        if self.mode == "downsample3d":
            if self in cache:
                x = self.time_conv(x, cache)
            else:  # the first frame passes through and starts the time_conv history
                cache[self.time_conv] = x[:, :, -1:].clone()
            cache[self] = True
        return x


class AvgDown3D(nn.Module):
    """Parameter-free shortcut (Wan 2.2): space/time-to-channel by ``factor_t × factor_s²`` (the
    first chunk is front-padded with zero frames), then the mean over groups of channels."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int):
        super().__init__()
        self.out_dim, self.factor_t, self.factor_s = out_dim, factor_t, factor_s
        self.group_size = in_dim * factor_t * factor_s ** 2 // out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        x = F.pad(x, (0, 0, 0, 0, (ft - x.shape[2] % ft) % ft, 0))
        b, c, t, h, w = x.shape
        x = x.reshape(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(b, self.out_dim, self.group_size, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp3D(nn.Module):
    """Parameter-free shortcut (Wan 2.2): channel repeat, then channel-to-space/time by
    ``factor_t × factor_s²``; on the first chunk the first ``factor_t − 1`` frames are dropped."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int):
        super().__init__()
        self.out_dim, self.factor_t, self.factor_s = out_dim, factor_t, factor_s
        self.repeats = out_dim * factor_t * factor_s ** 2 // in_dim

    def forward(self, x: torch.Tensor, first_chunk: bool) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        b, _, t, h, w = x.shape
        src = x.repeat_interleave(self.repeats, dim=1)
        src = src.unflatten(1, (self.out_dim, ft, fs, fs)).permute(0, 1, 5, 2, 6, 3, 7, 4)
        out = new_empty(x, (b, self.out_dim, t * ft, h * fs, w * fs))
        out.view(b, self.out_dim, t, ft, h, fs, w, fs).copy_(src)
        return out[:, :, ft - 1:] if first_chunk else out


class DownBlock(nn.Module):
    """Wan 2.2 encoder stage: ``downsamples`` (ResidualBlocks [+ Resample]) + AvgDown3D shortcut."""

    def __init__(self, layers: list[nn.Module], avg_shortcut: AvgDown3D):
        super().__init__()
        self.downsamples = nn.Sequential(*layers)
        self.avg_shortcut = avg_shortcut

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        h = x
        for layer in self.downsamples:
            h = layer(h, cache)
        return h.add_(self.avg_shortcut(x))


class UpBlock(nn.Module):
    """Wan 2.2 decoder stage: ``upsamples`` (ResidualBlocks [+ Resample]) [+ DupUp3D shortcut]."""

    def __init__(self, layers: list[nn.Module], avg_shortcut: DupUp3D | None):
        super().__init__()
        self.upsamples = nn.Sequential(*layers)
        self.avg_shortcut = avg_shortcut

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        first_chunk = self not in cache
        cache[self] = True
        h = x
        for layer in self.upsamples:
            h = layer(h, cache)
        return h if self.avg_shortcut is None else h.add_(self.avg_shortcut(x, first_chunk))
